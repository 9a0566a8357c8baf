"""UUID helpers: generation, checking, and server/instance name lookup."""

import re
import uuid as _uuid

from sdcadm.errors import InvalidUUID

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_uuid():
    return str(_uuid.uuid4())


def is_uuid(value):
    return isinstance(value, str) and bool(_UUID_RE.match(value))


def check_uuid(value, what="UUID"):
    """Return ``value`` if it is a lower-case canonical UUID, else raise InvalidUUID."""
    if not is_uuid(value):
        raise InvalidUUID(
            f"{what} {value!r} is not a UUID",
            hint="expected the form 12345678-1234-1234-1234-123456789abc (lower case)",
        )
    return value

"""UUID and name helpers: generation and checking.

Every name that becomes part of a path (a service's restore-data directory,
a lock file) is checked against its pattern first: a name like
``sapi/../../victim`` is refused before any path is built from it."""

import re
import uuid as _uuid

from sdcadm.errors import InvalidName, InvalidUUID

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# As in the schemas of services and instances (schemas/service.json).
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


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


def is_name(value):
    return isinstance(value, str) and bool(_NAME_RE.match(value))


def check_name(value, what="service name"):
    """Return ``value`` if it is a service name (``[a-z][a-z0-9_-]*``, at most
    63 characters), else raise InvalidName."""
    if not is_name(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidName(f"{what} {shown} is not valid",
                          hint="a name is a lower-case letter followed by at most 62 letters, "
                               "digits, '-' or '_'")
    return value

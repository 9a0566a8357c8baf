"""``POST /v1/instances/stage``: what a restore is about to move here.

Body: ``{"instances": [<instance record as it will be once moved>, ...]}``.
The agent provisions them (image, zone, a seed from its restore data) without
starting any: the store still places them on their old server, and only the
move makes them this server's to start (plan.py). Anything wrong refuses the
whole request and changes nothing: a staged zone is only time saved.
"""

import json

from sdcadm.errors import RequestError, ValidationError
from sdcadm.model import Instance

MAX_STAGED = 1000
EXPECTED = ('expected {"instances": [instance, ...]}: the records as they will be once '
            'moved to this server')


def parse_stage_request(body, me):
    """[Instance] from the request body, each meant for server ``me``;
    RequestError (400) otherwise."""
    from sdcadm.schemas import problems

    try:
        doc = json.loads(body)
    except RecursionError:
        raise RequestError(400, "bad-request", "the request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "bad-request", f"the request body is not JSON: {e}; {EXPECTED}") from None
    items = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not 0 < len(items) <= MAX_STAGED or set(doc) != {"instances"}:
        raise RequestError(400, "bad-request",
                           f"invalid request: {EXPECTED} (1 to {MAX_STAGED} of them)")
    out = []
    for n, item in enumerate(items):
        found = problems("instance", item)
        if found:
            raise RequestError(400, "bad-request", f"instances[{n}] is not an instance record: "
                               + "; ".join(found))
        try:
            inst = Instance.from_dict(item)
        except (ValidationError, TypeError, ValueError) as e:
            raise RequestError(400, "bad-request", f"instances[{n}]: {e}") from None
        if inst.server_uuid != me:
            raise RequestError(400, "not-this-server",
                               f"instances[{n}] ({inst.alias}) is meant for server "
                               f"{inst.server_uuid}, not this one ({me}): stage it there")
        out.append(inst)
    return out

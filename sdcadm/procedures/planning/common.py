"""Decisions shared by restore and migrate: which services, which alias, dead or not."""

import re

from sdcadm.errors import SdcadmError

# A server is declared dead only when its heartbeat has been silent this much
# longer than the heartbeat timeout (DESIGN section 5).
DEAD_MARGIN_FACTOR = 2.0


class NotViable(SdcadmError):
    """The procedure cannot be carried out as asked."""


def next_free_alias(service, taken):
    """``<service><n>`` with the lowest n not in ``taken``."""
    used = set()
    pattern = re.compile(rf"^{re.escape(service)}(\d+)$")
    for alias in taken:
        m = pattern.match(alias)
        if m:
            used.add(int(m.group(1)))
    n = 0
    while n in used:
        n += 1
    return f"{service}{n}"


def is_dead(server, now, heartbeat_timeout, margin_factor=DEAD_MARGIN_FACTOR):
    """Heartbeat expired plus a margin (a fenced server is dead by decree)."""
    if server.fenced:
        return True
    return now - server.last_heartbeat > heartbeat_timeout * (1 + margin_factor)


def heartbeat_silent(server, now, heartbeat_timeout):
    """No heartbeat for longer than the timeout: its agent is gone or cut off
    (no margin: this is about what its agent does now, not about declaring it dead)."""
    return now - server.last_heartbeat > heartbeat_timeout


def select_services(catalog, requested, all_flag, present):
    """The services to act on, in startup order. ``present``: services that have
    instances where we look. Unknown names raise NotFound."""
    if all_flag and requested:
        raise NotViable("give either --all or service names, not both")
    if not all_flag and not requested:
        raise NotViable("name the services to act on, or pass --all")
    for name in requested:
        catalog.get(name)
    wanted = set(present) if all_flag else set(requested)
    return [n for n in catalog.startup_order() if n in wanted]


def ip_owned_by(allocations, owner, besides=None):
    """The lowest address of ``allocations`` ({ip: owner}) owned by ``owner``,
    other than ``besides``; None when it owns none. A step that allocated an
    address before it was killed finds it again with this, instead of leaking it."""
    return next((ip for ip, o in sorted(allocations.items()) if o == owner and ip != besides),
                None)

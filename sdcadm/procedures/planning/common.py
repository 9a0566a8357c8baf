"""Decisions shared by restore and migrate: which services, which alias, dead or not."""

import re

from sdcadm.errors import SdcadmError

# The dead margin, derived (docs/recovery.md, "Instance leases and the dead
# margin"). After its last heartbeat a server's singletons are gone, or at
# least can no longer acknowledge anything, once
#   * the instance lease ran out: its agent renews it only from a heartbeat
#     and an ownership read that both succeeded, so it ends at the latest one
#     heartbeat timeout after the last heartbeat started;
#   * the agent noticed (its lease keeper wakes at the deadline; the
#     supervisor pass, every agent.reconcile_interval, is the fallback) and
#   * the SIGKILL sent at the lease's end took effect (KILL_GRACE);
# all of it stretched by SAFETY_FACTOR for clock rate error between the
# machines, late scheduling under load and heartbeat stamping.
SAFETY_FACTOR = 1.5
KILL_GRACE = 0.5
DEFAULT_NOTICE = 1.0     # agent.reconcile_interval's default


def dead_after(lease, notice=DEFAULT_NOTICE, kill_grace=KILL_GRACE, safety=SAFETY_FACTOR):
    """Seconds after a server's last heartbeat from which another headnode may
    take its singletons for gone: ``(lease + notice + kill_grace) * safety``.
    ``lease``: agent.heartbeat_timeout; ``notice``: agent.reconcile_interval."""
    return (lease + notice + kill_grace) * safety


class NotViable(SdcadmError):
    """The procedure cannot be carried out as asked."""


def refuse_all(problems):
    """Raise the refusals ``problems`` (NotViable each, one per thing asked
    for) together: one as it is, several as one naming them all. Nothing
    when there are none."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise NotViable("\n".join(e.message for e in problems),
                        hint=next((e.hint for e in problems if e.hint), None))


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


def is_dead(server, now, heartbeat_timeout, notice=DEFAULT_NOTICE):
    """Heartbeat silent for ``dead_after()`` (a fenced server is dead by decree)."""
    if server.fenced:
        return True
    return now - server.last_heartbeat > dead_after(heartbeat_timeout, notice)


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


def servers_named(refs, servers, what=None):
    """{uuid: Server} of the servers ``refs`` name (hostname or UUID), each
    once however often named, in the order given; NotFound for an unknown one."""
    from sdcadm.errors import NotFound

    by_name = {s.hostname: s for s in servers} | {s.uuid: s for s in servers}
    out = {}
    for ref in refs:
        if ref not in by_name:
            given = f" (given to {what})" if what else ""
            raise NotFound(f"no server {ref!r}{given}", hint="see `sdcadm server ls`")
        out.setdefault(by_name[ref].uuid, by_name[ref])
    return out


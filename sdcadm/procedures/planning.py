"""Pure planning for `service migrate` and `service restore`.

Plain functions over plain data (model records, the catalog); the procedures
gather the facts and carry out what these decide. Unit-tested without a store.
"""

import re
from dataclasses import dataclass

from sdcadm.errors import NotFound, SdcadmError
from sdcadm.model import SERVER_RUNNING, status_of

# A server is declared dead only when its heartbeat has been silent this much
# longer than the heartbeat timeout (DESIGN section 5).
DEAD_MARGIN_FACTOR = 2.0


class NotViable(SdcadmError):
    """The procedure cannot be carried out as asked."""


@dataclass(frozen=True)
class MigrateItem:
    service: str
    old: object            # Instance on SRC
    new_alias: str | None  # None when skipped
    stateful: bool
    skip_reason: str | None = None


@dataclass(frozen=True)
class RestoreItem:
    service: str
    instance: object       # Instance on the dead server
    reuse_ip: bool         # the old server is fenced: its address can be taken over


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


def plan_migrate(catalog, src_instances, dst_instances, all_instances, services):
    """What `service migrate SRC DST` does for each of ``services`` (startup order).

    HA services are not doubled on DST; ``migrate.policy: skip`` services
    (nat) are left alone; a service with nothing on SRC is reported.
    """
    taken = {i.alias for i in all_instances}
    on_dst = {i.service for i in dst_instances}
    items = []
    for name in services:
        spec = catalog.get(name)
        olds = [i for i in src_instances if i.service == name]
        for old in olds:
            if spec.migrate_policy == "skip":
                items.append(MigrateItem(name, old, None, spec.delegate_dataset,
                                         f"{name} is not migrated (catalog migrate policy: skip)"))
            elif spec.ha and name in on_dst:
                items.append(MigrateItem(
                    name, old, None, spec.delegate_dataset,
                    f"{name} is HA and already has an instance on the destination; "
                    "it is left in place (remove it with care, or add a peer elsewhere)"))
            else:
                alias = next_free_alias(name, taken)
                taken.add(alias)
                items.append(MigrateItem(name, old, alias, spec.delegate_dataset))
    return items


def plan_restore(catalog, dead_servers, instances, services, here_uuid):
    """Instances of ``services`` that lived on ``dead_servers``, in startup order.

    HA services are not restored: they keep running on their peers (RFD 67:
    re-establish the third peer afterwards with post-setup).
    """
    dead = {s.uuid: s for s in dead_servers}
    if here_uuid in dead:
        raise NotViable("this server is one of the dead servers; run restore on a surviving headnode")
    order = {n: k for k, n in enumerate(catalog.startup_order())}
    items = []
    for inst in instances:
        if inst.server_uuid not in dead or inst.service not in services:
            continue
        if catalog.get(inst.service).ha:
            continue
        items.append(RestoreItem(inst.service, inst, reuse_ip=dead[inst.server_uuid].fenced))
    return sorted(items, key=lambda it: (order[it.service], it.instance.alias))


def check_restorable_servers(named, servers, now, heartbeat_timeout):
    """Servers whose instances may be restored: named with --dead (fenced by the
    procedure) or silent past the margin. A live server not named is refused."""
    by_name = {s.hostname: s for s in servers} | {s.uuid: s for s in servers}
    chosen = []
    for ref in named:
        if ref not in by_name:
            raise NotFound(f"no server {ref!r}", hint="see `sdcadm server ls`")
        chosen.append(by_name[ref])
    if named:
        return chosen
    dead = [s for s in servers if is_dead(s, now, heartbeat_timeout)]
    if not dead:
        running = [s.hostname for s in servers if status_of(s, now, heartbeat_timeout) == SERVER_RUNNING]
        raise NotViable(
            "no server is dead: every server's heartbeat is recent "
            f"({', '.join(running)} running)",
            hint="if a server is truly lost, name it with --dead SERVER (it will be fenced)")
    return dead


def restore_levels(catalog, services):
    """Group ``services`` into levels that can be brought up together: a
    service's level is one more than the highest level of the services it
    depends on *among those being restored* (others are up already)."""
    wanted = set(services)
    level = {}
    for name in catalog.startup_order():
        if name in wanted:
            deps = [level[d] for d in catalog.get(name).depends_on if d in level]
            level[name] = 1 + max(deps, default=-1)
    out = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for name in catalog.startup_order():
        if name in level:
            out[level[name]].append(name)
    return out

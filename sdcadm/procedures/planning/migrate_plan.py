"""What `service migrate SRC DST` does, decided from plain facts.

``MigrateServices.prepare`` finds the two servers and the instances in the
store, reads the clock, and asks ``plan_migration``; its steps build the new
instance with ``migrated_instance``.
"""

import uuid as _uuid
from dataclasses import dataclass

from sdcadm.model import SERVER_RUNNING, Instance, status_of
from sdcadm.procedures.planning.common import NotViable, next_free_alias, select_services

_NS = _uuid.UUID("0b8f7d4e-3c1a-4f6e-9d2b-7a5c8e1f0d93")

# Params of the old instance that describe its own life, not the service's:
# the new one starts without them.
OWN_PARAMS = ("desired_state", "seed_from", "restored_from")


def new_uuid_for(old_uuid, dst_uuid):
    """The migrated instance's UUID: stable, so a re-run finds it."""
    return str(_uuid.uuid5(_NS, f"{old_uuid}->{dst_uuid}"))


@dataclass(frozen=True)
class MigrateFacts:
    src: object               # the Server evacuated
    dst: object               # the headnode receiving
    instances: list           # every Instance of the store
    now: float
    heartbeat_timeout: float


@dataclass(frozen=True)
class MigrateItem:
    service: str
    old: object            # Instance on SRC
    new_alias: str | None  # None when skipped
    stateful: bool
    skip_reason: str | None = None


@dataclass(frozen=True)
class InstanceMove:
    """One instance to move: the old one on SRC, the new one to make on DST."""

    service: str
    old: Instance
    new_alias: str
    new_uuid: str
    stateful: bool         # its delegate dataset is copied (stopped, final sync, seeded)
    # The old one is stopped before the new one is made (the service is down
    # meanwhile); else the new one is made, healthy, before the old one goes.
    stop_first: bool = False


def migrate_method(spec):
    """How an instance of catalog service ``spec`` moves: (stop_first, stateful).

    * singleton: never two at once (DESIGN section 5), so stop the old one,
      then start the new one -- for a stateful one with the final incremental
      sync in between (sync while it runs, stop, final sync, seeded start);
    * HA: its peers hold the data and it may run twice: make before break,
      nothing copied;
    * not a singleton, no dataset: make before break;
    * not a singleton, not HA, with a dataset: its data must not change after
      the final copy, so it stops first too.
    """
    stateful = spec.delegate_dataset and not spec.ha
    return spec.singleton or stateful, stateful


@dataclass(frozen=True)
class MigratePlan:
    src: object
    dst: object
    moves: list            # InstanceMove, in startup order
    skipped: list          # "<alias>: <why>"
    nothing_to_do: str | None = None


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


def check_migrate_servers(src, dst, now, heartbeat_timeout):
    """Both servers distinct and running, the destination a headnode."""
    if src.uuid == dst.uuid:
        raise NotViable("source and destination are the same server")
    for role, server in (("source", src), ("destination", dst)):
        if server.fenced or status_of(server, now, heartbeat_timeout) != SERVER_RUNNING:
            raise NotViable(f"the {role} {server.hostname} is not running",
                            hint="migrate needs both servers up; to rebuild the services of a "
                                 "dead server use `sdcadm service restore`")
    if not dst.headnode:
        raise NotViable(f"the destination {dst.hostname} is not a headnode",
                        hint="core services live on headnodes; convert it first "
                             "(`sdcadm server headnode-setup`)")


def plan_migration(catalog, services, all_services, facts):
    """The MigratePlan for ``services`` (names) or ``all_services``."""
    src, dst = facts.src, facts.dst
    check_migrate_servers(src, dst, facts.now, facts.heartbeat_timeout)
    on_src = [i for i in facts.instances if i.server_uuid == src.uuid]
    on_dst = [i for i in facts.instances if i.server_uuid == dst.uuid]
    chosen = select_services(catalog, services, all_services, {i.service for i in on_src})
    # An HA service counts as present on DST only through a peer we did not
    # make: the instance an interrupted run made there is not a reason to skip.
    ours = {new_uuid_for(o.uuid, dst.uuid) for o in on_src}
    peers = [i for i in on_dst if i.uuid not in ours]
    moves, skipped = [], []
    for item in plan_migrate(catalog, on_src, peers, facts.instances, chosen):
        if item.skip_reason:
            skipped.append(f"{item.old.alias}: {item.skip_reason}")
            continue
        new_uuid = new_uuid_for(item.old.uuid, dst.uuid)
        # Resumed: the new instance exists already and keeps the alias it got.
        alias = next((i.alias for i in on_dst if i.uuid == new_uuid), item.new_alias)
        stop_first, stateful = migrate_method(catalog.get(item.service))
        moves.append(InstanceMove(item.service, item.old, alias, new_uuid, stateful, stop_first))
    nothing = None
    if not moves:
        nothing = (f"nothing to migrate from {src.hostname}"
                   + (": " + "; ".join(skipped) if skipped else ""))
    return MigratePlan(src, dst, moves, skipped, nothing)


def migrate_summary(plan):
    """The lines shown before confirmation: per move how, and which services
    will be down for a while (the operator may want to warn their users)."""
    lines = []
    for m in plan.moves:
        if m.stateful:
            how = "sync its dataset, stop it, final sync, start the copy (down meanwhile)"
        elif m.stop_first:
            how = "stop it, then start the new one (singleton: down meanwhile)"
        else:
            how = "start the new one, then destroy the old one (no downtime)"
        lines.append(f"migrate {m.old.alias} ({m.service}) from {plan.src.hostname} to "
                     f"{plan.dst.hostname} as {m.new_alias}: {how}")
    down = [m.service for m in plan.moves if m.stop_first]
    if down:
        lines.append(f"downtime: {', '.join(down)} will not answer from the stop of the old "
                     "instance until the new one answers (never two at once)")
    return lines + [f"skip {s}" for s in plan.skipped]


def migrated_instance(move, old, dst_uuid, ip):
    """The new instance on DST: the old one's image, port and params (``old``:
    the old instance now, None once destroyed), seeded from DST's copy of the
    old one's dataset when stateful."""
    params = {k: v for k, v in (old.params if old else {}).items() if k not in OWN_PARAMS}
    if move.stateful:
        params["seed_from"] = {"instance": move.old.uuid, "service": move.service}
    return Instance(uuid=move.new_uuid, alias=move.new_alias, service=move.service,
                    server_uuid=dst_uuid, image=move.old.image, admin_ip=ip, port=move.old.port,
                    delegate_dataset=move.old.delegate_dataset, params=params)

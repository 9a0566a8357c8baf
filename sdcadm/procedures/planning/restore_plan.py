"""What `service restore` does, decided from plain facts.

``RestoreServices.prepare`` gathers the facts (this server, the servers and
instances of the store, the clock, this headnode's restore data) and asks, in
two rounds because the restore data to read depends on the first answer:

    scope = restore_scope(catalog, request, facts)       # which servers, services, instances
    copies = {uuid: CopyFacts(...) for each scope.items} # read from the restore data
    plan = plan_restore_run(catalog, scope, copies, now) # targets, levels, or why not

Its steps carry the plan out; the small decisions they make on the way
(params of a moved instance, the recovery address, whether a fenced server
still runs something) are here too.
"""

from dataclasses import dataclass, replace

from sdcadm.errors import RestoreDataBroken
from sdcadm.model import SERVER_RUNNING, status_of
from sdcadm.procedures.planning.common import NotViable, select_services, servers_named
from sdcadm.procedures.planning.migrate_plan import new_uuid_for

RESTORE_DATA_HINT = ("run `sdcadm restore-data ls` and `sdcadm restore-data verify` here, or run "
                     "the restore on another headnode")


@dataclass(frozen=True)
class RestoreRequest:
    """The command line: service names or ``--all``, servers named with ``--dead``,
    and those of them the operator states are powered off (``--confirm-powered-off``)."""

    services: tuple = ()
    all_services: bool = False
    dead: tuple = ()
    confirmed_off: tuple = ()


@dataclass(frozen=True)
class RestoreFacts:
    me: object                # the Server restore runs on
    servers: list             # every Server of the store
    instances: list           # every Instance of the store
    now: float
    heartbeat_timeout: float


@dataclass(frozen=True)
class RestoreItem:
    service: str
    instance: object       # Instance on the dead server
    reuse_ip: bool         # the old server is fenced: its address can be taken over


@dataclass(frozen=True)
class FinishMigrate:
    """An instance of a dead server that an interrupted `service migrate` had
    already replaced: the replacement is kept, the old one deleted, not restored."""

    service: str
    old: object            # the Instance on the dead server
    replacement: object    # the Instance the migrate made (on another server)


@dataclass(frozen=True)
class RestoreScope:
    dead: list             # the Servers whose instances are restored (as the store has them)
    to_fence: list         # the Servers named with --dead: fenced (again) before anything moves
    services: list         # the services restored, in startup order
    items: list            # RestoreItem per instance still on a dead server
    resumed: list          # Instances an earlier run already moved here (of those services)
    finish: list = ()      # FinishMigrate: interrupted migrates, finished instead of restored


@dataclass(frozen=True)
class CopyFacts:
    """What this headnode's restore data holds of one instance."""

    as_of: float | None = None      # time of the last good sync (what a restore gets)
    status: str = "ok"              # of the last sync attempt
    error: str | None = None
    snapshot: str | None = None
    has_dataset: bool = False
    problem: str | None = None      # the restore data of it could not be read: why
    broken: tuple = ()              # what does not match its manifest (file by file)


@dataclass(frozen=True)
class InstanceToRestore:
    service: str
    instance: object          # the Instance as it is in the store now
    dead: object              # the Server it lived on
    copy: CopyFacts | None    # None: moved here already
    reuse_ip: bool
    moved: bool = False       # already moved here by an earlier run


@dataclass(frozen=True)
class RestorePlan:
    me: object
    to_fence: list
    targets: list             # InstanceToRestore, by level then alias
    levels: list              # [[service, ...], ...]: each level comes up together
    now: float                # when planned: the ages the summary shows are as of then
    nothing_to_do: str | None = None
    refused: tuple = ()       # RefusedCopy: instances whose copy here is broken, not restored
    finish: tuple = ()        # FinishMigrate: replaced by an interrupted migrate


@dataclass(frozen=True)
class RefusedCopy:
    """An instance left unrestored because its copy here does not match its manifest."""

    service: str
    alias: str
    problems: tuple


def check_restore_host(me):
    """Restore runs on a headnode: only headnodes hold restore data."""
    if not me.headnode:
        raise NotViable(f"{me.hostname} is not a headnode: restore runs on a headnode, which "
                        "holds restore data", hint="ssh to a surviving headnode and run it there")


def check_restorable_servers(named, servers, now, heartbeat_timeout):
    """Servers whose instances may be restored: those named with --dead (fenced
    by the procedure, each once however often named), else those fenced
    already (by an earlier restore). A server that is merely silent is never
    acted on: a hung agent or a frozen server is silent too, and its
    singletons answer again when it wakes. It is listed and refused."""
    if named:
        return list(servers_named(named, servers).values())
    silent = [s for s in servers
              if not s.fenced and status_of(s, now, heartbeat_timeout) != SERVER_RUNNING]
    if silent:
        listed = ", ".join(f"{s.hostname} (no heartbeat for {now - s.last_heartbeat:.0f}s)"
                           for s in silent)
        raise NotViable(
            f"not restoring from a server that is only silent: {listed}. Silence is no proof "
            "that nothing runs there (a hung agent or a frozen server is silent too, and its "
            "instances answer again when it wakes)",
            hint="fence it: run this again with " + " ".join(f"--dead {s.hostname}" for s in silent)
                 + " (its fence command powers it off first), or wait for it to come back")
    dead = [s for s in servers if s.fenced]
    if not dead:
        running = [s.hostname for s in servers if status_of(s, now, heartbeat_timeout) == SERVER_RUNNING]
        raise NotViable(
            "no server is dead: every server's heartbeat is recent "
            f"({', '.join(running)} running)",
            hint="if a server is truly lost, name it with --dead SERVER (it will be fenced)")
    return dead


def replacement_of(inst, instances):
    """The instance a `service migrate` made to replace ``inst`` (on any server;
    found by the UUID migrate derives from the old one and its destination),
    or None."""
    return next((o for o in instances if o.uuid != inst.uuid and o.service == inst.service
                 and o.uuid == new_uuid_for(inst.uuid, o.server_uuid)), None)


def interrupted_migrates(catalog, dead_servers, instances, services):
    """FinishMigrate per non-HA instance of ``services`` on ``dead_servers``
    that a migrate had already replaced (alive, or created and pending)."""
    found = [FinishMigrate(inst.service, inst, new)
             for inst, new in _lost(catalog, dead_servers, instances, services) if new]
    return sorted(found, key=lambda f: f.old.alias)


def _lost(catalog, dead_servers, instances, services):
    """(Instance, its live or pending replacement or None) per instance of a
    non-HA service of ``services`` that lived on ``dead_servers``."""
    dead = {s.uuid for s in dead_servers}
    for inst in instances:
        if inst.server_uuid not in dead or inst.service not in services:
            continue
        if catalog.get(inst.service).ha:
            continue
        new = replacement_of(inst, instances)
        yield inst, (new if new is not None and new.server_uuid not in dead else None)


def plan_restore(catalog, dead_servers, instances, services, here_uuid):
    """Instances of ``services`` that lived on ``dead_servers``, in startup order.

    HA services are not restored: they keep running on their peers (RFD 67:
    re-establish the third peer afterwards with post-setup).
    """
    dead = {s.uuid: s for s in dead_servers}
    if here_uuid in dead:
        raise NotViable("this server is one of the dead servers; run restore on a surviving headnode")
    order = {n: k for k, n in enumerate(catalog.startup_order())}
    # An instance a migrate replaced is not restored: it would run twice.
    items = [RestoreItem(inst.service, inst, reuse_ip=dead[inst.server_uuid].fenced)
             for inst, new in _lost(catalog, dead_servers, instances, services) if new is None]
    return sorted(items, key=lambda it: (order[it.service], it.instance.alias))


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


def restore_scope(catalog, request, facts):
    """The servers, services and instances a restore is about (RestoreScope)."""
    me = facts.me
    dead = check_restorable_servers(request.dead, facts.servers, facts.now,
                                    facts.heartbeat_timeout)
    if any(s.uuid == me.uuid for s in dead):
        raise NotViable(f"{me.hostname} is this server: restore runs on a surviving "
                        "headnode, not on the dead one")
    dead_uuids = {s.uuid for s in dead}
    # Fenced already (an earlier, interrupted run) still gets the step: it
    # waits until nothing runs there before any address is taken over.
    to_fence = list(dead) if request.dead else []
    resumed = [i for i in facts.instances
               if i.server_uuid == me.uuid and i.params.get("restored_from") in dead_uuids]
    present = ({i.service for i in facts.instances if i.server_uuid in dead_uuids}
               | {i.service for i in resumed})
    services = select_services(catalog, request.services, request.all_services, present)
    # What the servers will be once the fence step ran: a fenced server's
    # addresses can be taken over, a merely silent one's cannot.
    after_fencing = [replace(s, fenced=s.fenced or bool(request.dead)) for s in dead]
    items = plan_restore(catalog, after_fencing, facts.instances, set(services), me.uuid)
    finish = interrupted_migrates(catalog, dead, facts.instances, set(services))
    return RestoreScope(dead=dead, to_fence=to_fence, services=services, items=items,
                        resumed=[i for i in resumed if i.service in services], finish=finish)


def copy_problem(instance, copy):
    """Why ``copy`` cannot rebuild ``instance``, or None."""
    if copy is None:
        return f"this headnode has no restore data of instance {instance.uuid}"
    if copy.problem:
        return copy.problem
    if copy.as_of is None:
        return f"this headnode never completed a sync of it ({copy.status}: {copy.error})"
    if instance.delegate_dataset and not copy.has_dataset:
        return "no copy of its delegate dataset here"
    return None


def plan_restore_run(catalog, scope, copies, me, now):
    """The RestorePlan: ``copies`` is {instance uuid: CopyFacts} of the scope's
    items. Every instance that cannot be rebuilt from here is reported at once
    (NotViable) before anything changes."""
    dead = {s.uuid: s for s in scope.dead}
    problems, targets, refused = [], [], []
    for item in scope.items:
        problem = copy_problem(item.instance, copies.get(item.instance.uuid))
        if problem:
            problems.append(f"{item.instance.alias}: {problem}")
            continue
        if copies[item.instance.uuid].broken:
            # The others are restored all the same (a DC without sapi beats a DC
            # without anything); the procedure then ends failed, naming these.
            refused.append(RefusedCopy(item.service, item.instance.alias,
                                       tuple(copies[item.instance.uuid].broken)))
            continue
        targets.append(InstanceToRestore(item.service, item.instance,
                                         dead[item.instance.server_uuid],
                                         copies[item.instance.uuid], item.reuse_ip))
    for inst in scope.resumed:
        targets.append(InstanceToRestore(inst.service, inst, dead[inst.params["restored_from"]],
                                         None, False, moved=True))
    if problems:
        raise NotViable("cannot restore from this headnode's restore data:\n"
                        + "\n".join(f"  - {p}" for p in problems), hint=RESTORE_DATA_HINT)
    if refused and not targets:
        raise NotViable(refused_error(refused).message, hint=REFUSED_HINT)
    nothing = None
    if not targets and not scope.finish and all(s.fenced for s in scope.to_fence):
        names = ", ".join(s.hostname for s in scope.dead)
        nothing = (f"no instance of {', '.join(scope.services) or 'any service'} "
                   f"to restore from {names}")
    levels = restore_levels(catalog, [t.service for t in targets])
    order = {name: i for i, level in enumerate(levels) for name in level}
    targets.sort(key=lambda t: (order[t.service], t.instance.alias))
    return RestorePlan(me, scope.to_fence, targets, levels, now, nothing, tuple(refused),
                       tuple(scope.finish))


REFUSED_HINT = ("re-sync with `sdcadm service sync-restore-data SERVICE` on a healthy source, or "
                "restore from another headnode; `sdcadm restore-data verify SERVICE` lists every "
                "problem")


def refused_error(refused):
    """RestoreDataBroken naming every refused instance and its first problems."""
    lines = []
    for r in refused:
        shown = list(r.problems[:5]) + ([f"and {len(r.problems) - 5} more"]
                                        if len(r.problems) > 5 else [])
        lines.append(f"  - {r.alias} ({r.service}): " + "; ".join(shown))
    names = " ".join(sorted({r.service for r in refused}))
    return RestoreDataBroken(
        "not restored: the restore data of this headnode does not match its manifest for:\n"
        + "\n".join(lines),
        hint=REFUSED_HINT.replace("SERVICE", names))


def restore_summary(plan):
    """The lines shown before confirmation (the fence lines come from
    ``fence_summary``: how a server is fenced is the procedure's configuration)."""
    lines = [f"finish the interrupted migrate of {f.old.alias} ({f.service}): keep its "
             f"replacement {f.replacement.alias}, made by `service migrate`, and delete "
             f"{f.old.alias} instead of restoring it (never two at once)" for f in plan.finish]
    for t in plan.targets:
        if t.moved:
            lines.append(f"finish restoring {t.instance.alias} ({t.service}) on "
                         f"{plan.me.hostname}: wait until healthy")
            continue
        data = (f"dataset copy {t.copy.snapshot} as of {plan.now - t.copy.as_of:.0f}s ago"
                if t.copy.has_dataset else "no delegate dataset")
        ip = (f"keeping IP {t.instance.admin_ip} ({t.dead.hostname} is fenced)" if t.reuse_ip
              else "with a new recovery IP on the admin network")
        stopped = (" (stopped by an interrupted migrate that made no replacement: it comes "
                   "back running)" if t.instance.params.get("desired_state") == "stopped" else "")
        lines.append(f"restore {t.instance.alias} ({t.service}) from {t.dead.hostname} onto "
                     f"{plan.me.hostname}: {data}, {ip}{stopped}")
    return lines + refused_summary(plan)


def refused_summary(plan):
    """The summary lines of the instances a restore leaves out (broken copies)."""
    return [f"NOT restoring {r.alias} ({r.service}): its restore data here does not match its "
            f"manifest ({r.problems[0]}{'; ...' if len(r.problems) > 1 else ''}); "
            "the restore will end failed" for r in plan.refused]


def level_targets(plan, level):
    """The targets of the services of ``level`` (a list of names), in plan order."""
    return [t for t in plan.targets if t.service in level]


def restored_params(inst):
    """``inst``'s params once moved: seeded from the receiving headnode's copy
    of itself, marked with the server it came from (a re-run recognises its own
    work by it), and no longer asked to stay stopped.

    Only `service migrate` sets ``desired_state: stopped``, and only on an
    instance it is about to replace. An instance restored is one whose
    replacement was never made (``interrupted_migrates`` finishes the others
    instead): its stop was the first half of a move that restoring it here
    completes, so it comes back running; a stopped singleton would be a lost
    service.
    """
    params = {k: v for k, v in inst.params.items() if k != "desired_state"}
    params.update(seed_from={"instance": inst.uuid, "service": inst.service},
                  restored_from=inst.server_uuid)
    return params


def addresses_to_take_over(plan, server_uuid):
    """The /ping URLs of the instances of ``server_uuid`` restored at their old
    address: while any answers, the old process still holds it."""
    return ([t.instance.url + "/ping" for t in plan.targets
             if t.dead.uuid == server_uuid and t.reuse_ip and not t.moved]
            + [f.old.url + "/ping" for f in plan.finish if f.old.server_uuid == server_uuid])


def level_parts(started, moved, spawned, healthy):
    """Where a dependency level's time went, for the report (one wall clock:
    the restore runs on the server its instances start on). ``started``: the
    level's start; ``moved``: its move committed; ``spawned``: the process
    start the agent reports for each instance moved (None: unknown);
    ``healthy``: when the last answered. ``move_s`` is the compare-and-swap;
    ``agent_s`` the move until the agent started the last process (its pass,
    and a provisioning that was not staged ahead); ``answer_s`` that start
    until the last first answer: a process start and a health probe, the
    floor, paid side by side by the whole level."""
    parts = {"move_s": round(moved - started, 3)}
    if spawned and all(s is not None and s >= moved for s in spawned):
        last = max(spawned)
        parts.update(agent_s=round(last - moved, 3), answer_s=round(max(0.0, healthy - last), 3))
    return parts


def restored_result(target, inst, level_s, rto_s, now):
    """The result recorded for one restored instance (RTO, and RPO: the age of
    the data it came back with)."""
    copy = target.copy
    return {
        "service": target.service, "instance": inst.uuid, "ip": inst.admin_ip,
        "from": target.dead.hostname, "level_s": round(level_s, 3), "rto_s": round(rto_s, 3),
        "rpo_s": round(now - copy.as_of, 3) if copy else None,
        "data_as_of": copy.as_of if copy else None,
        "snapshot": copy.snapshot if copy else None,
    }

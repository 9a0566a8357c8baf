"""Reconcile planning: what the supervisor should do, as a pure function.

The supervisor gathers facts (the instances the store assigns to this server,
what it knows locally, where the missing ones went) and asks ``plan()`` for a
list of actions; ``state_updates()`` then says which states to write back.
Neither touches a file, a process or the store, so both are unit-tested with
plain data.
"""

import json
from dataclasses import dataclass

from sdcadm.model import Instance

MISSING = object()


@dataclass(frozen=True)
class LocalInstance:
    """What the agent knows about one instance on this server."""

    uuid: str
    generation: int = 0
    # runtime_key() of the provisioned payload; None when not (fully) provisioned
    spec: tuple | None = None
    alive: bool = False
    # alive and our own child (False: a stale process left by a previous agent)
    child: bool = False
    state: str = "provisioning"
    # backoff: do not provision or start before this time
    not_before: float = 0.0
    # provisioned ahead of a move here (a restore's next level), never started:
    # left alone until then while the store still places it elsewhere, destroyed after
    staged_until: float | None = None


@dataclass(frozen=True)
class Provision:
    """Install the image and lay out zones/<uuid> (stopping the process first)."""

    instance: Instance


@dataclass(frozen=True)
class Start:
    """Start the instance's process; ``replace_stale``: stop a previous agent's first."""

    instance: Instance
    replace_stale: bool = False


@dataclass(frozen=True)
class Stop:
    """The store wants the instance stopped (desired_state): stop it, keep its zone."""

    instance: Instance


@dataclass(frozen=True)
class StopAll:
    """Stop these instances all at once (SIGTERM to all, then SIGKILL to the
    survivors), not one after the other: one that ignores SIGTERM must not
    make the others wait (fenced server, singleton leases ending)."""

    instances: tuple
    reason: str


@dataclass(frozen=True)
class RecordGeneration:
    """Same runtime, newer generation: rewrite instance.json, keep running."""

    instance: Instance


@dataclass(frozen=True)
class Destroy:
    """The instance is gone from the store: stop it and remove zones/<uuid>."""

    uuid: str


@dataclass(frozen=True)
class Depose:
    """The instance now belongs to another server: stop it, keep its zone aside."""

    uuid: str
    owner: str
    generation: int


@dataclass(frozen=True)
class SetState:
    """Write the instance's state to the store."""

    instance: Instance
    state: str


def runtime_key(instance):
    """What, when it changes, needs the instance re-provisioned and restarted.

    ``params.desired_state`` is left out: stopping or starting an instance is
    not a reason to re-provision it.
    """
    if isinstance(instance, dict):
        instance = Instance.from_dict(instance)
    params = {k: v for k, v in instance.params.items() if k != DESIRED}
    return (instance.alias, instance.service, instance.image, instance.admin_ip,
            instance.port, bool(instance.delegate_dataset),
            json.dumps(params, sort_keys=True))


DESIRED = "desired_state"


def wants_stopped(instance):
    return instance.params.get(DESIRED) == "stopped"


def plan(desired, local, me, *, now, elsewhere=None, may_start=True, fenced=False,
         lease_lost=False, lease_held=True, singletons=frozenset()):
    """Actions that bring this server to the store's view.

    desired:   Instances the store assigns to ``me`` (or the cached copy).
    local:     {uuid: LocalInstance} for every instance this server knows of.
    elsewhere: {uuid: Instance or None} for local uuids not in ``desired``,
               as the store has them now (None: deleted). A uuid left out is
               unknown (store unreachable) and is left alone.
    may_start: False while ownership is not confirmed (store not reached yet,
               lease expired, server fenced): nothing is provisioned or started.
    fenced:    the store says this server is fenced (declared dead): everything
               it still runs is stopped, zones kept, until it is unfenced.
    lease_lost: ownership was confirmed once but not for longer than the lease
               (the store is unreachable): instances of ``singletons`` are
               stopped, because past the dead-server margin another headnode
               may restore them; they start again when the store answers.
    lease_held: the instance lease is held and not about to end: without it
               no singleton is provisioned or started.
    Instances to stop because of ``fenced`` or ``lease_lost`` come as one
    ``StopAll``, first.
    """
    elsewhere = {} if elsewhere is None else elsewhere
    mine = {d.uuid: d for d in desired if d.server_uuid == me}
    first, then, stop_all = [], [], []
    for uuid in sorted(set(local) - set(mine)):
        where = elsewhere.get(uuid, MISSING)
        if where is MISSING:
            continue
        if where is None:
            first.append(Destroy(uuid))
        elif local[uuid].staged_until is not None and not local[uuid].alive:
            if now >= local[uuid].staged_until:  # the move never came; it never ran here
                first.append(Destroy(uuid))
        elif where.server_uuid != me:
            first.append(Depose(uuid, where.server_uuid, where.generation))
    for d in desired:
        if d.uuid not in mine:
            continue
        here = local.get(d.uuid)
        singleton = d.service in singletons
        if fenced or (lease_lost and singleton):
            if here is not None and (here.alive or here.state != "stopped"):
                stop_all.append(d)
            continue
        then += _plan_one(d, here, now, may_start and (lease_held or not singleton))
    if stop_all:
        first.insert(0, StopAll(tuple(stop_all), "fenced" if fenced else "lease-lost"))
    return first + then


def _plan_one(d, here, now, may_start):
    stopped = wants_stopped(d)
    if here is None or here.spec is None or here.spec != runtime_key(d):
        if may_start and (here is None or now >= here.not_before):
            return [Provision(d)] if stopped else [Provision(d), Start(d)]
        return []
    actions = [RecordGeneration(d)] if here.generation != d.generation else []
    if stopped:
        # Stopping is always allowed, even unconfirmed: it can only make
        # fewer copies run.
        return actions + ([Stop(d)] if here.alive or here.state != "stopped" else [])
    if (here.alive and here.child) or not may_start:
        return actions
    # Started before the new generation is recorded (instance.json, fsynced):
    # a restore waits for the process, not for the record.
    if here.alive:  # a previous agent's process: ours must run in our process group
        return [Start(d, replace_stale=True)] + actions
    if now >= here.not_before:
        return [Start(d)] + actions
    return actions


def state_updates(desired, local, me):
    """SetState for every owned instance whose local state differs from the store's."""
    out = []
    for d in desired:
        here = local.get(d.uuid)
        if d.server_uuid == me and here is not None and here.state != d.state:
            out.append(SetState(d, here.state))
    return out


def staging(requested, local, me):
    """Provision, never start, the instances a restore is about to move here
    (``requested``: their records as they will be once moved), so that the
    move only has to start them: one ``Provision`` each for those meant for
    ``me`` that this server does not hold yet."""
    return [Provision(d) for d in requested if d.server_uuid == me and d.uuid not in local]


def concurrent_steps(actions):
    """``actions`` (plan()'s, in order) as steps to take one after the other;
    each step is a list of units, one instance's actions each, that may run
    at the same time: a run of instances to provision, record and start is
    one step, every other action (a stop, a destroy) a step of its own. A
    restore moves a whole level here at once: its instances are provisioned
    (or, staged ahead, started) side by side, not in turn."""
    steps, run = [], {}
    for action in actions:
        if isinstance(action, (Provision, RecordGeneration, Start)):
            run.setdefault(action.instance.uuid, []).append(action)
            continue
        if run:
            steps.append(list(run.values()))
            run = {}
        steps.append([[action]])
    if run:
        steps.append(list(run.values()))
    return steps

"""What `sdcadm create SERVICE --server SERVER` makes, decided from plain facts.

One new instance of a catalog service on a server that is set up, running
and not fenced: the next free alias (or the one asked for), the service's
image (its store record's, else the one image of that name, else the one
named with ``--image``), a UUID derived from the service and alias. Running
the same command again finds the instance an earlier run made on that
server (by its derived UUID) and only waits for it: to add another one
there, name a new ``--alias``. Refused, with the way
forward, when the service runs once (a singleton, or stateful and not HA)
and already has an instance, or is HA and already has one on that server.
"""

import uuid as _uuid
from dataclasses import dataclass

from sdcadm.model import SERVER_RUNNING, status_of
from sdcadm.procedures.planning.common import NotViable, next_free_alias
from sdcadm.uuids import check_name

_NS = _uuid.UUID("6d1c3f0e-0d1a-4c53-9d7e-5c1b0c0ad0a1")


@dataclass(frozen=True)
class CreatePlan:
    service: str
    spec: object          # catalog ServiceSpec
    server: object        # Server
    image: object         # Image
    alias: str
    uuid: str
    existing: object      # the Instance a previous run made (None: to create)


def instance_uuid(service, alias):
    """The new instance's UUID: stable, so a re-run finds it."""
    return str(_uuid.uuid5(_NS, f"{service}/{alias}"))


def choose_image(service, service_record, images, wanted=None):
    """The Image an instance of ``service`` is made from; NotViable saying
    which to name when that is not clear."""
    by_uuid = {i.uuid: i for i in images}
    if wanted is not None:
        if wanted not in by_uuid:
            raise NotViable(f"no image {wanted} in the DC store", hint="see `sdcadm image ls`")
        if by_uuid[wanted].name != service:
            raise NotViable(f"image {wanted} is {by_uuid[wanted].name}, not {service}")
        return by_uuid[wanted]
    if service_record is not None and service_record.image in by_uuid:
        return by_uuid[service_record.image]
    named = [i for i in images if i.name == service]
    if len(named) == 1:
        return named[0]
    if not named:
        raise NotViable(f"no image of {service} in the DC store",
                        hint="import one first: sdcadm image import <uuid>.json")
    listed = ", ".join(f"{i.uuid} ({i.version})" for i in sorted(named, key=lambda i: i.version))
    raise NotViable(f"{len(named)} images of {service}: {listed}", hint="name one with --image")


def plan_create(spec, server, instances, image, *, now, heartbeat_timeout, alias=None):
    """A CreatePlan, or NotViable listing every reason it is refused."""
    service, problems = spec.name, []
    if not server.setup:
        problems.append(f"{server.hostname} is not set up (sdcadm server setup {server.hostname})")
    if server.fenced:
        problems.append(f"{server.hostname} is fenced")
    elif status_of(server, now, heartbeat_timeout) != SERVER_RUNNING:
        problems.append(f"{server.hostname} is unreachable")
    same = [i for i in instances if i.service == service]
    if alias is not None:
        check_name(alias, "alias")
    mine = next((i for i in same if alias is not None and i.alias == alias
                 and i.uuid == instance_uuid(service, alias)), None)
    if mine is None and alias is None:
        # A re-run without --alias: the instance the first run made is this
        # server's instance with a derived UUID.
        mine = next((i for i in same if i.server_uuid == server.uuid
                     and i.uuid == instance_uuid(service, i.alias)), None)
    if mine is not None:
        return CreatePlan(service, spec, server, image, mine.alias, mine.uuid, mine)
    if alias is not None and any(i.alias == alias for i in instances):
        problems.append(f"alias {alias} is taken")
    runs_once = spec.singleton or (spec.delegate_dataset and not spec.ha)
    if runs_once and same:
        problems.append(f"{service} runs once and already has {same[0].alias}: a second one "
                        "would serve next to it (to move it: sdcadm service migrate)")
    if spec.ha and any(i.server_uuid == server.uuid for i in same):
        problems.append(f"{service} (HA) already has an instance on {server.hostname}: its "
                        "peers must be on distinct servers")
    if problems:
        raise NotViable(f"cannot create {service} on {server.hostname}:\n  - "
                        + "\n  - ".join(problems))
    alias = alias or next_free_alias(service, [i.alias for i in instances])
    return CreatePlan(service, spec, server, image, alias, instance_uuid(service, alias), None)


HA_SETUPS = ("binder", "manatee", "moray")
BINDER_SIZES = (1, 3, 5)     # a ZooKeeper ensemble needs a majority: odd sizes only


def plan_post_setup(spec, servers, instances, image, named=(), *, now, heartbeat_timeout):
    """[CreatePlan] making HA service ``spec`` run once on each of the chosen
    servers (``named`` hostnames or UUIDs, default: every headnode), adding
    only what is missing. NotViable saying why otherwise."""
    service = spec.name
    if not spec.ha or service not in HA_SETUPS:
        raise NotViable(f"post-setup makes {', '.join(HA_SETUPS)} HA, not {service}")
    by_ref = {s.hostname: s for s in servers} | {s.uuid: s for s in servers}
    unknown = [r for r in named if r not in by_ref]
    if unknown:
        raise NotViable(f"no server {', '.join(map(repr, unknown))}", hint="see `sdcadm server ls`")
    chosen = ([by_ref[r] for r in dict.fromkeys(named)] if named
              else sorted((s for s in servers if s.headnode), key=lambda s: s.hostname))
    same = [i for i in instances if i.service == service]
    on = {i.server_uuid for i in same}
    missing = [s for s in chosen if s.uuid not in on]
    total = len(on | {s.uuid for s in chosen})
    if service == "binder" and total not in BINDER_SIZES:
        raise NotViable(f"binder would run {total} instance(s): an ensemble of "
                        f"{', '.join(map(str, BINDER_SIZES))} keeps a majority",
                        hint="name the servers so that the total is 1, 3 or 5")
    plans, taken = [], [i.alias for i in instances]
    for server in missing:
        plan = plan_create(spec, server, instances, image, now=now,
                           heartbeat_timeout=heartbeat_timeout,
                           alias=next_free_alias(service, taken))
        taken.append(plan.alias)
        plans.append(plan)
    return plans

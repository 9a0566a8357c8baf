"""Deciding what a headnode pulls and prunes. Pure: plain data in, plain data out.

A headnode keeps a copy of every instance of a non-HA service that lives on
*another* server (an HA service has live copies on other headnodes already).
A source server whose heartbeat expired, or that is fenced, is not pulled from:
it is reported ``unreachable`` and the last copy is kept as it is. A copy of an
instance that left the store is pruned once it has been gone ``prune_grace``
seconds (a store glitch or a slow migration must not cost a copy).
"""

from dataclasses import dataclass

from sdcadm.model import SERVER_RUNNING, heartbeat_seen, status_of

STALE_INTERVALS = 3   # a copy older than this many sync intervals is stale


@dataclass(frozen=True)
class PullItem:
    service: str
    instance: object            # model.Instance
    source: object | None       # model.Server the instance lives on (None: unknown server)
    reachable: bool
    reason: str | None = None   # why it is not reachable


def is_ha(name, catalog_specs, services):
    """HA per the catalog; a service the catalog does not know: its ``params.ha``."""
    spec = catalog_specs.get(name)
    if spec is not None:
        return bool(spec.ha)
    service = services.get(name)
    return bool(service and isinstance(service.params, dict) and service.params.get("ha"))


def source_problem(server, now, heartbeat_timeout):
    """Why ``server`` cannot be pulled from now, or None."""
    if server is None:
        return "its server is not in the DC store"
    if server.fenced:
        return f"source server {server.hostname} is fenced"
    if status_of(server, now, heartbeat_timeout) != SERVER_RUNNING:
        return f"source server {server.hostname} is unreachable ({heartbeat_seen(server, now)})"
    return None


def plan_pulls(me, servers, services, instances, catalog_specs, *, now, heartbeat_timeout,
               only=None):
    """{service: [PullItem]} of what headnode ``me`` must pull, services and
    instances in a stable order. ``only``: restrict to these service names."""
    by_uuid = {s.uuid: s for s in servers}
    services = {s.name: s for s in services}
    plan = {}
    for inst in sorted(instances, key=lambda i: (i.service, i.alias, i.uuid)):
        if inst.server_uuid == me or (only is not None and inst.service not in only):
            continue
        if is_ha(inst.service, catalog_specs, services):
            continue
        server = by_uuid.get(inst.server_uuid)
        problem = source_problem(server, now, heartbeat_timeout)
        plan.setdefault(inst.service, []).append(
            PullItem(inst.service, inst, server, problem is None, problem))
    return plan


def plan_prune(held, existing, vanished, *, now, grace):
    """What to remove among the copies held.

    ``held``: {instance uuid: service} of the copies on disk; ``existing``:
    UUIDs the store knows; ``vanished``: {uuid: first time seen gone} from
    before. Returns (to_remove [(service, uuid)], vanished updated).
    """
    remove, still = [], {}
    for uuid, service in sorted(held.items(), key=lambda kv: (kv[1], kv[0])):
        if uuid in existing:
            continue
        since = vanished.get(uuid, now)
        if now - since >= grace:
            remove.append((service, uuid))
        else:
            still[uuid] = since
    return remove, still


def is_stale(last_success, now, sync_interval):
    """True when the last good copy is older than STALE_INTERVALS sync intervals."""
    if last_success is None:
        return True
    return now - last_success > STALE_INTERVALS * sync_interval


def image_chain(image_uuid, images):
    """[Image, its origin, the origin's origin, ...] from ``images`` {uuid: Image}.

    Raises KeyError naming a missing image, ValueError on an origin cycle."""
    chain, seen, uuid = [], set(), image_uuid
    while uuid:
        if uuid in seen:
            raise ValueError(f"image {image_uuid} has an origin cycle through {uuid}")
        seen.add(uuid)
        if uuid not in images:
            raise KeyError(f"image {uuid} is not in the DC store")
        chain.append(images[uuid])
        uuid = images[uuid].origin
    return chain

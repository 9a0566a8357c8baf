"""What `server delete` and `server unfence` do, decided from plain facts.

Deleting a server is for a server that is gone for good (a lost headnode
after its services were restored elsewhere, a decommissioned one after a
migrate). It is refused, with the way forward, while:

* the server is alive (fresh heartbeat and not fenced): fence it or stop it;
* it still owns an instance of a non-HA service: that instance has no other
  copy in the model; migrate or restore it first (``--force`` never drops one);
* it owns HA peers and is not both fenced and ``--force``d: HA peers on a
  fenced server are dropped only when the operator says so (the others carry
  the service; ``post-setup`` adds the third back);
* it is the last headnode.

Unfencing is for a server fenced by mistake: refused while anything restored
from it runs elsewhere (it would come back believing it owns nothing it
should run, next to copies of its former instances: delete it instead).
"""

from dataclasses import dataclass

from sdcadm.model import SERVER_RUNNING, status_of
from sdcadm.procedures.planning.common import NotViable


@dataclass(frozen=True)
class DeletePlan:
    server: object            # the Server record, as read
    peers: tuple              # HA Instance records deleted with it (fenced + --force)
    addresses: tuple          # (network, ip) owned by the server or those instances
    statuses: tuple           # (receiver, instance) restore-data rows of the server


def _aliases(instances):
    names = sorted(i.alias for i in instances)
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def plan_server_delete(server, servers, instances, networks, statuses, is_ha, *, now,
                       heartbeat_timeout, force=False):
    """A DeletePlan, or NotViable listing every reason it is refused."""
    problems, hints = [], []
    host = server.hostname
    if server.headnode and not any(s.headnode and s.uuid != server.uuid for s in servers):
        problems.append(f"{host} is the last headnode: the DC would have none")
        hints.append("set up another headnode first")
    if not server.fenced and status_of(server, now, heartbeat_timeout) == SERVER_RUNNING:
        problems.append(f"{host} is running (heartbeat {now - server.last_heartbeat:.0f}s ago)")
        hints.append(f"migrate its instances away (sdcadm service migrate {host} DST --all) and "
                     f"stop its agent, or fence it (sdcadm service restore --all --dead {host})")
    owned = [i for i in instances if i.server_uuid == server.uuid]
    singles = [i for i in owned if not is_ha(i.service)]
    peers = [i for i in owned if is_ha(i.service)]
    if singles:
        problems.append(f"{host} still owns {len(singles)} instance(s) of non-HA services "
                        f"({_aliases(singles)}): deleting would lose them")
        hints.append(f"restore them (sdcadm service restore --all --dead {host}) or migrate "
                     f"them (sdcadm service migrate {host} DST --all) first")
    if peers and not (server.fenced and force):
        problems.append(f"{host} owns {len(peers)} HA peer(s) ({_aliases(peers)})"
                        + ("" if server.fenced else " and is not fenced"))
        hints.append("the other peers carry those services: with the server fenced, "
                     "--force deletes these records too")
    if problems:
        raise NotViable(f"{host} cannot be deleted:\n  - " + "\n  - ".join(problems),
                        hint="; ".join(dict.fromkeys(hints)))
    owners = {server.uuid} | {i.uuid for i in peers}
    addresses = tuple(sorted((net.name, ip) for net in networks
                             for ip, owner in net.allocations.items() if owner in owners))
    rows = tuple(sorted((st.receiver, st.instance) for st in statuses
                        if st.receiver == server.uuid or st.instance in owners))
    return DeletePlan(server, tuple(sorted(peers, key=lambda i: i.alias)), addresses, rows)


def delete_summary(plan):
    host = plan.server.hostname
    lines = [f"delete server {host} ({plan.server.uuid}) from the DC"]
    if plan.peers:
        lines.append(f"delete its HA peer record(s): {_aliases(plan.peers)}")
    if plan.addresses:
        lines.append("release address(es): " + ", ".join(ip for _, ip in plan.addresses))
    if plan.statuses:
        lines.append(f"drop {len(plan.statuses)} restore-data status row(s) of it")
    return lines


def check_unfence(server, instances):
    """NotViable unless ``server`` may be unfenced; False when it is not fenced."""
    if not server.fenced:
        return False
    moved = [i for i in instances if i.server_uuid != server.uuid
             and isinstance(i.params, dict) and i.params.get("restored_from") == server.uuid]
    if moved:
        raise NotViable(f"{server.hostname} cannot be unfenced: {len(moved)} instance(s) it ran "
                        f"were restored elsewhere ({_aliases(moved)})",
                        hint=f"it is not coming back as it was: delete it (sdcadm server delete "
                             f"{server.hostname}) and set it up again as a new server")
    return True

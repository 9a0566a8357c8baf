"""A headnode's etcd member: joining the cluster (headnode-setup), leaving it
(server delete). Decisions in ``planning/member_plan.py``.

Joining, for one server:

1. ``member add`` through the cluster's API (``/v3/cluster/member/add``),
   unless an earlier run added it;
2. ``sdcadm store start-member`` run on that server over SSH: etcd started
   there with ``--initial-cluster-state existing``, its data directory on
   that server's own disk (the same path as this headnode's, under that
   server's root), listening on its admin address with this headnode's ports;
3. waited for until it answers ``/health`` and the cluster lists it started.

Leaving: ``member remove`` of the member named after the server (or with a
peer URL on its address); nothing when there is none.
"""

import json
import time
from pathlib import Path

from sdcadm.errors import SdcadmError, StoreError
from sdcadm.procedures.planning.member_plan import host_of, initial_cluster, \
    member_of_server, plan_joins, ports_of
from sdcadm.procedures.waits import wait_for
from sdcadm.store.etcd_member import MEMBER_RECORD


UNHEALTHY_WAIT = 15.0   # seconds "unhealthy cluster" is asked again (etcd's HealthInterval: 5)


class MemberFailed(SdcadmError):
    """The store's cluster refused or did not take a member change."""


def etcd_store(config):
    return config.store.backend == "etcd"


def joins_for(config, servers):
    """The MemberJoins of ``servers`` (NotViable when the cluster would refuse)."""
    from sdcadm.store.etcd_maintenance import cluster_members, healthy

    members = cluster_members(config.store.etcd_endpoints)
    up = {u: healthy(u, timeout=2.0) for m in members for u in m["client_urls"]}
    peer_port, client_port = ports_of(config.store.member.peer_url,
                                      config.store.member.client_url
                                      or config.store.etcd_endpoints[0])
    return plan_joins(servers, members, up, peer_port, client_port)


def server_path(config, root, path):
    """``path`` of this headnode's configuration, as the same path on a server
    whose root is ``root`` (as the restore-data puller reaches it)."""
    mine, p = Path(config.root), Path(config.under_root(path))
    rel = p.relative_to(mine) if config.root != "/" and mine in p.parents else p.relative_to("/")
    return Path(root) / rel


def add(config, join, progress, wait=UNHEALTHY_WAIT):
    """``member add`` unless the member is already in the cluster; the members after."""
    from sdcadm.store.etcd_maintenance import add_member, cluster_members, refusal

    members = cluster_members(config.store.etcd_endpoints)
    if member_of_server(members, join.name, _ip(join)) is not None:
        return members, False
    # etcd also says "unhealthy cluster" for a few seconds after a member
    # (re)connected (its leader wants every member connected for 5 s): with
    # every member answering, that passes; asked again for ``wait`` seconds.
    deadline = time.monotonic() + wait
    while True:
        try:
            added = add_member(config.store.etcd_endpoints, join.peer_url)
            break
        except StoreError as e:
            why = refusal(e)
            if "unhealthy cluster" not in why or time.monotonic() > deadline:
                raise MemberFailed(
                    f"the store's cluster refused {join.name}'s member: {why}",
                    hint="`sdcadm store status` shows which member is wrong; start it again "
                         "or remove it, then run the same command again") from None
        time.sleep(0.5)
    progress(f"etcd member {join.name} added ({join.peer_url}, id {added['id']})")
    return added["members"], True


def start_remote(transport, remote_sdcadm, config, root, join, members):
    """Run ``sdcadm store start-member`` on the server; its JSON answer."""
    argv = [remote_sdcadm, "store", "start-member", "--name", join.name,
            "--peer-url", join.peer_url, "--client-url", join.client_url,
            "--initial-cluster", initial_cluster(members, join.name, join.peer_url),
            "--data-dir", str(server_path(config, root, config.store.member.data_dir)),
            "--pid-file", str(Path(root) / "var" / "run" / "etcd.pid"),
            "--log", str(Path(root) / "var" / "log" / "etcd.log"),
            "--record", str(Path(root) / MEMBER_RECORD.lstrip("/")), "-j"]
    out = transport.run(argv, timeout=60).stdout
    try:
        return json.loads(out)
    except ValueError:
        raise MemberFailed(f"`sdcadm store start-member` on {join.name} answered {out[:200]!r}",
                           hint="check sdcadm and etcd there") from None


def wait_started(config, join, timeout):
    """Wait until the member answers with a leader and the cluster lists it
    started; the member list then."""
    from sdcadm.store.etcd_maintenance import cluster_members, healthy

    def started():
        if not healthy(join.client_url, timeout=2.0):
            return None
        try:
            members = cluster_members(config.store.etcd_endpoints)
        except StoreError:
            return None
        m = member_of_server(members, join.name, _ip(join))
        return members if m is not None and m["name"] == join.name else None

    members, _ = wait_for(started, timeout, f"the etcd member of {join.name} answering at "
                                            f"{join.client_url} as a started member of the "
                                            "cluster", interval=0.2)
    return members


def remove(config, hostname, admin_ip, progress):
    """Remove the server's member from the cluster; its id, or None when it had none."""
    from sdcadm.store.etcd_maintenance import cluster_members, refusal, remove_member

    member = member_of_server(cluster_members(config.store.etcd_endpoints), hostname, admin_ip)
    if member is None:
        return None
    try:
        remove_member(config.store.etcd_endpoints, member["id"])
    except StoreError as e:
        raise MemberFailed(f"the store's cluster refused to remove {hostname}'s member: "
                           f"{refusal(e)}", hint="see `sdcadm store status`; then run the "
                                                 "same command again") from None
    progress(f"etcd member {member['name'] or member['id']} removed from the store's cluster")
    return member["id"]


def _ip(join):
    return host_of(join.peer_url)

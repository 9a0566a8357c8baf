"""Which etcd members change when a server becomes a headnode or is deleted (pure).

A new headnode joins the store's cluster: ``member add`` through the API,
then its member started on it. etcd (3.4, ``--strict-reconfig-check``)
refuses a new member while any member does not answer ("unhealthy
cluster"), and a member added but never started counts against the quorum:
both are checked before anything changes, with the way forward.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from sdcadm.procedures.planning.common import NotViable


@dataclass(frozen=True)
class MemberJoin:
    name: str
    peer_url: str
    client_url: str
    existing: object      # the member already in the cluster for this server, or None


def member_urls(admin_ip, peer_port, client_port):
    return f"http://{admin_ip}:{peer_port}", f"http://{admin_ip}:{client_port}"


def ports_of(peer_url, client_url, default_peer=2380, default_client=2379):
    """The peer and client ports of this headnode's own member: a new member
    listens on the same ports on its own address."""
    def port(url, default):
        if not url:
            return default
        parts = urlsplit(url if "://" in url else f"http://{url}")
        return parts.port or default

    return port(peer_url, default_peer), port(client_url, default_client)


def host_of(url):
    return urlsplit(url if "://" in url else f"http://{url}").hostname


def member_of_server(members, hostname, admin_ip):
    """The member of the server (named after it, or with a peer URL on its
    address), or None."""
    for m in members:
        if m["name"] == hostname or any(host_of(u) == admin_ip for u in m["peer_urls"]):
            return m
    return None


def plan_joins(servers, members, healthy, peer_port, client_port):
    """MemberJoins of ``servers`` (hostname, admin_ip); NotViable listing every
    reason the cluster would refuse. ``healthy``: client URL -> bool."""
    joins, problems = [], []
    ours = set()
    for s in servers:
        existing = member_of_server(members, s.hostname, s.admin_ip)
        peer, client = member_urls(s.admin_ip, peer_port, client_port)
        if existing is not None:
            ours.add(existing["id"])
        joins.append(MemberJoin(s.hostname, peer, client, existing))
    for m in members:
        if m["id"] in ours:
            continue   # this procedure's own member, added by an earlier run
        name = m["name"] or f"member {m['id']} ({', '.join(m['peer_urls'])})"
        if not m["name"]:
            problems.append(f"{name} was added to the cluster but never started: it counts "
                            "against the quorum")
        elif not any(healthy.get(u) for u in m["client_urls"]):
            problems.append(f"the etcd member {name} does not answer: etcd refuses a new "
                            "member while one is down")
    if problems:
        raise NotViable("the store's cluster cannot take a new member:\n  - "
                        + "\n  - ".join(problems),
                        hint="start the member again, or, for a headnode that is gone for "
                             "good, remove it (sdcadm server delete HOST, which removes its "
                             "member; or `etcdctl member remove ID`), then run the same command "
                             "again")
    return joins


def initial_cluster(members, name, peer_url):
    """``--initial-cluster`` of a joining member: every member as NAME=PEER_URL,
    the one without a name yet (it has not started) being this one."""
    pairs = []
    for m in members:
        if peer_url in m["peer_urls"]:
            pairs.append(f"{name}={peer_url}")
        elif m["name"]:
            pairs += [f"{m['name']}={u}" for u in m["peer_urls"]]
    if f"{name}={peer_url}" not in pairs:
        pairs.append(f"{name}={peer_url}")
    return ",".join(pairs)

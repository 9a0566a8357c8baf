"""`sdcadm status`: the DC's resilience at a glance, decided from plain facts.

``dc_status(facts)`` is pure: the CLI gathers the facts (the store's records,
the catalog, one health probe per instance, the clock) and renders what it
returns. Each section says OK, or lists its problems, each with what is
wrong and the command that fixes it:

* setup: enough headnodes, every HA service at three instances on three
  distinct headnodes, a store that survives a headnode (etcd: one member per
  headnode, each answering, none on a server that is no headnode);
* servers: unreachable or fenced ones;
* restore data: for every instance of a non-HA service, on every headnode
  but its own, the age of the last good copy against the RPO target
  (OK, STALE, FAILED with the reason, or MISSING);
* instances: those that do not answer their health check;
* admin network: free addresses against what a restore may need;
* tasks: the procedures whose latest run failed, with the failing step.
"""

import ipaddress
from dataclasses import dataclass, field

from sdcadm.model import SERVER_RUNNING, heartbeat_seen, status_of

HA_PEERS = 3
OK, PROBLEM = "OK", "PROBLEM"
COPY_OK, COPY_STALE, COPY_FAILED, COPY_MISSING = "OK", "STALE", "FAILED", "MISSING"


@dataclass(frozen=True)
class StatusFacts:
    servers: list                     # Server
    instances: list                   # Instance
    specs: dict                       # service name -> catalog ServiceSpec
    restore_status: list              # RestoreStatus rows of every headnode
    network: object | None            # the admin Network, None if missing
    tasks: list                       # Task, newest first
    health: dict                      # instance uuid -> error (None: healthy)
    now: float
    heartbeat_timeout: float
    rpo_target: float                 # seconds: a copy older than this is STALE
    store_backend: str = "sqlite"
    ha_services: frozenset = field(default_factory=frozenset)  # HA by the catalog
    # etcd: the cluster's members, [{"name", "peer_urls", "reachable"}]; None
    # when the store is not etcd (or its member list could not be read)
    store_members: list | None = None


def problem(what, fix):
    return {"problem": what, "fix": fix}


def dc_status(facts):
    """{"ok": bool, "sections": {name: {"status", "problems", ...details}}}."""
    sections = {
        "setup": _setup(facts),
        "servers": _servers(facts),
        "restore_data": _restore_data(facts),
        "instances": _instances(facts),
        "admin_network": _network(facts),
        "tasks": _tasks(facts),
    }
    for section in sections.values():
        section["status"] = PROBLEM if section["problems"] else OK
    return {"ok": all(s["status"] == OK for s in sections.values()), "sections": sections}


def _ha(facts):
    """HA services the DC runs (the catalog's, with at least one instance)."""
    running = {i.service for i in facts.instances}
    return sorted(name for name, spec in facts.specs.items() if spec.ha and name in running)


def _setup(facts):
    headnodes = sorted(s.hostname for s in facts.servers if s.headnode)
    problems = []
    if len(headnodes) < HA_PEERS:
        problems.append(problem(
            f"{len(headnodes)} headnode(s) ({', '.join(headnodes) or 'none'}): losing one "
            f"{'loses' if len(headnodes) < 2 else 'may lose'} the DC's HA services and restore "
            f"data; {HA_PEERS} are needed",
            "make a set-up compute node a headnode: `sdcadm server headnode-setup SERVER` "
            "(docs/operator-guide.md, \"Setting up secondary headnodes\")"))
    servers = {s.uuid: s for s in facts.servers}
    ha = {}
    for name in _ha(facts):
        peers = [i for i in facts.instances if i.service == name]
        on = sorted({servers[i.server_uuid].hostname for i in peers
                     if i.server_uuid in servers and servers[i.server_uuid].headnode})
        ha[name] = {"instances": len(peers), "headnodes": on}
        if len(on) < HA_PEERS:
            fix = (f"sdcadm post-setup ha-{name}" if name in ("binder", "manatee", "moray")
                   else f"sdcadm create {name} --server HEADNODE, on each headnode lacking one")
            problems.append(problem(
                f"HA service {name} runs on {len(on)} distinct headnode(s)"
                f"{' (' + ', '.join(on) + ')' if on else ''}, not {HA_PEERS}", fix))
    if facts.store_backend == "sqlite" and len(facts.servers) > 1:
        problems.append(problem(
            f"the DC store is one sqlite file for {len(facts.servers)} servers: the loss of "
            "the headnode holding it stops the DC",
            "move the store to etcd (store.backend: etcd, one member per headnode)"))
    members = None
    if facts.store_members is not None:
        members = [dict(m) for m in facts.store_members]
        problems += _member_problems(facts, members)
    return {"headnodes": headnodes, "ha_services": ha, "store_backend": facts.store_backend,
            "store_members": members, "problems": problems}


def _member_problems(facts, members):
    """A store member that does not answer or belongs to no headnode, a
    headnode without a member: each weighs on the store's quorum."""
    from urllib.parse import urlsplit

    def host_of(url):
        return urlsplit(url if "://" in url else f"http://{url}").hostname

    found, problems = set(), []
    heads = [s for s in facts.servers if s.headnode]
    for m in members:
        server = next((s for s in heads if m["name"] == s.hostname or
                       any(host_of(u) == s.admin_ip for u in m["peer_urls"])), None)
        name = m["name"] or ", ".join(m["peer_urls"])
        m["headnode"] = server.hostname if server else None
        if server is not None:
            found.add(server.uuid)
        else:
            problems.append(problem(
                f"the store's etcd member {name} is on no headnode of the DC: it counts "
                f"against the quorum", "remove it (`etcdctl member remove ID`; `sdcadm store "
                                       "status` shows its ID)"))
            continue
        if not m["reachable"]:
            problems.append(problem(
                f"the store's etcd member {name} does not answer: one more loss and the store "
                "may lose its quorum", f"check etcd on {server.hostname}; if {server.hostname} "
                                       f"is lost: sdcadm server delete {server.hostname} "
                                       "(removes its member)"))
    for s in heads:
        if s.uuid not in found:
            problems.append(problem(
                f"headnode {s.hostname} runs no etcd member of the store",
                "a headnode set up with `sdcadm server headnode-setup` joins the store; "
                "see docs/store.md, \"Adding and removing members\""))
    return problems


def _servers(facts):
    counts, problems = {"running": 0, "unreachable": 0, "fenced": 0}, []
    for s in sorted(facts.servers, key=lambda s: s.hostname):
        if s.fenced:
            counts["fenced"] += 1
            problems.append(problem(
                f"{s.hostname} is fenced: it runs nothing",
                f"once what it ran is restored elsewhere, remove it: sdcadm server delete "
                f"{s.hostname} (--force for the HA peers it still owns)"))
        elif status_of(s, facts.now, facts.heartbeat_timeout) != SERVER_RUNNING:
            counts["unreachable"] += 1
            problems.append(problem(
                f"{s.hostname} is unreachable ({heartbeat_seen(s, facts.now)})",
                f"check its agent (sdcadm-agent) and network; if it is lost: sdcadm service "
                f"restore --all --dead {s.hostname}"))
        else:
            counts["running"] += 1
    return {"counts": counts, "problems": problems}


def copy_state(row, now, rpo_target):
    """(OK|STALE|FAILED|MISSING, age or None, reason or None) of one copy."""
    if row is None:
        return COPY_MISSING, None, "no copy yet"
    age = now - row.last_success if row.last_success else None
    # A source out of reach leaves the last good copy as it was: it ages.
    if row.status not in ("ok", "unreachable"):
        return COPY_FAILED, age, row.error or f"last sync {row.status}"
    if age is None:
        return COPY_MISSING, None, row.error if row.status != "ok" else "no good copy yet"
    if age > rpo_target:
        why = f"last good copy {age:.0f}s old (target {rpo_target:.0f}s)"
        return COPY_STALE, age, why + (f"; {row.error}" if row.status != "ok" and row.error
                                       else "")
    return COPY_OK, age, None


def _restore_data(facts):
    hostnames = {s.uuid: s.hostname for s in facts.servers}
    headnodes = sorted((s for s in facts.servers if s.headnode and not s.fenced),
                       key=lambda s: s.hostname)
    rows = {(r.receiver, r.instance): r for r in facts.restore_status}
    copies, problems = [], []
    ha = {name for name, spec in facts.specs.items() if spec.ha} | facts.ha_services
    singles = sorted((i for i in facts.instances if i.service not in ha),
                     key=lambda i: (i.service, i.alias))
    for inst in singles:
        for head in headnodes:
            if head.uuid == inst.server_uuid:
                continue
            state, age, reason = copy_state(rows.get((head.uuid, inst.uuid)), facts.now,
                                            facts.rpo_target)
            copies.append({"service": inst.service, "instance": inst.alias,
                           "headnode": head.hostname, "state": state,
                           "age": None if age is None else round(age, 1), "reason": reason})
            if state != COPY_OK:
                source = hostnames.get(inst.server_uuid, inst.server_uuid)
                problems.append(problem(
                    f"{inst.alias} ({inst.service}) on {head.hostname}: {state} ({reason})",
                    f"sdcadm service sync-restore-data {inst.service} (its source is "
                    f"{source}: check that it is reachable)"))
    return {"rpo_target": facts.rpo_target, "copies": copies, "problems": problems}


def _instances(facts):
    unhealthy = []
    for inst in sorted(facts.instances, key=lambda i: (i.service, i.alias)):
        error = facts.health.get(inst.uuid)
        if error is not None:
            unhealthy.append(problem(f"{inst.alias} ({inst.service}) is not healthy: {error}",
                                     f"sdcadm check-health {inst.service}; see its server's "
                                     "agent log"))
    return {"total": len(facts.instances), "unhealthy": len(unhealthy), "problems": unhealthy}


def _network(facts):
    net = facts.network
    if net is None:
        return {"problems": [problem("there is no admin network in the DC store",
                                     "create the DC with sdcadm dc init")]}
    network = ipaddress.ip_network(net.cidr, strict=False)
    usable = max(network.num_addresses - 2, 0)
    used = len(set(net.allocations) | set(net.reservations))
    free = max(usable - used, 0)
    # A restore of every single-instance service takes one recovery address each
    # (unless the old server is fenced and its addresses are taken over).
    singles = sum(1 for i in facts.instances if not facts.specs.get(i.service)
                  or not facts.specs[i.service].ha)
    problems = []
    if free < singles:
        problems.append(problem(
            f"{free} free admin address(es) in {net.cidr}, fewer than the {singles} a restore "
            "of every single-instance service may need",
            "release unused addresses, or grow the admin network"))
    return {"cidr": net.cidr, "free": free, "allocated": len(net.allocations),
            "reserved": len(net.reservations), "problems": problems}


def _tasks(facts):
    latest = {}
    for task in facts.tasks:          # newest first: the first of a name is its latest run
        latest.setdefault(task.name, task)
    problems = []
    for name, task in sorted(latest.items()):
        if task.state != "failed":
            continue
        step = next((s for s in task.steps if s.get("state") == "failed"), None)
        where = f" at step {step['name']!r}" if step else ""
        problems.append(problem(f"the last {name} failed{where}: {task.error or 'no reason'}",
                                f"sdcadm task get {task.uuid}; fix the cause and run it again "
                                "(it resumes)"))
    return {"problems": problems}

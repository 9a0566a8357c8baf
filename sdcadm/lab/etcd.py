"""The lab's etcd cluster: one member per headnode, the DC store of the lab.

Each member listens on its headnode's admin address (client and peer ports
from the lab's port plan) and keeps its data in that headnode's root
(``<root>/var/etcd``); the cluster is formed at ``lab up`` from a static
initial cluster of every headnode, and a member starts and stops with its
server (``lab start``/``kill``/``down``). A member restarted with its data
directory rejoins the cluster it was part of (etcd ignores the initial
cluster flags then).

Members run with ``--pre-vote`` (etcd 3.5's default): a member healed from
a partition rejoins without deposing the leader of the majority.

The timings are etcd's defaults (heartbeat 100 ms, election 1 s): the lab
shares a few CPUs with its instances and tests, and a shorter election made
leaders change under load. etcd's shortest lease is then 2 s, so agents keep
heartbeat leases of at least that.
"""

import hashlib
import signal
import time

import requests

from sdcadm.errors import LabError
from sdcadm.lab import procs
from sdcadm.store.etcd_member import ELECTION_MS, HEARTBEAT_MS, etcd_program  # noqa: F401

# Written by a drill that recovered the store on one headnode (`store recover`):
# the others' members belong to the old cluster, and two of them started
# together would form its quorum again -- a second store. They are refused.
RECOVERED_MARK = ".store-recovered"
# Written by a drill that healed the DC (`lab drill --heal`): the headnodes it
# deleted (`server delete`) left the store's cluster; their members are refused.
HEALED_MARK = ".store-healed"


def runs_member(state, hostname):
    """Whether ``hostname`` runs a member: a headnode of the lab as built, or
    a server that `server headnode-setup` made one (its member's data lies
    in its root, where `sdcadm store start-member` put it)."""
    server = state.server(hostname)
    return server["headnode"] or state.etcd_dir(server["hostname"]).is_dir() or \
        state.powered_off_root(server["hostname"]).joinpath("var", "etcd").is_dir()


def member_hosts(state):
    return [s["hostname"] for s in state.servers if runs_member(state, s["hostname"])]


def _peer_url(state, server):
    return f"http://{server['admin_ip']}:{state.port('etcd_peer')}"


def _client_url(state, server):
    return f"http://{server['admin_ip']}:{state.port('etcd_client')}"


def initial_cluster(state):
    return ",".join(f"{s['hostname']}={_peer_url(state, s)}" for s in state.headnodes)


def cluster_token(state):
    """Unique per lab: a member of another lab can never join this cluster."""
    return "sdcadm-lab-" + hashlib.sha256(f"{state.dir}:{state.created}".encode()).hexdigest()[:12]


def member_argv(state, hostname, program=None):
    server = state.server(hostname)
    if not runs_member(state, hostname):
        raise LabError(f"{hostname} is a compute node: only headnodes run an etcd member")
    client, peer = _client_url(state, server), _peer_url(state, server)
    return [program or etcd_program() or "etcd", "--name", hostname,
            "--data-dir", str(state.etcd_dir(hostname)),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial_cluster(state),
            "--initial-cluster-state", "new", "--initial-cluster-token", cluster_token(state),
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            # A member cut off by a partition keeps campaigning, raising its
            # term; without pre-vote its return forces an election that stalls
            # the store for every agent (their singletons' leases then lapse).
            "--pre-vote",
            "--logger", "zap", "--log-outputs", str(state.etcd_log(hostname))]


def member_config(state, hostname):
    """The ``store.member`` section of a headnode's configuration: who its
    member is, and how `store recover` stops and starts it (through this
    module, as the lab runs members)."""
    import sys

    server = state.server(hostname)
    directory = str(state.path).replace("{", "{{").replace("}", "}}")
    command = [sys.executable, "-m", "sdcadm.lab.etcd", "--dir", directory]
    return {"name": hostname, "peer_url": _peer_url(state, server),
            "client_url": _client_url(state, server), "data_dir": str(state.etcd_dir(hostname)),
            "start_command": command + ["start", hostname],
            "stop_command": command + ["stop", hostname]}


def member_pid(state, hostname):
    """The pid of ``hostname``'s running member, or None."""
    pid = procs.read_pid(state.etcd_pidfile(hostname))
    return pid if procs.alive(pid, str(state.etcd_dir(hostname))) else None


def start_member(state, hostname):
    """Start ``hostname``'s member unless it runs; return its pid (it may not
    answer yet: a new cluster answers once a quorum of members runs)."""
    pid = member_pid(state, hostname)
    if pid:
        return pid
    mark = state.path / RECOVERED_MARK
    if mark.exists() and mark.read_text().strip() != hostname:
        raise LabError(f"the lab's store was recovered on {mark.read_text().strip()} "
                       f"(`store recover`): {hostname}'s etcd member belongs to the old cluster "
                       "and is not started", hint="rebuild the lab: `sdcadm lab destroy` then "
                                                  "`sdcadm lab up` (docs/store.md)")
    healed = state.path / HEALED_MARK
    if healed.exists() and hostname in healed.read_text().split():
        raise LabError(f"{hostname}'s etcd member was removed from the store's cluster "
                       "(`server delete` in `lab drill --heal`) and is not started",
                       hint="rebuild the lab: `sdcadm lab destroy` then `sdcadm lab up`")
    program = etcd_program()
    if program is None:
        raise LabError("etcd is not installed; the lab's store needs it",
                       hint="apt-get install etcd-server (`make` does it as root), "
                            "or build the lab with --store sqlite (one server only)")
    state.etcd_dir(hostname).parent.mkdir(parents=True, exist_ok=True)
    state.etcd_pidfile(hostname).parent.mkdir(parents=True, exist_ok=True)
    proc = procs.spawn_daemon(member_argv(state, hostname, program),
                              state.etcd_log(hostname).with_suffix(".out"),
                              netns=state.namespace(hostname))
    procs.write_pid(state.etcd_pidfile(hostname), proc.pid)
    return proc.pid


def healthy(state, hostname, timeout=1.0):
    """Whether ``hostname``'s member answers and has a leader (etcd's /health)."""
    try:
        doc = requests.get(f"{_client_url(state, state.server(hostname))}/health",
                           timeout=timeout).json()
    except (requests.RequestException, ValueError):
        return False
    return doc.get("health") in ("true", True)


def wait_healthy(state, hostnames, timeout=60.0):
    """Wait until every member of ``hostnames`` answers with a leader."""
    deadline = time.monotonic() + timeout
    waiting = list(hostnames)
    while waiting:
        waiting = [h for h in waiting if not healthy(state, h)]
        if not waiting:
            return
        # Exited: its process is gone. (Not member_pid(), which also wants
        # etcd's command line: a child between fork and exec still shows
        # the parent's, and on a loaded machine that lasts long enough to
        # be seen.)
        dead = [h for h in waiting if procs.gone(procs.read_pid(state.etcd_pidfile(h)))]
        if dead:
            raise LabError(f"the etcd member of {', '.join(dead)} exited as it started",
                           hint=f"see {state.etcd_log(dead[0])}")
        if time.monotonic() > deadline:
            raise LabError(f"the etcd members of {', '.join(waiting)} did not answer within "
                           f"{timeout:.0f}s", hint=f"see {state.etcd_log(waiting[0])}")
        time.sleep(0.1)


def stop_member(state, hostname, sig=signal.SIGTERM, grace=10.0):
    """Stop ``hostname``'s member (SIGKILL after ``grace``); return its pid or None."""
    pid = member_pid(state, hostname)
    if pid:
        procs.send(pid, sig)
        procs.terminate([pid], grace=grace)
    return pid


def main(argv=None):
    """``python -m sdcadm.lab.etcd --dir D start|stop HOST``: what the lab writes
    into each headnode's ``store.member.start_command``/``stop_command`` (as a
    real headnode's are ``systemctl start|stop etcd``), so that `sdcadm store
    recover` starts and stops the member as the lab runs it."""
    import argparse
    import sys

    from sdcadm.errors import SdcadmError
    from sdcadm.lab.state import load_state

    parser = argparse.ArgumentParser(prog="python -m sdcadm.lab.etcd",
                                     description="Start or stop a lab headnode's etcd member.")
    parser.add_argument("--dir", required=True, help="the lab directory")
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("server", help="hostname of the headnode")
    args = parser.parse_args(argv)
    try:
        state = load_state(args.dir)
        state.server(args.server)
        if args.action == "start":
            pid = start_member(state, args.server)
            print(f"{args.server}: etcd member running (pid {pid})")
        else:
            pid = stop_member(state, args.server)
            print(f"{args.server}: etcd member stopped" + (f" (pid {pid})" if pid else
                                                            " (it was not running)"))
    except SdcadmError as e:
        print(f"etcd {args.action} {args.server}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

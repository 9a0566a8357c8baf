"""A lab whose servers live in network namespaces (--isolation netns): each
server's processes in its own namespace on its own address, `lab exec`,
partitions that leave the cut-off server running, and nothing left behind.

The fault test (issue 10): hn0 partitioned from everyone keeps running, its
singletons stop by themselves when their lease ends (seen from inside hn0's
own namespace, where they would still be reachable), hn1 restores them, and
probes from every side -- hn0, hn1, hn2 and the host -- never see one
singleton answer from two processes in overlapping spans of time. Durations
are never asserted.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from sdcadm.lab import netns, procs
from sdcadm.lab.probe import concurrency, ping_pid, spans
from sdcadm.lab.state import load_state
from tests.conftest import BIN, clean_env, lab_factory, needs_sshd, random_net, run, wait_for

pytestmark = [
    pytest.mark.integration, needs_sshd,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("nft") is None,
                       reason="nftables not installed (apt-get install nftables; "
                              "`make deps` does it as root)"),
]


def sdcadm(directory, *argv, on="hn1", check=True):
    env = clean_env(SDCADM_CONFIG=str(directory / on / "etc" / "sdcadm.yaml"))
    return run("sdcadm", *argv, env=env, check=check)


def lab(directory, *argv, check=True):
    return run("sdcadm", "lab", *argv, "--dir", str(directory), check=check)


def lab_exec(directory, host, *command, check=True):
    return run("sdcadm", "lab", "exec", "--dir", str(directory), host, "--", *command,
               check=check)


def netns_of(pid):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def answers(directory, host, url):
    """Whether ``url``/ping answers 2xx from inside ``host``'s namespace."""
    code = ("import sys; from sdcadm.lab.probe import ping_pid; "
            f"sys.exit(0 if ping_pid({url!r}, 1.0) else 1)")
    return lab_exec(directory, host, sys.executable, "-c", code, check=False).returncode == 0


def connects(directory, host, addr, port):
    """Whether a TCP connection to ``addr:port`` opens from ``host``'s
    namespace (None: from the host)."""
    if host is None:
        try:
            socket.create_connection((addr, port), timeout=1.0).close()
            return True
        except OSError:
            return False
    code = (f"import socket; socket.create_connection(({addr!r}, {port}), timeout=1.0).close()")
    return lab_exec(directory, host, sys.executable, "-c", code, check=False).returncode == 0


def leftovers(lid):
    return ([ns for ns in netns.namespaces() if ns.startswith(netns.ns_prefix(lid))],
            [link for link in netns.links() if link == netns.host_link(lid)])


def qdiscs(lab_state, host):
    """The root qdisc lines of both ends of ``host``'s link, as the kernel has them."""
    lid = lab_state.netns["id"]
    ends = [(netns.net_ns(lid), host), (netns.server_ns(lid, host), netns.SERVER_IF)]
    return [netns.run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", dev, "root"])
            .stdout.strip() for ns, dev in ends]


def test_netns_lab_servers_exec_partition_and_nothing_left(tmp_path):
    with lab_factory(tmp_path) as up:
        directory = up("--isolation", "netns", "--headnodes", "1", "--computenodes", "1",
                       "--services", "binder,sapi", "--timeout", "90")
        state = load_state(directory)
        lid = state.netns["id"]
        hn0, cn0 = state.server("hn0"), state.server("cn0")
        assert not hn0["admin_ip"].startswith("127.")

        # every process of a server runs in that server's namespace
        for s in (hn0, cn0):
            ns = state.namespace(s["hostname"])
            agent = procs.read_pid(state.agent_pidfile(s["hostname"]))
            assert agent in netns.pids_in(ns)
            assert netns_of(agent) != netns_of(os.getpid())
        assert procs.read_pid(state.etcd_pidfile("hn0")) in netns.pids_in(state.namespace("hn0"))

        # lab exec: inside the namespace, in the server's root, with its config
        out = lab_exec(directory, "cn0", "sh", "-c",
                       "pwd; echo $SDCADM_CONFIG; ip -o -4 addr show dev eth0").stdout
        assert out.splitlines()[0] == str(directory / "cn0")
        assert out.splitlines()[1] == str(state.config_path("cn0"))
        assert f"{cn0['admin_ip']}/" in out
        # an instance keeps its own address, held in its server's namespace
        insts = {i["alias"]: i for i in json.loads(sdcadm(directory, "insts", "-j",
                                                          on="hn0").stdout)}
        sapi = insts["sapi0"]
        held = lab_exec(directory, "hn0", "ip", "-o", "-4", "addr", "show", "dev", "lo").stdout
        assert f"{sapi['admin_ip']}/32" in held
        # the host (the operator's CLI) and the other server reach it
        assert answers(directory, "cn0", sapi["url"])
        assert sdcadm(directory, "server", "ls", "-j", on="cn0").returncode == 0
        # SIGKILLed, an instance cannot remove its address: its guardian does,
        # unless the process its agent starts again has claimed it by then
        old = ping_pid(sapi["url"], 2.0)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: ping_pid(sapi["url"], 1.0) not in (None, old), 60,
                 "sapi0 started again by its agent")
        held = lab_exec(directory, "hn0", "ip", "-o", "-4", "addr", "show", "dev", "lo").stdout
        assert f"{sapi['admin_ip']}/32" in held
        assert answers(directory, "cn0", sapi["url"])

        # partition cn0 from everyone: it runs on, reaching only itself
        agent_port = state.ports["agent"]
        assert connects(directory, "hn0", cn0["admin_ip"], agent_port)
        lab(directory, "partition", "cn0")
        assert load_state(directory).faults == {"cn0": {"partition": {"from": None}}}
        rows = {r["hostname"]: r for r in json.loads(lab(directory, "status", "-j").stdout)}
        assert rows["cn0"]["faults"] == {"partition": {"from": None}}
        assert rows["cn0"]["namespace"] == state.namespace("cn0") and rows["hn0"]["faults"] == {}
        assert "partitioned from everyone" in lab(directory, "status").stdout
        assert not answers(directory, "cn0", sapi["url"])
        assert not connects(directory, "hn0", cn0["admin_ip"], agent_port)
        assert not connects(directory, None, cn0["admin_ip"], agent_port)
        assert connects(directory, "cn0", cn0["admin_ip"], agent_port)  # itself, inside
        assert procs.alive(procs.read_pid(state.agent_pidfile("cn0")))
        lab(directory, "heal", "cn0")
        assert load_state(directory).faults == {}
        wait_for(lambda: answers(directory, "cn0", sapi["url"]), 20, "cn0 to reach sapi0 again")

        # partial: cn0 cut from hn0 only; the host still reaches both
        lab(directory, "partition", "cn0", "--from", "hn0")
        assert not answers(directory, "cn0", sapi["url"])
        assert not connects(directory, "hn0", cn0["admin_ip"], agent_port)
        assert connects(directory, None, cn0["admin_ip"], agent_port)  # the host still does
        lab(directory, "degrade", "cn0", "--loss", "3")
        faults = load_state(directory).faults["cn0"]
        assert faults["partition"] == {"from": ["hn0"]} and faults["degrade"]["loss_pct"] == 3

        # bad requests change nothing
        for argv, says in ((["partition", "cn0", "--from", "cn0"], "from itself"),
                           (["partition", "cn7"], "no server 'cn7'"),
                           (["degrade", "cn0"], "--delay MS, --loss PCT and/or --rate")):
            bad = lab(directory, *argv, check=False)
            assert bad.returncode != 0 and says in bad.stderr, bad.stderr
        assert load_state(directory).faults["cn0"] == faults

        # a slow link: 400 kbit/s, a token bucket on both ends of cn0's link
        # (what it does to a transfer is measured by bench/degrade.py)
        lab(directory, "degrade", "cn0", "--rate", "400")
        assert all(q.startswith("qdisc tbf") and "rate 400Kbit" in q
                   for q in qdiscs(state, "cn0")), qdiscs(state, "cn0")
        lab(directory, "degrade", "cn0", "--clear")
        assert not any("tbf" in q for q in qdiscs(state, "cn0")), qdiscs(state, "cn0")

        # down undoes the faults and removes every namespace and link
        lab(directory, "down")
        assert load_state(directory).faults == {}
        assert leftovers(lid) == ([], [])
        assert procs.lab_processes(directory) == []
        bad = lab_exec(directory, "hn0", "true", check=False)
        assert bad.returncode == 1 and "lab is down" in bad.stderr


def test_netns_needs_root_and_loopback_labs_cannot_be_cut(tmp_path):
    refused = run("sdcadm", "lab", "up", "--dir", str(tmp_path / "x"), "--isolation", "netns",
                  env=clean_env(), check=False) if os.geteuid() != 0 else None
    if refused is not None:
        assert refused.returncode == 1 and "needs root" in refused.stderr
    with lab_factory(tmp_path) as up:
        directory = up("--headnodes", "1", "--computenodes", "0", "--services", "sapi")
        bad = lab(directory, "partition", "hn0", check=False)
        assert bad.returncode == 1 and "--isolation netns" in bad.stderr
        assert "faults" not in json.loads((directory / "lab.json").read_text())


# -- the fault test ---------------------------------------------------------------------------

class Prober:
    """``python -m sdcadm.lab.probe URL...`` run on ``host`` (inside its
    namespace; None: on the host), its rounds collected as they come."""

    def __init__(self, directory, host, urls):
        argv = [sys.executable, "-m", "sdcadm.lab.probe", *urls, "--interval", "0.05"]
        if host is not None:
            argv = [str(BIN / "sdcadm"), "lab", "exec", "--dir", str(directory), host, "--",
                    *argv]
        self.host, self.rounds = host or "host", []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=clean_env())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.rounds.append(json.loads(line))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self._thread.join(10)

    def last(self):
        return self.rounds[-1]["pids"] if self.rounds else None


def test_partitioned_headnode_stops_its_singletons_before_hn1_restores_them(tmp_path):
    with lab_factory(tmp_path) as up:
        directory = up("--isolation", "netns", "--headnodes", "3", "--computenodes", "0",
                       "--services", "sapi,ufds", "--heartbeat-interval", "1.0",
                       "--timeout", "120")
        state = load_state(directory)
        insts = {i["alias"]: i for i in json.loads(sdcadm(directory, "insts", "-j").stdout)}
        urls = [insts["sapi0"]["url"], insts["ufds0"]["url"]]
        sdcadm(directory, "service", "sync-restore-data")
        probers = [Prober(directory, h, urls) for h in ("hn0", "hn1", "hn2", None)]
        # `lab watch`, by service, from the host and inside every server, beside them
        watch = subprocess.Popen(
            [str(BIN / "sdcadm"), "lab", "watch", "--dir", str(directory), "-j", "sapi", "ufds"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            wait_for(lambda: all(p.last() and all(p.last().values()) for p in probers), 90,
                     "every side to see both singletons answer", interval=0.2)
            before = {u: probers[0].last()[u] for u in urls}
            hn0_agent = procs.read_pid(state.agent_pidfile("hn0"))

            lab(directory, "partition", "hn0")
            # From inside hn0 its singletons are still within reach: they stop by
            # themselves once the store stops confirming their lease.
            wait_for(lambda: probers[0].rounds and not any(probers[0].last().values()), 60,
                     "hn0's singletons to stop (seen from inside hn0)", interval=0.1)
            assert procs.alive(hn0_agent), "hn0's agent must keep running: a partition"
            wait_for(lambda: json.loads(sdcadm(directory, "server", "ls", "-j", check=False)
                                        .stdout or "[]") and
                     {s["hostname"]: s["status"] for s in json.loads(
                         sdcadm(directory, "server", "ls", "-j").stdout)}["hn0"] != "running",
                     60, "hn1 to see hn0 silent", interval=0.5)
            restore_at = time.monotonic()     # the probes' clock (CLOCK_MONOTONIC)
            sdcadm(directory, "service", "restore", "--all", "--dead", "hn0",
                   "--confirm-powered-off", "hn0", "-y")
            wait_for(lambda: probers[1].last() and all(probers[1].last().values()), 60,
                     "hn1 to see the restored singletons", interval=0.1)
            restored = {u: probers[1].last()[u] for u in urls}
            assert all(restored[u] != before[u] for u in urls)
            hn1_ns = state.namespace("hn1")
            assert all(pid in netns.pids_in(hn1_ns) for pid in restored.values())
            # hn0 is still cut off: from inside it, nothing answers (the
            # restored copies are on the other side, its own stopped)
            assert not any(probers[0].last().values())

            lab(directory, "heal", "hn0")
            # healed, hn0 runs only what it owns (nothing: it is fenced), and
            # sees the restored copies on hn1 like everyone else
            wait_for(lambda: all(probers[0].last()[u] in netns.pids_in(hn1_ns) for u in urls), 60,
                     "hn0 to reach the restored singletons on hn1 after heal", interval=0.1)
            held = lab_exec(directory, "hn0", "ip", "-o", "-4", "addr", "show", "dev",
                            "lo").stdout
            assert not any(f"{insts[a]['admin_ip']}/" in held for a in ("sapi0", "ufds0"))
            seen = len(probers[3].rounds)
            wait_for(lambda: len(probers[3].rounds) > seen + 20, 30, "20 more probe rounds")
            watch.send_signal(signal.SIGINT)      # Ctrl-C: the watch ends and reports
            out, err = watch.communicate(timeout=30)
        finally:
            for p in probers:
                p.stop()
            if watch.poll() is None:
                watch.kill()
                watch.communicate()
        assert watch.returncode == 0, err
        watched = json.loads(out)
        assert watched["max_concurrent"] == {"sapi": 1, "ufds": 1}
        assert set(watched["sides"]) == {"hn0", "hn1", "hn2"}
        for side in ("hn0", "hn1", "hn2"):
            for name in ("sapi", "ufds"):
                seen = watched["sides"][side]["services"][name]
                # each side saw the outage (hn0's copy stopped, hn1's not yet up)
                # and the service again (hn0 too, after heal)
                assert seen["outages"] >= 1 and seen["probes"] > seen["failed"], (side, seen)
        every_round = [r for p in probers for r in p.rounds]
        assert concurrency(every_round) == {u: 1 for u in urls}, spans(every_round)
        for u in urls:
            # every process that answered there before the restore began (hn0's,
            # including one its agent restarted before the cut) last answered
            # before hn1's copy first did. (Processes first seen after it are
            # hn1's: its copy, or one its agent restarted there under load.)
            by_pid = spans(every_round)[u]
            hn0s = max(last for first, last in by_pid.values() if first < restore_at)
            assert hn0s < by_pid[restored[u]][0], f"{u}: hn0's copy answered after hn1's started"


def test_drill_with_hn0_partitioned_never_sees_a_singleton_twice(tmp_path):
    directory = tmp_path / "drill"
    try:
        out = run("sdcadm", "lab", "drill", "--dir", str(directory), "--fault", "partition",
                  "--headnodes", "3", "--computenodes", "0", "--services", "sapi,ufds,binder",
                  "--net", random_net(), "-j", check=False, timeout=600)
        result = json.loads(out.stdout)
        assert result["fault"] == "partition"
        assert result["max_concurrent_singletons"] == 1, result
        assert result["stopped_before_restore"] is True, result
        assert result["canaries_verified"] == result["canaries_written_before_sync"] > 0
        assert result["fencing_verified"] and result["services_restored"] == 2
        assert result["problems"] == [] and out.returncode == 0, out.stderr
    finally:
        lid = json.loads((directory / "lab.json").read_text())["netns"]["id"] \
            if (directory / "lab.json").exists() else None
        lab(directory, "down", check=False)
        assert procs.lab_processes(directory) == []
        if lid:
            assert leftovers(lid) == ([], [])

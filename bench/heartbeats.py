#!/usr/bin/env python3
"""Heartbeats of many agents on the lab's 3-member etcd (issue 9).

    .venv/bin/python bench/heartbeats.py                       # 2,000 agents, 60 s
    .venv/bin/python bench/heartbeats.py --agents 200 --seconds 20 -j

A lab of 3 headnodes (no compute node, one service) gives the real cluster,
one member per headnode. The bench registers ``--agents`` servers through the
store's API, then keeps each one's heartbeat as an agent does
(``Store.beat``: keep-alive of its lease, one transaction writing the key and
reading its server and instances), every ``--interval`` seconds with the
production lease (``--timeout``, default 15 s), spread evenly, from a pool of
client threads, each with its own store object (one HTTP session each).
Meanwhile a checker lists the servers every second (as `sdcadm server ls`
does) and counts the simulated servers that read ``unreachable``: *false*
when the last beat answered before the listing was asked for began less
than a lease before the listing came back (its keep-alive cannot have run out: etcd is wrong);
otherwise *behind*: this simulator (one Python process) did not beat in time,
and etcd was right.

Prints: beats done and failed, beat latency p50/p99/max (ms), how late beats
started against their schedule (p99, max: the simulator's own limit), false
and behind unreachables, and the CPU seconds the three etcd members and the
simulator used (from /proc/<pid>/stat), per second of the run. It never
asserts.
"""

import argparse
import heapq
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sdcadm.config import load_config  # noqa: E402
from sdcadm.errors import SdcadmError  # noqa: E402
from sdcadm.lab import etcd as lab_etcd  # noqa: E402
from sdcadm.lab.state import load_state  # noqa: E402
from sdcadm.model import SERVER_RUNNING, Server, status_of  # noqa: E402
from sdcadm.store import store_for  # noqa: E402
from sdcadm.uuids import new_uuid  # noqa: E402

BIN = Path(sys.executable).parent


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def sdcadm(*argv):
    proc = subprocess.run([str(BIN / "sdcadm"), *argv], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode:
        raise RuntimeError(f"sdcadm {' '.join(argv)}: exit {proc.returncode}\n{proc.stderr}")
    return proc


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else None


def run(directory, agents, seconds, interval, timeout, threads):
    # The production lease, not the lab's (4 heartbeats of the lab's interval).
    # Through the environment: a Config's sections are read-only views.
    config = load_config(directory / "hn0" / "etc" / "sdcadm.yaml",
                         environ={"SDCADM_AGENT_HEARTBEAT_TIMEOUT": str(timeout)})
    assert config.agent.heartbeat_timeout == timeout

    def store():
        return store_for(config).open()

    say(f"registering {agents} servers")
    admin = store()
    uuids = [new_uuid() for _ in range(agents)]
    for n, uuid in enumerate(uuids):
        admin.put_server(Server(uuid, f"sim{n:05d}", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"))
    state = load_state(directory)
    members = [lab_etcd.member_pid(state, s["hostname"]) for s in state.headnodes]

    latencies, late, failures = [], [], []
    false_unreachable, behind, checks = [], [], [0]
    last_ok = {}   # uuid -> when its last answered beat began (monotonic)
    lock = threading.Lock()
    start = time.monotonic() + 1.0
    end = start + seconds
    # Each agent beats at start + offset + k * interval; offsets spread evenly.
    # Agent n is thread n % threads's, with that thread's one store object: as
    # an agent has one (its lease is cached there), and one HTTP session each.
    schedules = [[] for _ in range(threads)]
    for n, uuid in enumerate(uuids):
        schedules[n % threads].append((start + interval * n / agents, uuid))

    def worker(schedule):
        mine = store()
        heapq.heapify(schedule)
        while schedule:
            due, uuid = heapq.heappop(schedule)
            if due >= end:
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            begun = time.monotonic()
            try:
                mine.beat(uuid)
                ok = True
            except SdcadmError as e:
                ok = False
                with lock:
                    failures.append(str(e)[:120])
            took = time.monotonic() - begun
            with lock:
                if ok:
                    latencies.append(took)
                    last_ok[uuid] = begun
                late.append(begun - due)
            heapq.heappush(schedule, (due + interval, uuid))

    def checker():
        reader = store()
        simulated = set(uuids)
        while time.monotonic() < end:
            with lock:
                asked, began = time.monotonic(), dict(last_ok)
            try:
                now = reader.clock()
                gone = [s.uuid for s in reader.list_servers()
                        if s.uuid in simulated and status_of(s, now, timeout) != SERVER_RUNNING]
            except SdcadmError as e:
                say(f"checker: {e}")
                gone = []
            done = time.monotonic()
            checks[0] += 1
            if gone and asked > start + timeout:  # before: first beats still coming
                with lock:
                    # Its last answered beat began less than a lease before the
                    # listing came back: its keep-alive was applied after that
                    # beginning, so the lease cannot have run out: etcd called it
                    # gone wrongly. Otherwise this simulator fell behind (its own
                    # CPU) and the server really went a lease without beating.
                    # (a beat that began after the listing was asked for does
                    # not count: the listing may have been read before it)
                    wrong = sum(1 for u in gone if done - began.get(u, -1e9) < timeout)
                false_unreachable.append(wrong)
                behind.append(len(gone) - wrong)
            time.sleep(1.0)

    cpu_before = sum(cpu_seconds(p) for p in members if p)
    own_before = cpu_seconds(os.getpid())
    began = time.monotonic()
    pool = [threading.Thread(target=worker, args=(schedule,), daemon=True)
            for schedule in schedules]
    watch = threading.Thread(target=checker, daemon=True)
    say(f"{agents} agents beating every {interval:g}s for {seconds:g}s from {threads} threads")
    for t in pool + [watch]:
        t.start()
    for t in pool + [watch]:
        t.join()
    cpu = sum(cpu_seconds(p) for p in members if p) - cpu_before
    own = cpu_seconds(os.getpid()) - own_before
    # per second of the run as it went: a simulator that fell behind runs longer
    elapsed = time.monotonic() - began
    ms = [x * 1000 for x in latencies]
    return {
        "agents": agents, "seconds": seconds, "interval_s": interval, "lease_s": timeout,
        "client_threads": threads,
        "beats": len(latencies), "beats_failed": len(failures),
        "failures_sample": failures[:3],
        "beat_ms": {"p50": round(statistics.median(ms), 1) if ms else None,
                    "p99": round(percentile(ms, 0.99), 1) if ms else None,
                    "max": round(max(ms), 1) if ms else None},
        "late_start_ms": {"p99": round(percentile(late, 0.99) * 1000, 1) if late else None,
                          "max": round(max(late) * 1000, 1) if late else None},
        "checks": checks[0],
        "checks_with_false_unreachable": sum(1 for n in false_unreachable if n),
        "most_false_unreachable": max(false_unreachable, default=0),
        "most_unreachable_for_falling_behind": max(behind, default=0),
        "elapsed_s": round(elapsed, 1),
        "etcd_cpu_s_per_s": round(cpu / elapsed, 3),
        "simulator_cpu_s_per_s": round(own / elapsed, 3),
        "load_1min": os.getloadavg()[0],
    }


def main():
    from benchdata import loopback_labs

    loopback_labs()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0, help="agent.heartbeat_interval")
    parser.add_argument("--timeout", type=float, default=15.0, help="agent.heartbeat_timeout")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--net", default="127.87.0.0/24")
    parser.add_argument("-j", "--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sdcadm-bench-hb-"))
    directory = workdir / "lab"
    try:
        say("lab up (3 headnodes)")
        sdcadm("lab", "up", "--dir", str(directory), "--net", args.net, "--headnodes", "3",
               "--computenodes", "0", "--services", "binder")
        result = run(directory, args.agents, args.seconds, args.interval, args.timeout,
                     args.threads)
    finally:
        subprocess.run([str(BIN / "sdcadm"), "lab", "destroy", "--dir", str(directory)],
                       capture_output=True, timeout=300)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fencing, measured on real labs: the time from a fault of hn0 to every
singleton restored on hn1, and the largest overlap seen from outside.

    .venv/bin/python bench/fencing.py                  # 10 runs of each fault
    .venv/bin/python bench/fencing.py --runs 3 -j      # one JSON object on stdout

Faults (issue 8): ``kill`` (SIGKILL of hn0's agent and instances: a power
loss), ``hang`` (SIGSTOP of hn0's agent only: its instances keep answering)
and ``freeze`` (SIGSTOP of every process of hn0). Right after the fault,
`sdcadm service restore --all --dead hn0 -y` runs on hn1: the lab's fence
agent powers hn0 off, then everything is restored. A prober outside every
sdcadm process GETs /ping of every singleton's address every 50 ms and notes
which server's process answered.

Per fault: ``restored_s`` (min/median/max), from the fault to the first probe
round in which every singleton answered from hn1; ``fence_s``, the fence
step's own time as the restore reports it; ``max_servers_answering``: the most
servers one singleton answered from in one round (must be 1: 0 overlap).
Every lab is built fresh on --net (one at a time) and destroyed, even on
failure. It never asserts.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sdcadm.health import http_open  # noqa: E402
from sdcadm.lab import procs  # noqa: E402

BIN = Path(sys.executable).parent
SERVICES = "sapi,imgapi,ufds,napi,vmapi,papi,cnapi"   # singletons, all on hn0
FAULTS = ("kill", "hang", "freeze")


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def sdcadm(*argv, env=None, check=True):
    proc = subprocess.run([str(BIN / "sdcadm"), *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    if check and proc.returncode:
        raise RuntimeError(f"sdcadm {' '.join(argv)}: exit {proc.returncode}\n{proc.stderr}")
    return proc


def env_of(directory, host):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    return dict(env, SDCADM_CONFIG=str(Path(directory) / host / "etc" / "sdcadm.yaml"))


def server_of(pid, directory):
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        return cwd.relative_to(directory).parts[0]
    except (OSError, ValueError, IndexError):
        return f"pid {pid}"


class Prober(threading.Thread):
    def __init__(self, directory, urls):
        super().__init__(daemon=True)
        self.dir, self.urls, self.rounds = Path(directory), urls, []   # urls: {service: url}
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(8)

    def ping(self, url):
        try:
            with http_open(url + "/ping", 0.3) as resp:
                return json.loads(resp.read())["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def run(self):
        while not self.stop.is_set():
            sent = time.monotonic()
            items = list(self.urls.items())
            pids = list(self.pool.map(lambda su: self.ping(su[1]), items))
            self.rounds.append((sent, {s: {server_of(p, self.dir)} if p else set()
                                       for (s, _), p in zip(items, pids)}))
            self.stop.wait(0.05)


def freeze_all(directory, host):
    pids = set(procs.lab_processes(Path(directory) / host))
    agent = procs.read_pid(Path(directory) / host / "var" / "run" / "sdcadm-agent.pid")
    pids.add(agent)
    for pid in pids:
        procs.send(pid, signal.SIGSTOP)


def one_run(fault, net, workdir):
    directory = Path(tempfile.mkdtemp(prefix=f"fencing-{fault}-", dir=workdir)) / "dc"
    try:
        sdcadm("lab", "up", "--dir", str(directory), "--net", net, "--headnodes", "3",
               "--computenodes", "0", "--services", SERVICES, "--heartbeat-interval", "0.5")
        hn1 = env_of(directory, "hn1")
        sdcadm("service", "sync-restore-data", env=hn1)
        insts = json.loads(sdcadm("insts", "-j", env=hn1).stdout)
        prober = Prober(directory, {i["service"]: i["url"] for i in insts})
        prober.start()
        agent = procs.read_pid(directory / "hn0" / "var" / "run" / "sdcadm-agent.pid")
        t0 = time.monotonic()
        if fault == "kill":
            sdcadm("lab", "kill", "--dir", str(directory), "hn0")
        elif fault == "hang":
            procs.send(agent, signal.SIGSTOP)
        else:
            freeze_all(directory, "hn0")
        out = sdcadm("service", "restore", "--all", "--dead", "hn0", "-y", "-j", env=hn1).stdout
        done = time.monotonic()
        while not prober.rounds or prober.rounds[-1][0] < done:  # a round sent after the restore
            time.sleep(0.05)
        prober.stop.set()
        prober.join()
        restored = next((t - t0 for t, seen in prober.rounds
                         if t >= t0 and all(s == {"hn1"} for s in seen.values())), None)
        steps = json.loads(out)["procedures"][0]["steps"]
        fence = next(s for s in steps if s["name"] == "fence hn0")
        return {"restored_s": restored, "restore_cmd_s": done - t0,
                "fence_s": fence.get("elapsed_s"),
                "max_servers_answering": max(len(s) for _, seen in prober.rounds
                                             for s in seen.values())}
    finally:
        sdcadm("lab", "destroy", "--dir", str(directory), check=False)


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def main():
    from benchdata import loopback_labs

    loopback_labs()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per fault (default 10)")
    parser.add_argument("--faults", default=",".join(FAULTS), help="kill,hang,freeze")
    parser.add_argument("--net", default="127.81.0.0/24", help="loopback network of the labs")
    parser.add_argument("-j", "--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown[0]!r}: choose among {', '.join(FAULTS)}")
    result = {"runs": args.runs, "services": SERVICES, "cpus": os.cpu_count(), "faults": {}}
    with tempfile.TemporaryDirectory(prefix="bench-fencing-") as workdir:
        for fault in faults:
            runs = []
            for n in range(args.runs):
                say(f"{fault}: run {n + 1}/{args.runs}")
                runs.append(one_run(fault, args.net, workdir))
                say(f"  {runs[-1]}")
            result["faults"][fault] = {
                "restored_s": summary([r["restored_s"] for r in runs]),
                "restore_cmd_s": summary([r["restore_cmd_s"] for r in runs]),
                "fence_s": summary([r["fence_s"] for r in runs]),
                "max_servers_answering": max(r["max_servers_answering"] for r in runs),
            }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for fault, r in result["faults"].items():
        say(f"{fault}: fault -> all singletons restored {r['restored_s']}, fence step "
            f"{r['fence_s']}, most servers answering for one singleton: "
            f"{r['max_servers_answering']}")


if __name__ == "__main__":
    main()

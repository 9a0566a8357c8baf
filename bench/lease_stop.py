"""From lease loss to every singleton gone, with one singleton that does not
stop on SIGTERM.

A one-headnode lab (default heartbeat, so the lab's lease); each run freezes
one singleton (SIGSTOP: its SIGTERM stays pending, the slowest stop there is,
and it works on any version of the workload), cuts the DC store off (the
sqlite file moved away, as tests' ``store_outage`` does), and watches /proc
until every singleton process is gone; then the store comes back and the lab
heals before the next run. Figures: seconds from the cut to the first and to
the last singleton gone, min/median/max. Compare with the dead margin
(docs/recovery.md): the last one must be gone well before it.

    .venv/bin/python bench/lease_stop.py [--runs 5] [--dir /tmp/lease-bench] [--net 127.82.0.0/24]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
SINGLETONS = ("sapi", "imgapi", "vmapi", "napi", "amonredis", "rabbitmq")
SERVICES = SINGLETONS + ("binder",)


def sdcadm(*argv, env=None):
    return subprocess.run([str(BIN / "sdcadm"), *argv], check=True, capture_output=True,
                          text=True, env=env).stdout


def gone(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def pings(insts):
    out = {}
    for inst in insts:
        try:
            with urllib.request.urlopen(inst["url"] + "/ping", timeout=2) as resp:
                out[inst["service"]] = json.loads(resp.read())["pid"]
        except (OSError, ValueError):
            return None
    return out


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out: {what}")


def one_run(directory, env):
    insts = [i for i in json.loads(sdcadm("insts", "-j", env=env)) if i["service"] in SINGLETONS]
    pids = wait(lambda: pings(insts), 60, "every singleton answering")
    frozen = pids["sapi"]
    os.kill(frozen, signal.SIGSTOP)
    store = Path(directory) / "dc.sqlite"
    aside = store.with_name("dc.sqlite.outage")
    t0 = time.monotonic()
    os.rename(store, aside)
    ends = {}
    try:
        while len(ends) < len(pids) and time.monotonic() - t0 < 60:
            for service, pid in pids.items():
                if service not in ends and gone(pid):
                    ends[service] = time.monotonic() - t0
            time.sleep(0.01)
    finally:
        os.rename(aside, store)
        try:
            os.kill(frozen, signal.SIGCONT)
        except ProcessLookupError:
            pass
    return min(ends.values()), max(ends.values()) if len(ends) == len(pids) else float("inf")


def main():
    from benchdata import loopback_labs

    loopback_labs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default="/tmp/lease-bench")
    parser.add_argument("--net", default="127.82.0.0/24")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    env["SDCADM_CONFIG"] = str(Path(args.dir) / "hn0" / "etc" / "sdcadm.yaml")
    sdcadm("lab", "up", "--dir", args.dir, "--net", args.net, "--headnodes", "1",
           "--computenodes", "0", "--services", ",".join(SERVICES), "--timeout", "120")
    try:
        firsts, lasts = [], []
        for n in range(args.runs):
            first, last = one_run(args.dir, env)
            firsts.append(first)
            lasts.append(last)
            print(f"run {n + 1}: first singleton gone {first:.2f} s, last {last:.2f} s", flush=True)
        for name, xs in (("first gone", firsts), ("all gone", lasts)):
            print(f"{name}: min {min(xs):.2f} s, median {statistics.median(xs):.2f} s, "
                  f"max {max(xs):.2f} s ({len(xs)} runs)")
    finally:
        subprocess.run([str(BIN / "sdcadm"), "lab", "destroy", "--dir", args.dir],
                       capture_output=True)


if __name__ == "__main__":
    main()

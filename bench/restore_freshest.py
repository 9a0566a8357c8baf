#!/usr/bin/env python3
"""What seeding from another headnode's fresher copy costs a restore, on a real lab.

    .venv/bin/python bench/restore_freshest.py                 # sapi with 64 MiB
    .venv/bin/python bench/restore_freshest.py --size 256M --net 127.83.0.0/24

A lab of 3 headnodes (sapi, napi on hn0). sapi's dataset gets --size bytes
(mixed file sizes, bench/benchdata.py), every headnode syncs, hn1's puller is
switched off (its config, agent restarted), one more MiB is written and only
hn2 syncs it; hn0 is killed and `sdcadm service restore --all --dead hn0 -y
-j` runs on hn1, which pulls sapi's copy from hn2 (rsync --link-dest against
its own: only what changed crosses) and checks it against the signed manifest.

Prints one JSON line: the pull step's seconds and bytes moved, the time to
plan (asking the headnodes included), the whole restore and sapi's RTO. It
never asserts; the lab is destroyed, even on failure.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdata import MiB, file_plan, parse_size, write_data  # noqa: E402 (bench/ is on sys.path)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import requests  # noqa: E402
from sdcadm.lab import procs  # noqa: E402
import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
SDCADM = str(HERE / ".venv" / "bin" / "sdcadm")


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def sdcadm(*argv, on=None, lab=None, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    if on:
        env["SDCADM_CONFIG"] = str(lab / on / "etc" / "sdcadm.yaml")
    return subprocess.run([SDCADM, *argv], env=env, capture_output=True, text=True, check=check,
                          cwd=HERE)


def agent(lab, host, path, method="GET", **kwargs):
    doc = json.loads((lab / "lab.json").read_text())
    server = next(s for s in doc["servers"] if s["hostname"] == host)
    token = (lab / "token").read_text().strip()
    url = f"http://{server['admin_ip']}:{doc['ports']['agent']}/v1/{path}"
    return requests.request(method, url, headers={"Authorization": f"Bearer {token}"},
                            timeout=600, **kwargs)


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, requests.RequestException):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def stop_puller(lab, host):
    path = lab / host / "etc" / "sdcadm.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.setdefault("restore_data", {})["enabled"] = False
    path.write_text(yaml.safe_dump(doc))
    status = {r["hostname"]: r for r in json.loads(sdcadm("lab", "status", "--dir", str(lab),
                                                          "-j").stdout)}
    pid = status[host]["agent_pid"]
    os.kill(pid, signal.SIGTERM)
    wait(lambda: procs.gone(pid), 60, f"{host}'s agent (pid {pid}) to exit")
    sdcadm("lab", "start", "--dir", str(lab), host)
    wait(lambda: agent(lab, host, "restore-data").json()["enabled"] is False, 90,
         f"{host}'s agent back")


def step_seconds(result, prefix):
    for proc in result["procedures"]:
        for step in proc["steps"]:
            if step["name"].startswith(prefix) and step.get("finished") and step.get("started"):
                return round(step["finished"] - step["started"], 3), step.get("result")
    return None, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64M", help="bytes in sapi's dataset (e.g. 64M, 1G)")
    parser.add_argument("--net", default="127.83.0.0/24")
    args = parser.parse_args()
    size = parse_size(args.size)
    lab = Path(tempfile.mkdtemp(prefix="bench-freshest-"))
    try:
        say(f"lab up in {lab} ({args.net})")
        sdcadm("lab", "up", "--dir", str(lab), "--net", args.net, "--isolation", "loopback",
               "--headnodes", "3",
               "--computenodes", "0", "--services", "sapi,napi", "--heartbeat-interval", "0.5",
               "--timeout", "120")
        insts = {i["alias"]: i for i in json.loads(sdcadm("insts", "-j", on="hn1", lab=lab).stdout)}
        data = lab / "hn0" / "zones" / insts["sapi0"]["uuid"] / "data"
        write_data(data / "bench", file_plan(size))
        say(f"wrote {size // MiB} MiB; syncing every headnode")
        sdcadm("service", "sync-restore-data", on="hn1", lab=lab)
        stop_puller(lab, "hn1")
        write_data(data / "after", [("fresh.bin", MiB)], seed=2)
        t0 = time.monotonic()
        lines = agent(lab, "hn2", "restore-data/sync", "POST", json={}).text.splitlines()
        hn2_sync_s = round(time.monotonic() - t0, 3)
        assert json.loads(lines[-1]).get("ok"), lines[-1]
        sdcadm("lab", "kill", "--dir", str(lab), "hn0")
        say("hn0 killed; restoring on hn1")
        t0, wall0 = time.monotonic(), time.time()
        done = sdcadm("service", "restore", "--all", "--dead", "hn0", "-y", "-j", on="hn1",
                      lab=lab, check=False)
        restore_s = round(time.monotonic() - t0, 3)
        result = json.loads(done.stdout)
        pull_s, pull = step_seconds(result, "pull sapi0")
        fence_s, _ = step_seconds(result, "fence")
        _, level = step_seconds(result, "restore level")
        first = min(s["started"] for p in result["procedures"] for s in p["steps"]
                    if s.get("started"))
        print(json.dumps({
            "size_bytes": size, "state": result["state"], "error": result["error"],
            "hn2_incremental_sync_s": hn2_sync_s,
            "restore_wall_s": restore_s, "restore_elapsed_s": result["elapsed_s"],
            "start_to_first_step_s": round(first - wall0, 3),   # CLI start, lock, prepare
            "pull_step_s": pull_s, "pull_bytes_moved": (pull or {}).get("bytes_moved"),
            "pull_timings_s": (pull or {}).get("timings"),
            "pulled_from": (pull or {}).get("from"), "fence_step_s": fence_s,
            "sapi_rto_s": ((level or {}).get("instances") or {}).get("sapi0", {}).get("rto_s"),
        }))
    finally:
        sdcadm("lab", "destroy", "--dir", str(lab), check=False)


if __name__ == "__main__":
    main()

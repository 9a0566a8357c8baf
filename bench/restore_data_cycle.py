#!/usr/bin/env python3
"""A restore-data cycle with nothing changed, on the full lab DC.

    .venv/bin/python bench/restore_data_cycle.py [--cycles 5]

Builds the full lab (3 headnodes, 2 compute nodes, every lab service: 23
single-instance services on hn0, 13 of them with a delegate dataset), runs
one first sync (full copies), then ``--cycles`` syncs with nothing changed.
For each, every headnode's own cycle time (from its agent's SyncSummary) and
the end-to-end time of `sdcadm service sync-restore-data` (all headnodes
pull in parallel). Target (issue "restore data"): <= 2 s in all.

Paired with each cycle (ours, raw, ours, raw ...): the raw tools' nothing-
changed runs for the same instances, per headnode, summed -- one `rsync -a`
into an existing copy per instance with a delegate dataset, over the same SSH
options as the headnode's sdcadm.yaml, and (``raw_with_round_trips``) one
`ssh <source> true` per instance without one (its metadata is one round trip
at the least). Target (issue 13): per headnode <= 1.5x that sum.

Prints one JSON line; never asserts; the lab is destroyed at the end.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
TARGET_RATIO = 1.5


def sdcadm(*args, env=None):
    out = subprocess.run([str(BIN / "sdcadm"), *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"sdcadm {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


class Raw:
    """The raw tools' nothing-changed runs for what each headnode pulls."""

    def __init__(self, lab, env, doc, scratch):
        from sdcadm.config import load_config
        from sdcadm.restore_data.sources import source_data_path
        from sdcadm.transport.rsync import remote_spec
        from sdcadm.transport.ssh import SSHTransport

        servers = {s["hostname"]: s for s in json.loads(sdcadm("server", "ls", "-j", env=env))}
        self.jobs = {}   # headnode -> [(kind, argv)]
        for h in doc:
            if not h["services"]:
                continue
            config = load_config(lab / h["hostname"] / "etc" / "sdcadm.yaml", environ={})
            ssh = config.ssh
            jobs = self.jobs.setdefault(h["hostname"], [])
            for service in h["services"].values():
                for inst in service["instances"]:
                    src = servers[inst["source"]]
                    transport = SSHTransport(src["admin_ip"], port=ssh.port, user=ssh.user,
                                             identity=ssh.identity, known_hosts=ssh.known_hosts)
                    if inst["snapshot"] is None:
                        jobs.append(("ssh", transport.command_argv(["true"])))
                        continue
                    path = source_data_path(config, SimpleNamespace(**src), inst["uuid"])
                    dest = scratch / h["hostname"] / inst["uuid"]
                    dest.mkdir(parents=True)
                    jobs.append(("rsync", ["rsync", "-a", "-e", shlex.join(transport.ssh_argv()),
                                           remote_spec(src["admin_ip"], path), f"{dest}/"]))
        self.run()   # populate the copies: the timed runs have nothing to do

    def run(self):
        """One pass: {headnode: {"rsync_s", "ssh_s"}} (sums)."""
        out = {}
        for hn, jobs in self.jobs.items():
            sums = out.setdefault(hn, {"rsync_s": 0.0, "ssh_s": 0.0})
            for kind, argv in jobs:
                t0 = time.monotonic()
                subprocess.run(argv, check=True, capture_output=True)
                sums[f"{kind}_s"] += time.monotonic() - t0
        return {hn: {k: round(v, 3) for k, v in sums.items()} for hn, sums in out.items()}


def main():
    from benchdata import loopback_labs

    loopback_labs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--net", default="127.97.1.0/24")
    parser.add_argument("--dir", help="the lab directory (default: a temporary one)")
    args = parser.parse_args()
    top = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="sdcadm-bench-cycle-"))
    lab = top / "dc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    try:
        sdcadm("lab", "up", "--dir", str(lab), "--net", args.net, env=env)
        env["SDCADM_CONFIG"] = str(lab / "hn1" / "etc" / "sdcadm.yaml")
        runs, raw = [], None
        for n in range(args.cycles + 1):
            load = round(os.getloadavg()[0], 2)
            started = time.monotonic()
            doc = json.loads(sdcadm("service", "sync-restore-data", "-j", env=env))
            wall = time.monotonic() - started
            heads = {h["hostname"]: round(h["summary"]["finished"] - h["summary"]["started"], 3)
                     for h in doc if h["services"]}
            services = max(len(h["services"]) for h in doc)
            run = {"cycle": "first" if n == 0 else "nothing-changed", "wall_s": round(wall, 3),
                   "per_headnode_s": heads, "services": services, "loadavg_1m": load,
                   "unchanged": sum(1 for h in doc for s in h["services"].values()
                                    for i in s["instances"] if i["snapshot"]
                                    and i["bytes_moved"] == 0)}
            if raw is None:
                raw = Raw(lab, env, doc, top / "raw")
            else:
                run["raw_per_headnode"] = raw.run()
                run["ratio_per_headnode"] = {
                    hn: round(t / run["raw_per_headnode"][hn]["rsync_s"], 3)
                    for hn, t in heads.items() if run["raw_per_headnode"].get(hn, {}).get("rsync_s")}
                run["ratio_with_round_trips_per_headnode"] = {
                    hn: round(t / (r["rsync_s"] + r["ssh_s"]), 3)
                    for hn, t in heads.items() for r in [run["raw_per_headnode"].get(hn)] if r}
            runs.append(run)
            print(f"cycle {n}: {wall:.2f}s {heads} raw {run.get('raw_per_headnode')} "
                  f"(load {load})", file=sys.stderr)
        same = [r for r in runs if r["cycle"] == "nothing-changed"]
        med = statistics.median
        result = {
            "bench": "restore_data_cycle",
            "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                        "loadavg_1m": [r["loadavg_1m"] for r in runs]},
            "services": runs[0]["services"],
            "first_sync_wall_s": runs[0]["wall_s"],
            "nothing_changed": {
                "wall_median_s": round(med(r["wall_s"] for r in same), 3),
                "wall_best_s": min(r["wall_s"] for r in same),
                "per_headnode_median_s": round(med(
                    v for r in same for v in r["per_headnode_s"].values()), 3),
                "raw_rsync_sum_median_s": round(med(
                    v["rsync_s"] for r in same for v in r["raw_per_headnode"].values()), 3),
                "raw_with_round_trips_median_s": round(med(
                    v["rsync_s"] + v["ssh_s"] for r in same
                    for v in r["raw_per_headnode"].values()), 3),
                "ratio_median": round(med(
                    v for r in same for v in r["ratio_per_headnode"].values()), 3),
                "ratio_with_round_trips_median": round(med(
                    v for r in same for v in r["ratio_with_round_trips_per_headnode"].values()), 3),
            },
            "target_s": 2.0,
            "target_ratio": TARGET_RATIO,
            "runs": runs,
        }
        result["target_met"] = result["nothing_changed"]["wall_median_s"] <= result["target_s"]
        result["target_ratio_met"] = result["nothing_changed"]["ratio_median"] <= TARGET_RATIO
        print(json.dumps(result))
    finally:
        subprocess.run([str(BIN / "sdcadm"), "lab", "destroy", "--dir", str(lab)], env=env,
                       capture_output=True)


if __name__ == "__main__":
    main()

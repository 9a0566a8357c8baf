#!/usr/bin/env python3
"""A restore-data cycle with nothing changed, on the full lab DC.

    .venv/bin/python bench/restore_data_cycle.py [--cycles 5]

Builds the full lab (3 headnodes, 2 compute nodes, every lab service: 23
single-instance services on hn0, 13 of them with a delegate dataset), runs
one first sync (full copies), then ``--cycles`` syncs with nothing changed.
For each, every headnode's own cycle time (from its agent's SyncSummary) and
the end-to-end time of `sdcadm service sync-restore-data` (all headnodes
pull in parallel). Target (issue "restore data"): <= 2 s in all.

Prints one JSON line; never asserts; the lab is destroyed at the end.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def sdcadm(*args, env=None):
    out = subprocess.run([str(BIN / "sdcadm"), *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"sdcadm {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--net", default="127.97.1.0/24")
    args = parser.parse_args()
    lab = Path(tempfile.mkdtemp(prefix="sdcadm-bench-cycle-")) / "dc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    try:
        sdcadm("lab", "up", "--dir", str(lab), "--net", args.net, env=env)
        env["SDCADM_CONFIG"] = str(lab / "hn1" / "etc" / "sdcadm.yaml")
        runs = []
        for n in range(args.cycles + 1):
            started = time.monotonic()
            doc = json.loads(sdcadm("service", "sync-restore-data", "-j", env=env))
            wall = time.monotonic() - started
            heads = {h["hostname"]: round(h["summary"]["finished"] - h["summary"]["started"], 3)
                     for h in doc if h["services"]}
            services = max(len(h["services"]) for h in doc)
            runs.append({"cycle": "first" if n == 0 else "nothing-changed", "wall_s": round(wall, 3),
                         "per_headnode_s": heads, "services": services})
            print(f"cycle {n}: {wall:.2f}s {heads}", file=sys.stderr)
        same = [r for r in runs if r["cycle"] == "nothing-changed"]
        result = {
            "bench": "restore_data_cycle",
            "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                        "loadavg_1m": round(os.getloadavg()[0], 2)},
            "services": runs[0]["services"],
            "first_sync_wall_s": runs[0]["wall_s"],
            "nothing_changed": {
                "wall_median_s": round(statistics.median(r["wall_s"] for r in same), 3),
                "wall_best_s": min(r["wall_s"] for r in same),
                "per_headnode_median_s": round(statistics.median(
                    v for r in same for v in r["per_headnode_s"].values()), 3),
            },
            "target_s": 2.0,
            "runs": runs,
        }
        result["target_met"] = result["nothing_changed"]["wall_median_s"] <= result["target_s"]
        print(json.dumps(result))
    finally:
        subprocess.run([str(BIN / "sdcadm"), "lab", "destroy", "--dir", str(lab)], env=env,
                       capture_output=True)


if __name__ == "__main__":
    main()

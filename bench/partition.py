#!/usr/bin/env python3
"""A partitioned headnode, measured: how soon its singletons stop, and how
soon the majority side has every one of them back.

    .venv/bin/python bench/partition.py               # 10 runs
    .venv/bin/python bench/partition.py --runs 3      # fewer

Each run is `sdcadm lab drill --fault partition -j` on a new netns lab (3
headnodes, no compute node, sapi, ufds and binder; root only): hn0 is cut off
from everyone while its processes keep running, its agent stops its
singletons when the store stops confirming their lease, hn1 restores them.
Per run, from the drill's own probes (every namespace and the host):

- ``stopped_s``: partition -> the last 2xx of hn0's singletons seen from
  inside hn0 (``partitioned_side_stopped_s``);
- ``restored_s``: partition -> every restored instance healthy on hn1
  (``rto_from_kill_s``);
- ``overlap``: whether any probe saw one singleton answer from two
  processes at once (``max_concurrent_singletons`` > 1) or hn0's copies
  still answered when the restore started (``stopped_before_restore``).

Targets (issue 10): no overlap in any run, and ``restored_s`` <= lease x 3 +
5 s. Prints one JSON line (min/median/max of each figure, the lease and
margin used); progress on stderr. It never asserts; every lab is destroyed.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDCADM = Path(sys.executable).parent / "sdcadm"
HEARTBEAT = 1.0          # the drill's lab default (seconds between beats)
LEASE_FACTOR = 4         # sdcadm.lab.ctl.HEARTBEAT_TIMEOUT_FACTOR: lease = 4 beats


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def spread(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return {"min": round(values[0], 3), "median": round(statistics.median(values), 3),
            "max": round(values[-1], 3), "runs": len(values)}


def one_run(n, workdir):
    directory = Path(workdir) / f"run{n}"
    net = f"127.86.{n % 200}.0/24"
    argv = [str(SDCADM), "lab", "drill", "--dir", str(directory), "--fault", "partition",
            "--headnodes", "3", "--computenodes", "0", "--services", "sapi,ufds,binder",
            "--net", net, "-j"]
    started = time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([str(SDCADM), "lab", "destroy", "--dir", str(directory)],
                       capture_output=True, text=True, timeout=300)
    try:
        result = json.loads(out.stdout)
    except ValueError:
        return {"run": n, "error": (out.stderr or out.stdout).strip()[-400:]}
    return {"run": n, "wall_s": round(time.monotonic() - started, 1), "ok": result["ok"],
            "stopped_s": result["partitioned_side_stopped_s"],
            "restored_s": result["rto_from_kill_s"], "restore_s": result["rto_s"],
            "max_concurrent_singletons": result["max_concurrent_singletons"],
            "stopped_before_restore": result["stopped_before_restore"],
            "services_restored": result["services_restored"],
            "canaries": [result["canaries_verified"], result["canaries_written_before_sync"]],
            "problems": result["problems"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("nft") is None:
        say("bench/partition.py needs root and nftables (a netns lab)")
        return 2
    lease = HEARTBEAT * LEASE_FACTOR
    runs = []
    with tempfile.TemporaryDirectory(prefix="sdcadm-bench-partition-") as workdir:
        for n in range(args.runs):
            say(f"run {n + 1}/{args.runs} ...")
            runs.append(one_run(n, workdir))
            say(f"  {json.dumps(runs[-1])}")
    good = [r for r in runs if "error" not in r]
    target = lease * 3 + 5
    report = {
        "bench": "partition", "runs": len(runs), "failed_runs": len(runs) - len(good),
        "heartbeat_s": HEARTBEAT, "lease_s": lease,
        # docs/recovery.md "The margin": without a fence, another headnode
        # may restore a server's singletons once its last heartbeat is older
        # than (lease + notice 1 s + kill grace 0.5 s) x safety 1.5. The drill
        # fences hn0 (its fence agent powers it off out of band) as soon as
        # the store sees it unreachable, one lease after its last beat, so
        # it does not wait this margin.
        "dead_margin_s": round((lease + 1.0 + 0.5) * 1.5, 3), "target_restored_s": target,
        "stopped_s": spread(r["stopped_s"] for r in good),
        "restored_s": spread(r["restored_s"] for r in good),
        "restore_s": spread(r["restore_s"] for r in good),
        "overlap_runs": sum(1 for r in good if r["max_concurrent_singletons"] not in (0, 1)
                            or r["stopped_before_restore"] is False),
        "over_target_runs": sum(1 for r in good if r["restored_s"] > target),
        "per_run": runs,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`sdcadm insts` and `sdcadm server ls` against the `sqlite3` CLI, paired.

For each store size, each of our listings runs next to the `sqlite3` CLI
printing the same columns of the same rows from the same file (a join for the
hostname, the same order, a table with `-header -column` or tab-separated
with `-H`), alternately (ours, theirs, ours, theirs, ...) so that both see
the same machine load. Each run is a whole process, stdout to /dev/null;
its peak memory is its maximum RSS (GNU time, ``%M``). Prints ONE JSON line:
per pair, the median wall time of each side, the median of the per-pair
ratios ours/theirs, and each side's largest peak RSS. Targets (reported,
never asserted): ratio <= 1.5 and peak <= 64 MiB for `insts` at 50,000
instances and `server ls` at 10,000 servers.

    .venv/bin/python bench/listings.py [--runs 7] [--sizes 1k,10k,100k] [--keep DIR]

Stores are filled through the store API (bench/server_ls.py's ``fill``):
1k = 1,000 servers / 5,000 instances, 10k = 10,000 / 50,000, 100k = 100,000
servers / 50,000 instances (the growth of `server ls`; instances stay at 50k
so that the fill takes minutes, not an hour).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_ls import fill, sdcadm_argv  # noqa: E402

SIZES = {"1k": (1_000, 5_000), "10k": (10_000, 50_000), "100k": (100_000, 50_000)}
TARGET_RATIO, TARGET_MIB = 1.5, 64
HEARTBEAT_TIMEOUT = 86400

INSTS_SQL = ("SELECT i.uuid AS INSTANCE, i.service AS SERVICE, s.hostname AS HOSTNAME, "
             "i.alias AS ALIAS, i.state AS STATE, i.generation AS GEN FROM instances i "
             "LEFT JOIN servers s ON s.uuid = i.server_uuid ORDER BY i.service, i.alias")
# server ls: HOSTNAME UUID STATUS FLAGS ADMIN-IP (the primary flag needs the sapi
# instance's server: a second lookup, as ours does).
SERVERS_SQL = (
    "SELECT hostname AS HOSTNAME, uuid AS UUID, "
    "CASE WHEN last_heartbeat > strftime('%s','now') - {timeout} THEN 'running' "
    "ELSE 'unreachable' END AS STATUS, "
    "(CASE WHEN setup THEN 'S' ELSE '-' END) || (CASE WHEN headnode THEN 'H' ELSE '-' END) || "
    "(CASE WHEN uuid = (SELECT server_uuid FROM instances WHERE service = 'sapi' LIMIT 1) "
    "THEN 'P' ELSE '-' END) || "
    "(CASE WHEN boot_platform != current_platform THEN 'B' ELSE '-' END) || "
    "(CASE WHEN fenced THEN 'F' ELSE '-' END) AS FLAGS, admin_ip AS \"ADMIN-IP\" "
    "FROM servers ORDER BY hostname").format(timeout=HEARTBEAT_TIMEOUT)


def run_once(argv, env):
    """(wall seconds, peak RSS MiB) of one whole process, stdout discarded.

    The peak comes from GNU time (``%M``), which forks the command itself:
    the ``ru_maxrss`` of a child of this process would include this
    process's own size (Linux keeps a peak across fork and exec)."""
    time_cmd = shutil.which("time") or "/usr/bin/time"
    if not os.path.exists(time_cmd):
        raise SystemExit("GNU time is not installed (apt-get install time): it measures peaks")
    started = time.perf_counter()
    proc = subprocess.run([time_cmd, "-f", "%M", *argv], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
    return wall, int(proc.stderr.strip().splitlines()[-1]) / 1024


def paired(ours, theirs, env, runs):
    """Alternate the two commands ``runs`` times each; medians and peaks."""
    a, b = [], []
    for _ in range(runs):
        a.append(run_once(ours, env))
        b.append(run_once(theirs, env))
    ratios = [x[0] / y[0] for x, y in zip(a, b)]
    return {"ours_median_s": round(statistics.median(x[0] for x in a), 3),
            "sqlite3_median_s": round(statistics.median(y[0] for y in b), 3),
            "ratio_median": round(statistics.median(ratios), 2),
            "ratio_min": round(min(ratios), 2), "ratio_max": round(max(ratios), 2),
            "ours_peak_mib": round(max(x[1] for x in a), 1),
            "sqlite3_peak_mib": round(max(y[1] for y in b), 1)}


def commands(db):
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        raise SystemExit("the sqlite3 CLI is not installed (apt-get install sqlite3)")
    return {
        "insts_table": (["insts"], [sqlite3, "-header", "-column", str(db), INSTS_SQL]),
        "insts_H": (["insts", "-H"], [sqlite3, "-separator", "\t", str(db), INSTS_SQL]),
        "server_ls_table": (["server", "ls"],
                            [sqlite3, "-header", "-column", str(db), SERVERS_SQL]),
        "server_ls_H": (["server", "ls", "-H"], [sqlite3, "-separator", "\t", str(db),
                                                 SERVERS_SQL]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="pairs per command (default 7)")
    parser.add_argument("--sizes", default="1k,10k", help="of 1k,10k,100k (default 1k,10k)")
    parser.add_argument("--keep", metavar="DIR", help="build the stores in DIR and keep them "
                        "(reused when present)")
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or args.runs < 1:
        parser.error(f"unknown size(s) {unknown}; sizes: {', '.join(SIZES)}" if unknown
                     else "--runs must be at least 1")
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="sdcadm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    results = {}
    try:
        for label in sizes:
            n_servers, n_instances = SIZES[label]
            db = workdir / f"listings-{label}.sqlite"
            if not db.exists():
                fill(db, n_servers, n_instances, time.time())
            config = workdir / f"listings-{label}.yaml"
            config.write_text(f"store:\n  path: {db}\nagent:\n"
                              f"  heartbeat_timeout: {HEARTBEAT_TIMEOUT}\n")
            run_env = dict(env, SDCADM_CONFIG=str(config))
            entry = {"servers": n_servers, "instances": n_instances}
            for name, (ours, theirs) in commands(db).items():
                entry[name] = paired(sdcadm_argv() + ours, theirs, run_env, args.runs)
            results[label] = entry
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    targets = {}
    if "10k" in results:
        big = results["10k"]
        targets = {name: big[name]["ratio_median"] <= TARGET_RATIO
                   and big[name]["ours_peak_mib"] <= TARGET_MIB for name in big
                   if isinstance(big[name], dict)}
    print(json.dumps({
        "bench": "listings",
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_1m": round(os.getloadavg()[0], 2)},
        "runs": args.runs, "results": results,
        "target": {"ratio": TARGET_RATIO, "peak_mib": TARGET_MIB}, "target_met_10k": targets,
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""`insts` and `server ls` of this tree against an older sdcadm tree, paired.

    git archive <rev> | tar -x -C /tmp/base
    .venv/bin/python bench/listings_vs_commit.py --base /tmp/base \\
        --old-config OLD.yaml --new-config NEW.yaml [--runs 5]

Each command runs as a whole process (``python -m sdcadm.cli.main``, with the
tree as the working directory so that its ``sdcadm`` is the one imported),
old and new alternately, stdout to /dev/null; peak RSS by GNU time (``%M``).
The two configurations name two copies of one store: the old tree needs one
at its own schema version (a store built by it), the new one migrates its
copy. Prints one line per command: medians, peaks and the paired ratio.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["insts"], ["insts", "-H"], ["insts", "-j"], ["server", "ls"])


def one(argv, tree, config):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    env["SDCADM_CONFIG"] = str(config)
    env.pop("PYTHONPATH", None)
    started = time.perf_counter()
    proc = subprocess.run([shutil.which("time") or "/usr/bin/time", "-f", "%M", sys.executable,
                           "-m", "sdcadm.cli.main", *argv], cwd=tree, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} in {tree} exited {proc.returncode}: {proc.stderr}")
    return time.perf_counter() - started, int(proc.stderr.strip().splitlines()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the older sdcadm tree")
    parser.add_argument("--old-config", required=True)
    parser.add_argument("--new-config", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    for argv in COMMANDS:
        old, new = [], []
        for _ in range(args.runs):
            old.append(one(argv, args.base, args.old_config))
            new.append(one(argv, here, args.new_config))
        ratios = [n[0] / o[0] for n, o in zip(new, old)]
        print(f"{' '.join(argv)}: old median {statistics.median(x[0] for x in old):.3f}s peak "
              f"{max(x[1] for x in old):.1f}MiB; new median "
              f"{statistics.median(x[0] for x in new):.3f}s peak {max(x[1] for x in new):.1f}MiB; "
              f"new/old median {statistics.median(ratios):.2f} (min {min(ratios):.2f} max "
              f"{max(ratios):.2f}); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

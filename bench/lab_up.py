#!/usr/bin/env python3
"""`sdcadm lab up` of this tree against an older tree, paired: what building
the DC through the operator's commands costs every lab the suite starts.

    git archive <rev> | tar -x -C /tmp/base
    .venv/bin/python bench/lab_up.py --base /tmp/base [--runs 3] [--headnodes 3]
        [--computenodes 2] [--services sapi,binder,...]

Each run is a whole `lab up` of a new loopback lab (images built, etcd
members started, every instance healthy), timed from outside, then `lab
destroy`; old and new alternate. The old tree runs in its directory with
PYTHONPATH on it, so that every process it starts (agents, fence agent)
imports its code too.
Prints each pair, then the medians and the paired ratio.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def lab_up(tree, directory, net, shape):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    env["SDCADM_LAB_ISOLATION"] = "loopback"
    env.pop("PYTHONPATH", None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    argv = [sys.executable, "-m", "sdcadm.cli.main", "lab"]
    started = time.perf_counter()
    # -m puts the working directory first on sys.path: the tree's own
    cwd = tree or Path(__file__).resolve().parent.parent
    up = subprocess.run([*argv, "up", "--dir", str(directory), "--net", net, *shape], env=env,
                        cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - started
    subprocess.run([*argv, "destroy", "--dir", str(directory)], env=env, cwd=cwd,
                   capture_output=True)
    if up.returncode != 0:
        raise SystemExit(f"lab up ({tree or 'this tree'}) exited {up.returncode}:\n{up.stderr}")
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the older sdcadm tree")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--headnodes", default="3")
    parser.add_argument("--computenodes", default="2")
    parser.add_argument("--services", default=None, help="default: every lab service")
    args = parser.parse_args()
    shape = ["--headnodes", args.headnodes, "--computenodes", args.computenodes]
    if args.services:
        shape += ["--services", args.services]
    old, new = [], []
    with tempfile.TemporaryDirectory(prefix="bench-lab-up-") as scratch:
        for n in range(args.runs):
            net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.0/24"
            old.append(lab_up(Path(args.base).resolve(), Path(scratch) / f"old{n}", net, shape))
            new.append(lab_up(None, Path(scratch) / f"new{n}", net, shape))
            print(f"pair {n + 1}: old {old[-1]:.2f}s new {new[-1]:.2f}s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    ratios = [b / a for a, b in zip(old, new)]
    print(f"lab up {' '.join(shape)}: old median {statistics.median(old):.2f}s, new median "
          f"{statistics.median(new):.2f}s, new/old median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f} max {max(ratios):.2f})")


if __name__ == "__main__":
    main()

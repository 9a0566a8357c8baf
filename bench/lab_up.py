#!/usr/bin/env python3
"""`sdcadm lab up` of this tree against an older tree, paired: what building
the DC through the operator's commands costs every lab the suite starts.

    git archive <rev> | tar -x -C /tmp/base
    .venv/bin/python bench/lab_up.py --base /tmp/base [--runs 3] [--headnodes 3]
        [--computenodes 2] [--services sapi,binder,...]

Each run is a whole `lab up` of a new loopback lab (images built, etcd
members started, every instance healthy), timed from outside, then `lab
destroy`; old and new alternate, each run from its own tree
(benchdata.lab_in_tree: every process it starts imports that tree's code).
Prints each pair, then the medians and the paired ratio.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import THIS_TREE, lab_in_tree  # noqa: E402


def lab_up(tree, directory, net, shape):
    started = time.perf_counter()
    up = lab_in_tree(tree, "up", "--dir", str(directory), "--net", net, *shape,
                     isolation="loopback")
    took = time.perf_counter() - started
    lab_in_tree(tree, "destroy", "--dir", str(directory), timeout=300)
    if up.returncode != 0:
        raise SystemExit(f"lab up ({tree}) exited {up.returncode}:\n{up.stderr}")
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
            new.append(lab_up(THIS_TREE, Path(scratch) / f"new{n}", net, shape))
            print(f"pair {n + 1}: old {old[-1]:.2f}s new {new[-1]:.2f}s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    ratios = [b / a for a, b in zip(old, new)]
    print(f"lab up {' '.join(shape)}: old median {statistics.median(old):.2f}s, new median "
          f"{statistics.median(new):.2f}s, new/old median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f} max {max(ratios):.2f})")


if __name__ == "__main__":
    main()

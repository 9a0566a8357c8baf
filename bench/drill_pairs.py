#!/usr/bin/env python3
"""The drill's RTO of this tree against an older tree, paired (issue 8's
"within 1 s of today's").

    git archive 7b0e8b7 | tar -x -C /tmp/base
    .venv/bin/python bench/drill_pairs.py --base /tmp/base [--runs 5] \\
        [--isolation netns|loopback]

Each run is `sdcadm lab drill -j` on a new lab (3 headnodes, 2 compute
nodes, every lab service; hn0 killed, everything restored on hn1), then
`lab destroy`; old and new alternate, each on its own network. Each side
runs in its own tree's directory with PYTHONPATH on it, so that its agents
and fence agent import its code. ``--isolation`` is this tree's (default
netns as root: what `make drill` runs); the old tree builds what it built.
Prints each pair (rto_s and this tree's per-step split), then the medians
and the per-pair gap.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import THIS_TREE, lab_in_tree  # noqa: E402


def drill(tree, directory, net, isolation=None):
    try:
        done = lab_in_tree(tree, "drill", "-j", "--dir", str(directory), "--net", net,
                           isolation=isolation)
    finally:
        lab_in_tree(tree, "destroy", "--dir", str(directory), timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"drill in {tree} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def split(result):
    steps = (result.get("rto_parts") or {}).get("steps") or []
    return " ".join(f"{s['step'].split(':')[0].replace('restore ', '')}={s['s']:.2f}"
                    for s in steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the older sdcadm tree")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--isolation", choices=("netns", "loopback"), default=None,
                        help="this tree's lab isolation (default: as `lab drill` chooses)")
    args = parser.parse_args()
    base = Path(args.base).resolve()
    old, new = [], []
    with tempfile.TemporaryDirectory(prefix="bench-drill-") as scratch:
        for n in range(args.runs):
            a, b = random.sample(range(100, 250), 2)
            o = drill(base, Path(scratch) / f"old{n}", f"127.{a}.{n + 1}.0/24")
            w = drill(THIS_TREE, Path(scratch) / f"new{n}", f"127.{b}.{n + 1}.0/24", args.isolation)
            old.append(o["rto_s"])
            new.append(w["rto_s"])
            print(f"pair {n + 1}: old {o['rto_s']:.2f}s new {w['rto_s']:.2f}s "
                  f"(ok {w.get('ok')}; {split(w)}; load {os.getloadavg()[0]:.1f})", flush=True)
    gaps = sorted(b - a for a, b in zip(old, new))
    print(f"rto_s old median {statistics.median(old):.2f}s ({', '.join(f'{x:.2f}' for x in sorted(old))}); "
          f"new median {statistics.median(new):.2f}s ({', '.join(f'{x:.2f}' for x in sorted(new))}); "
          f"per-pair gap median {statistics.median(gaps):.2f}s ({', '.join(f'{g:.2f}' for g in gaps)})")


if __name__ == "__main__":
    main()

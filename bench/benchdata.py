"""Test data for the benchmarks: the same mix of file sizes everywhere, so
that figures from different benchmarks can be compared."""

import os
import random
import subprocess
import sys
from pathlib import Path

MiB = 1 << 20


def parse_size(text):
    text = text.strip().upper().rstrip("B").rstrip("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def file_plan(size, seed=1):
    """[(relative path, bytes)] adding up to ``size``: 40% in 64 MiB files,
    40% in 1 MiB files, 20% in 4-64 KiB files."""
    rng = random.Random(seed)
    plan = []
    big = int(size * 0.4) // (64 * MiB)
    plan += [(f"big/b{i:03d}.bin", 64 * MiB) for i in range(big)]
    medium = int(size * 0.4) // MiB
    plan += [(f"medium/d{i // 100:02d}/m{i:04d}.bin", MiB) for i in range(medium)]
    left = size - sum(n for _, n in plan)
    i = 0
    while left > 0:
        n = min(left, rng.randint(4, 64) * 1024)
        plan.append((f"small/d{i // 200:02d}/s{i:05d}.bin", n))
        left -= n
        i += 1
    return plan


def write_data(root, plan, seed=1):
    rng = random.Random(seed)
    for rel, n in plan:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            left = n
            while left:
                chunk = min(left, 8 * MiB)
                f.write(rng.randbytes(chunk))
                left -= chunk


# -- a big DC's records (bench/server_ls.py on sqlite, bench/etcd_dc.py on etcd) --------

HEADNODES = 3
IMAGE_KIND, SERVER_KIND, INSTANCE_KIND = 3, 1, 2


def uuid_of(kind, n):
    return f"{kind:08x}-0000-4000-8000-{n:012x}"


def dc_servers(n_servers):
    """(Server, beats) of a DC of ``n_servers`` (the first 3 headnodes): one in
    ten does not beat (reads unreachable)."""
    from sdcadm.model import Server

    for i in range(n_servers):
        yield Server(
            uuid=uuid_of(SERVER_KIND, i), hostname=f"hn{i}" if i < HEADNODES else f"cn{i:05d}",
            admin_ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", headnode=i < HEADNODES,
            boot_platform="20240101T000000Z", agent_port=5309,
            current_platform="20240101T000000Z" if i % 7 else "20230101T000000Z"), bool(i % 10)


def dc_instances(n_instances, services, servers):
    """``n_instances`` Instances spread over ``servers`` (indexes), the services in
    turn, every one with non-empty params, one in 13 stopped."""
    from sdcadm.model import Instance

    for j in range(n_instances):
        service = services[j % len(services)]
        yield Instance(
            uuid=uuid_of(INSTANCE_KIND, j), alias=f"{service}{j}", service=service,
            server_uuid=uuid_of(SERVER_KIND, servers[j % len(servers)]),
            image=uuid_of(IMAGE_KIND, 1),
            admin_ip=f"10.{128 + (j >> 16 & 127)}.{j >> 8 & 255}.{j & 255}", port=8080,
            state="running" if j % 13 else "stopped", params={"n": j})



def loopback_labs(environ=os.environ):
    """Labs these benchmarks build are loopback ones, as the figures recorded
    in docs/performance.md were (as root a new lab is otherwise a netns one:
    sdcadm/lab/netns.py, ``default_isolation``). Call before building one."""
    environ.setdefault("SDCADM_LAB_ISOLATION", "loopback")


# This sdcadm tree (bench/..): the "new" side of a comparison with an older tree.
THIS_TREE = Path(__file__).resolve().parent.parent


def lab_in_tree(tree, *args, isolation=None, timeout=900):
    """``sdcadm lab ARGS`` of the sdcadm source tree ``tree``, run from its
    directory (``-m`` puts it first on sys.path) with PYTHONPATH on it, so
    that every process the lab starts (agents, fence agent) imports that
    tree's code too: the CompletedProcess. ``isolation``: the lab's, for a
    tree that knows $SDCADM_LAB_ISOLATION."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    env["PYTHONPATH"] = str(tree)
    if isolation:
        env["SDCADM_LAB_ISOLATION"] = isolation
    return subprocess.run([sys.executable, "-m", "sdcadm.cli.main", "lab", *args], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=timeout)

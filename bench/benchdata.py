"""Test data for the benchmarks: the same mix of file sizes everywhere, so
that figures from different benchmarks can be compared."""

import os
import random

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

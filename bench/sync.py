#!/usr/bin/env python3
"""Restore-data sync, side by side with the raw tools, on the same data.

    .venv/bin/python bench/sync.py                 # 1 GiB dataset
    .venv/bin/python bench/sync.py --quick         # 100 MiB
    .venv/bin/python bench/sync.py --sizes 100M,1G,4G   # growth

For each size: a dataset of mixed file sizes (64 MiB, 1 MiB and 4-64 KiB
files of random bytes) is written once as a plain directory and once into a
zfs-fuse dataset. Then, over the same loopback SSH (a LabSshd):

* dir: ``DirBackend.sync`` vs ``rsync -a`` (same ssh options): full copy,
  nothing-changed cycle, 1% changed (bytes moved);
* zfs: ``ZfsBackend.sync`` vs ``zfs snapshot`` + ``ssh zfs send | zfs recv``
  (no Python in the pipe) vs ``syncoid`` (package sanoid; installed with
  apt-get when missing and root; skipped with the reason if it cannot run),
  same three cycles, into the same receiving pool;
* the raw byte pipe: paramiko channel vs OpenSSH client (for send|recv).

Prints one JSON line (stdout) with every figure, the ratios ours/raw and
whether each meets the target (<= 1.15). Progress goes to stderr. It never
asserts. Needs root, zfs-fuse, sshd, rsync; leaves nothing behind (pools
destroyed, sshd stopped, zfs-fuse stopped only if it started it).
"""

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from benchdata import MiB, file_plan, parse_size, write_data  # noqa: E402 (bench/ is on sys.path)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sdcadm.datasets import zfspool  # noqa: E402
from sdcadm.datasets.base import SourceRef  # noqa: E402
from sdcadm.datasets.dirbackend import DirBackend  # noqa: E402
from sdcadm.datasets.zfsbackend import ZfsBackend  # noqa: E402
from sdcadm.lab.sshd import LabSshd  # noqa: E402
from sdcadm.transport import rsync  # noqa: E402
from sdcadm.transport.local import LocalShell  # noqa: E402
from sdcadm.transport.zfs import Zfs  # noqa: E402

TARGET = 1.15
RECEIVER = "b0000000-0000-4000-8000-000000000001"


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    value = fn(*args, **kwargs)
    return value, round(time.monotonic() - t0, 3)


def ratio(ours, theirs):
    return round(ours / theirs, 3) if ours and theirs else None


# -- data ------------------------------------------------------------------------

def change_percent(root, plan, fraction=0.01, seed=2):
    """Rewrite 64 KiB regions (128 KiB-aligned) of some files until
    ``fraction`` of the bytes changed; returns the bytes changed."""
    rng = random.Random(seed)
    total = sum(n for _, n in plan)
    want, changed = int(total * fraction), 0
    candidates = [(rel, n) for rel, n in plan if n >= 128 * 1024]
    while changed < want and candidates:
        rel, n = rng.choice(candidates)
        offset = rng.randrange(0, n // (128 * 1024)) * 128 * 1024
        with open(os.path.join(root, rel), "r+b") as f:
            f.seek(offset)
            f.write(rng.randbytes(64 * 1024))
        changed += 64 * 1024
    return changed


# -- raw tools ---------------------------------------------------------------------

def raw_rsync(transport, src, dest):
    args = ["rsync", "-a", "--stats", "-e", shlex.join(transport.ssh_argv()),
            rsync.remote_spec(transport.host, src), dest.rstrip("/") + "/"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"raw rsync exited {proc.returncode}: {proc.stderr[-500:]}")
    return rsync.parse_stats(proc.stdout).wire_bytes


def raw_zfs(transport, src_snapshot, target, base=None):
    """``ssh host zfs send [-i base] snap | zfs recv -F target``: no Python in the pipe."""
    send = ["zfs", "send", *(["-i", base] if base else []), src_snapshot]
    sender = subprocess.Popen(transport.command_argv(send), stdout=subprocess.PIPE)
    receiver = subprocess.Popen([zfspool.zfs_program("zfs"), "recv", "-F", target],
                                stdin=sender.stdout)
    sender.stdout.close()
    if receiver.wait() or sender.wait():
        raise RuntimeError(f"raw zfs send|recv of {src_snapshot} failed")


def stream_size(transport, src_snapshot, base=None):
    send = ["zfs", "send", *(["-i", base] if base else []), src_snapshot]
    proc = subprocess.Popen(transport.command_argv(send), stdout=subprocess.PIPE)
    n = 0
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
        n += len(chunk)
    proc.wait()
    return n


def syncoid_argv(sshd, host, src, target):
    """syncoid pulling over the lab's SSH, or locally when ``host`` is None."""
    argv = [shutil.which("syncoid") or "/usr/sbin/syncoid", "--no-privilege-elevation",
            "--compress=none", "--quiet", "--no-resume"]
    if host is None:
        return [*argv, src, target]
    return [*argv, f"--sshport={sshd.port}", f"--sshkey={sshd.identity}",
            "--sshoption=StrictHostKeyChecking=yes",
            f"--sshoption=UserKnownHostsFile={sshd.known_hosts}", f"root@{host}:{src}", target]


def ensure_syncoid():
    if shutil.which("syncoid") or os.path.exists("/usr/sbin/syncoid"):
        return None
    if os.geteuid() != 0:
        return "syncoid is not installed and only root can install it (apt-get install sanoid)"
    say("installing sanoid (for syncoid) with apt-get ...")
    proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "sanoid"],
                          capture_output=True, text=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if proc.returncode:
        return f"apt-get install sanoid failed: {proc.stderr.strip()[-300:]}"
    return None


def run_syncoid(sshd, host, src, target):
    proc = subprocess.run(syncoid_argv(sshd, host, src, target), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"syncoid exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()[-400:]}")


# -- byte pipe: paramiko vs OpenSSH ----------------------------------------------------

def pipe_compare(transport, size):
    argv = ["head", "-c", str(size), "/dev/zero"]
    out = {"bytes": size}
    try:
        result, seconds = timed(transport.run_bytes, argv)
        out["paramiko_s"] = seconds
        out["paramiko_MBps"] = round(len(result.stdout) / seconds / 1e6, 1)
    except Exception as e:  # noqa: BLE001 - a bench reports, never fails
        out["paramiko_error"] = str(e).splitlines()[0]

    def openssh():
        proc = subprocess.Popen(transport.command_argv(argv), stdout=subprocess.PIPE)
        n = 0
        for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
            n += len(chunk)
        proc.wait()
        return n
    n, seconds = timed(openssh)
    out["openssh_s"] = seconds
    out["openssh_MBps"] = round(n / seconds / 1e6, 1)
    return out


# -- one size ------------------------------------------------------------------------------

def bench_dir(work, sshd, host, plan):
    say("  dir: writing source ...")
    src = os.path.join(work, "dir-src")
    write_data(src, plan)
    transport = sshd.transport(host)
    backend = DirBackend(transport_factory=lambda h: sshd.transport(h))
    ref = SourceRef("s", "cn0", host, str(uuid.uuid4()), src)
    rep, raw = os.path.join(work, "dir-ours"), os.path.join(work, "dir-raw")
    out = {}
    say("  dir: full ...")
    full, out["ours_full_s"] = timed(backend.sync, ref, rep, RECEIVER)
    out["ours_full_bytes"] = full.bytes_moved
    out["ours_full_phases"] = full.timings
    out["raw_full_bytes"], out["raw_full_s"] = timed(raw_rsync, transport, src, raw)
    say("  dir: nothing changed ...")
    same, out["ours_nochange_s"] = timed(backend.sync, ref, rep, RECEIVER)
    out["ours_nochange_bytes"] = same.bytes_moved
    out["ours_nochange_phases"] = same.timings
    out["raw_nochange_bytes"], out["raw_nochange_s"] = timed(raw_rsync, transport, src, raw)
    say("  dir: 1% changed ...")
    out["changed_bytes"] = change_percent(src, plan)
    one, out["ours_1pct_s"] = timed(backend.sync, ref, rep, RECEIVER)
    out["ours_1pct_bytes"] = one.bytes_moved
    out["ours_1pct_phases"] = one.timings
    out["raw_1pct_bytes"], out["raw_1pct_s"] = timed(raw_rsync, transport, src, raw)
    for key in ("full", "nochange", "1pct"):
        out[f"ratio_{key}"] = ratio(out[f"ours_{key}_s"], out[f"raw_{key}_s"])
        out[f"ratio_{key}_without_hashing"] = ratio(
            out[f"ours_{key}_s"] - out[f"ours_{key}_phases"].get("hash", 0), out[f"raw_{key}_s"])
    out["moved_over_changed_1pct"] = ratio(out["ours_1pct_bytes"], out["changed_bytes"])
    transport.close()
    shutil.rmtree(src)
    shutil.rmtree(rep)
    shutil.rmtree(raw)
    return out


def bench_zfs(work, sshd, host, plan, size, syncoid_problem):
    zfs = Zfs(LocalShell(), zfspool.zfs_program("zfs"))
    tag = uuid.uuid4().hex[:6]
    spool, rpool = f"sdcbsrc{tag}", f"sdcbdst{tag}"
    sfile, rfile = os.path.join(work, f"{spool}.img"), os.path.join(work, f"{rpool}.img")
    zfspool.create_pool(spool, sfile, str(int(size * 1.6) + 512 * MiB))
    # the receiving pool holds 4 copies: ours, raw over SSH, syncoid, raw local
    zfspool.create_pool(rpool, rfile, str(int(size * 4.8) + 1024 * MiB))
    backend = None
    out = {}
    try:
        instance = str(uuid.uuid4())
        mnt = os.path.join(work, "zones", instance, "data")
        dataset = zfspool.create_source_dataset(zfs, spool, instance, mnt)
        say("  zfs: writing source ...")
        write_data(mnt, plan)
        transport = sshd.transport(host)
        backend = ZfsBackend(f"{rpool}/ours", transport_factory=lambda h: sshd.transport(h))
        ref = SourceRef("s", "cn0", host, instance, mnt, dataset)
        rep = os.path.join(work, "zfs-ours")
        zfs.create(f"{rpool}/raw", {"mountpoint": "none"})
        zfs.create(f"{rpool}/syncoid", {"mountpoint": "none"})
        remote = Zfs(transport)

        def raw_local(n, base=None):
            """The same pipe without SSH (the reference for syncoid's local mode)."""
            snap = f"{dataset}@local{n}"
            t0 = time.monotonic()
            zfs.snapshot(snap)
            raw_zfs(LocalShell(), snap, f"{rpool}/raw/local", base)
            return round(time.monotonic() - t0, 3), snap

        def raw_cycle(n, base=None):
            snap = f"{dataset}@raw{n}"
            t0 = time.monotonic()
            remote.snapshot(snap)
            raw_zfs(transport, snap, f"{rpool}/raw/x", base)
            return round(time.monotonic() - t0, 3), snap

        def syncoid_cycle(key):
            """Over SSH like ours; if syncoid cannot (2.1.0 lists remote
            snapshots with `zfs get -t`, which zfs-fuse lacks, and its
            fallback breaks over SSH), locally: same pools, no SSH."""
            if syncoid_problem:
                out["syncoid_error"] = syncoid_problem
                return
            if out.get("syncoid_mode") != "local":
                try:
                    _, out[f"syncoid_{key}_s"] = timed(run_syncoid, sshd, host, dataset,
                                                       f"{rpool}/syncoid/x")
                    out["syncoid_mode"] = "ssh"
                    return
                except Exception as e:  # noqa: BLE001
                    out["syncoid_ssh_error"] = str(e).splitlines()[-1][:300]
                    out["syncoid_mode"] = "local"
                    if key != "full":
                        return
            try:
                _, out[f"syncoid_local_{key}_s"] = timed(run_syncoid, sshd, None, dataset,
                                                         f"{rpool}/syncoid/x")
            except Exception as e:  # noqa: BLE001
                out["syncoid_error"] = str(e)[:300]

        local = {}

        def local_cycle(key, n):
            if out.get("syncoid_mode") == "local" and "raw_local_error" not in out:
                try:
                    out[f"raw_local_{key}_s"], local[n] = raw_local(n, local.get(n - 1))
                except Exception as e:  # noqa: BLE001 - a bench reports, never fails
                    out["raw_local_error"] = str(e)[:300]

        say("  zfs: full ...")
        full, out["ours_full_s"] = timed(backend.sync, ref, rep, RECEIVER)
        out["ours_full_bytes"] = full.bytes_moved
        out["ours_full_phases"] = full.timings
        out["raw_full_s"], snap1 = raw_cycle(1)
        syncoid_cycle("full")
        local_cycle("full", 1)
        say("  zfs: nothing changed ...")
        same, out["ours_nochange_s"] = timed(backend.sync, ref, rep, RECEIVER)
        out["ours_nochange_bytes"] = same.bytes_moved
        out["ours_nochange_phases"] = same.timings
        out["raw_nochange_s"], snap2 = raw_cycle(2, snap1)
        out["raw_nochange_bytes"] = stream_size(transport, snap2, snap1)
        syncoid_cycle("nochange")
        local_cycle("nochange", 2)
        say("  zfs: 1% changed ...")
        out["changed_bytes"] = change_percent(mnt, plan)
        one, out["ours_1pct_s"] = timed(backend.sync, ref, rep, RECEIVER)
        out["ours_1pct_bytes"] = one.bytes_moved
        out["ours_1pct_phases"] = one.timings
        out["raw_1pct_s"], snap3 = raw_cycle(3, snap2)
        out["raw_1pct_bytes"] = stream_size(transport, snap3, snap2)
        syncoid_cycle("1pct")
        local_cycle("1pct", 3)
        for key in ("full", "nochange", "1pct"):
            out[f"ratio_{key}"] = ratio(out[f"ours_{key}_s"], out[f"raw_{key}_s"])
            out[f"ratio_{key}_without_hashing"] = ratio(
                out[f"ours_{key}_s"] - out[f"ours_{key}_phases"].get("hash", 0),
                out[f"raw_{key}_s"])
            if f"syncoid_{key}_s" in out:  # both over SSH
                out[f"ratio_{key}_vs_syncoid"] = ratio(out[f"ours_{key}_s"],
                                                       out[f"syncoid_{key}_s"])
            if f"syncoid_local_{key}_s" in out:  # syncoid's own overhead, both without SSH
                out[f"syncoid_local_over_raw_local_{key}"] = ratio(
                    out[f"syncoid_local_{key}_s"], out.get(f"raw_local_{key}_s"))
        out["moved_over_changed_1pct"] = ratio(out["ours_1pct_bytes"], out["changed_bytes"])
        transport.close()
    finally:
        if backend is not None:
            backend.close()
        for pool, file in ((rpool, rfile), (spool, sfile)):
            try:
                zfspool.destroy_pool(pool, file)
            except Exception as e:  # noqa: BLE001
                say(f"  could not destroy pool {pool}: {e}")
    return out


def machine():
    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return None
    dpkg = shutil.which("dpkg-query")
    zfs_fuse = version([dpkg, "-W", "-f=${Version}", "zfs-fuse"]) if dpkg else None
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "rsync": version(["rsync", "--version"]), "openssh": version(["ssh", "-V"]),
            "zfs_fuse": zfs_fuse}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="dataset size (default 1G)")
    ap.add_argument("--quick", action="store_true", help="100 MiB")
    ap.add_argument("--sizes", help="comma-separated sizes for a growth run, e.g. 100M,1G,4G")
    ap.add_argument("--skip-zfs", action="store_true")
    ap.add_argument("--skip-dir", action="store_true")
    ap.add_argument("--workdir", help="where the data and pool files go (default: a temp dir)")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")] if args.sizes else \
        [100 * MiB if args.quick else parse_size(args.size)]
    work = tempfile.mkdtemp(prefix="sdcadm-bench-", dir=args.workdir)
    result = {"bench": "restore-data-sync", "target_ratio": TARGET, "machine": machine(),
              "runs": []}
    host = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.1"
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    sshd = LabSshd(os.path.join(work, "sshd"), [host], port)
    started = None
    try:
        sshd.setup()
        sshd.start()
        if not args.skip_zfs:
            zfs_problem = None
            try:
                started = zfspool.ensure_zfs_fuse()
            except Exception as e:  # noqa: BLE001
                zfs_problem = str(e)
            syncoid_problem = ensure_syncoid()
        transport = sshd.transport(host)
        result["pipe"] = pipe_compare(transport, min(max(sizes), 256 * MiB))
        transport.close()
        for size in sizes:
            say(f"size {human(size)}:")
            plan = file_plan(size)
            run = {"size_bytes": size, "files": len(plan)}
            # A directory per size: replicas of one size must not meet the next
            # size's pools (a replica dir names the pool it belongs to).
            top, work = work, os.path.join(work, f"size-{size}")
            os.makedirs(work)
            if not args.skip_dir:
                try:
                    run["dir"] = bench_dir(work, sshd, host, plan)
                except Exception as e:  # noqa: BLE001
                    run["dir"] = {"error": f"{type(e).__name__}: {e}"[:500]}
            if not args.skip_zfs:
                try:
                    run["zfs"] = ({"error": zfs_problem} if zfs_problem else
                                  bench_zfs(work, sshd, host, plan, size, syncoid_problem))
                except Exception as e:  # noqa: BLE001 - a bench reports, never fails
                    run["zfs"] = {"error": f"{type(e).__name__}: {e}"[:500]}
            result["runs"].append(run)
            shutil.rmtree(work, ignore_errors=True)
            work = top
    finally:
        sshd.stop()
        zfspool.stop_zfs_fuse(started)
        shutil.rmtree(work, ignore_errors=True)
    def worst(suffix):
        values = [run.get(part, {}).get(f"ratio_{key}{suffix}") for run in result["runs"]
                  for part in ("dir", "zfs") for key in ("full", "nochange", "1pct")]
        values = [v for v in values if v is not None]
        return max(values) if values else None
    result["worst_ratio"] = worst("")                      # ours / raw, wall time
    result["worst_ratio_without_hashing"] = worst("_without_hashing")
    result["meets_target"] = result["worst_ratio"] is not None and result["worst_ratio"] <= TARGET
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()

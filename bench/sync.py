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
import statistics
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

TARGET = 1.15            # full and 1% changed: ours / raw
TARGET_NOCHANGE = 1.5    # nothing changed
CYCLES = ("full", "nochange", "1pct")
QUIET_S = 3.1   # > the dir gate's 2 s margin, measured with whole-second `date`
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

def quiet(seconds=QUIET_S):
    """Leave the source unwritten for ``seconds``: the dir sync records a
    fingerprint only when nothing changed within its 2 s margin, as between
    two cycles a minute apart (a source written just before a sync is copied
    again by the next one)."""
    time.sleep(seconds)


def paired(out, key, ours_s, raw_s):
    out.setdefault(f"ours_{key}_runs_s", []).append(ours_s)
    out.setdefault(f"raw_{key}_runs_s", []).append(raw_s)
    out.setdefault(f"ratio_{key}_runs", []).append(ratio(ours_s, raw_s))


def summarize(out, keys=CYCLES):
    """Medians of the paired runs: times, and the median of the per-pair ratios."""
    for key in keys:
        if f"ratio_{key}_runs" not in out:
            continue
        out[f"ours_{key}_s"] = round(statistics.median(out[f"ours_{key}_runs_s"]), 3)
        out[f"raw_{key}_s"] = round(statistics.median(out[f"raw_{key}_runs_s"]), 3)
        out[f"ratio_{key}"] = round(statistics.median(r for r in out[f"ratio_{key}_runs"] if r), 3)
        hashing = [ph.get("hash", 0) for ph in out.get(f"ours_{key}_phases", [])]
        if hashing:
            out[f"ratio_{key}_without_hashing"] = round(statistics.median(
                ratio(o - h, r) for o, h, r in zip(out[f"ours_{key}_runs_s"], hashing,
                                                   out[f"raw_{key}_runs_s"])), 3)


def load():
    return round(os.getloadavg()[0], 2)


def bench_dir(work, sshd, host, plan, repeat):
    say("  dir: writing source ...")
    src = os.path.join(work, "dir-src")
    write_data(src, plan)
    transport = sshd.transport(host)
    backend = DirBackend(transport_factory=lambda h: sshd.transport(h))
    ref = SourceRef("s", "cn0", host, str(uuid.uuid4()), src)
    out = {"repeat": repeat, "loadavg_1m": [load()]}
    for rep in range(repeat):
        rep_dir, raw = os.path.join(work, f"dir-ours-{rep}"), os.path.join(work, f"dir-raw-{rep}")
        quiet()
        say(f"  dir run {rep + 1}/{repeat}: full, nothing changed, 1% (load {load()}) ...")
        for key in CYCLES:
            if key == "1pct":
                out.setdefault("changed_bytes", change_percent(src, plan, seed=2 + rep))
            ours, ours_s = timed(backend.sync, ref, rep_dir, RECEIVER)
            raw_bytes, raw_s = timed(raw_rsync, transport, src, raw)
            paired(out, key, ours_s, raw_s)
            out.setdefault(f"ours_{key}_phases", []).append(ours.timings)
            out.setdefault(f"ours_{key}_unchanged", []).append(ours.unchanged)
            out[f"ours_{key}_bytes"], out[f"raw_{key}_bytes"] = ours.bytes_moved, raw_bytes
        out["loadavg_1m"].append(load())
        shutil.rmtree(rep_dir)
        shutil.rmtree(raw)
    summarize(out)
    out["moved_over_changed_1pct"] = ratio(out["ours_1pct_bytes"], out["changed_bytes"])
    transport.close()
    shutil.rmtree(src)
    return out


def bench_zfs(work, sshd, host, plan, size, syncoid_problem, repeat):
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

        out["repeat"], out["loadavg_1m"] = repeat, [load()]
        for rep in range(repeat):
            say(f"  zfs run {rep + 1}/{repeat}: full, nothing changed, 1% (load {load()}) ...")
            rep_dir = os.path.join(work, f"zfs-ours-{rep}")
            raw_snaps = []

            def raw_cycle(n, base=None):
                snap = f"{dataset}@raw{rep}-{n}"
                t0 = time.monotonic()
                remote.snapshot(snap)
                raw_zfs(transport, snap, f"{rpool}/raw/x{rep}", base)
                raw_snaps.append(snap)
                return round(time.monotonic() - t0, 3), snap

            base = None
            for n, key in enumerate(CYCLES, 1):
                if key == "1pct":
                    out.setdefault("changed_bytes", change_percent(mnt, plan, seed=2 + rep))
                ours, ours_s = timed(backend.sync, ref, rep_dir, RECEIVER)
                raw_s, snap = raw_cycle(n, base)
                paired(out, key, ours_s, raw_s)
                out.setdefault(f"ours_{key}_phases", []).append(ours.timings)
                out.setdefault(f"ours_{key}_unchanged", []).append(ours.unchanged)
                out.setdefault(f"ours_{key}_read_back", []).append(ours.read_back)
                out[f"ours_{key}_bytes"] = ours.bytes_moved
                if base is not None and rep == 0:
                    out[f"raw_{key}_bytes"] = stream_size(transport, snap, base)
                if rep == 0:
                    syncoid_cycle(key)
                    local_cycle(key, n)
                base = snap
            out["loadavg_1m"].append(load())
            backend.destroy(rep_dir)
            zfs.destroy(f"{rpool}/raw/x{rep}", recursive=True, busy_timeout=10)
            for snap in raw_snaps:
                remote.destroy(snap)
        summarize(out)
        for key in CYCLES:
            if f"syncoid_{key}_s" in out:  # both over SSH
                out[f"ratio_{key}_vs_syncoid"] = ratio(out[f"ours_{key}_runs_s"][0],
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
    ap.add_argument("--repeat", type=int, default=5,
                    help="paired runs per size and backend (ours, raw, ours, raw ...; "
                         "medians reported; default 5)")
    ap.add_argument("--skip-zfs", action="store_true")
    ap.add_argument("--skip-dir", action="store_true")
    ap.add_argument("--workdir", help="where the data and pool files go (default: a temp dir)")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")] if args.sizes else \
        [100 * MiB if args.quick else parse_size(args.size)]
    work = tempfile.mkdtemp(prefix="sdcadm-bench-", dir=args.workdir)
    result = {"bench": "restore-data-sync", "target_ratio": TARGET,
              "target_ratio_nochange": TARGET_NOCHANGE, "machine": machine(),
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
                    run["dir"] = bench_dir(work, sshd, host, plan, args.repeat)
                except Exception as e:  # noqa: BLE001
                    run["dir"] = {"error": f"{type(e).__name__}: {e}"[:500]}
            if not args.skip_zfs:
                try:
                    run["zfs"] = ({"error": zfs_problem} if zfs_problem else
                                  bench_zfs(work, sshd, host, plan, size, syncoid_problem,
                                            args.repeat))
                except Exception as e:  # noqa: BLE001 - a bench reports, never fails
                    run["zfs"] = {"error": f"{type(e).__name__}: {e}"[:500]}
            result["runs"].append(run)
            shutil.rmtree(work, ignore_errors=True)
            work = top
    finally:
        sshd.stop()
        zfspool.stop_zfs_fuse(started)
        shutil.rmtree(work, ignore_errors=True)
    def target(key):
        return TARGET_NOCHANGE if key == "nochange" else TARGET

    met = {f"{part}_{run['size_bytes']}_{key}": run[part][f"ratio_{key}"] <= target(key)
           for run in result["runs"] for part in ("dir", "zfs")
           for key in CYCLES if run.get(part, {}).get(f"ratio_{key}") is not None}
    result["target_met"] = met
    result["meets_target"] = bool(met) and all(met.values())
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()

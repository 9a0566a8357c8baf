"""zfs for the lab and the agent: the zfs-fuse daemon, file-backed pools,
instances' delegate datasets.

Functions (all raise DatasetError with a fix in the hint):

* ``zfs_program(name)`` -> absolute path of ``zfs``/``zpool``/``zfs-fuse``
  (``fsutil.find_program``: also looked for in /usr/sbin and /sbin).
* ``zfs_fuse_pids()`` -> pids of running ``zfs-fuse`` daemons (by /proc comm).
* ``ensure_zfs_fuse(log_path=None, timeout=15.0)`` -> pid of a daemon *this
  call started*, or None when one was already running (or OpenZFS is in the
  kernel). Pass a non-None pid to ``stop_zfs_fuse(pid)`` to put things back
  as they were; never stop a daemon you did not start.
* ``create_pool(name, file, size="512M")`` -> name: ``truncate -s SIZE file;
  zpool create -f -m none NAME file`` (nothing mounted by default).
* ``destroy_pool(name, file=None)``: ``zpool destroy -f`` then removes ``file``.
* ``create_source_dataset(zfs, pool, instance_uuid, mountpoint)`` -> dataset
  name ``<pool>/zones/<uuid>/data``, created (with parents, which mount
  nowhere) and mounted at ``mountpoint`` (e.g. ``<root>/zones/<uuid>/data``);
  an existing one is re-pointed at ``mountpoint``. ``zfs`` is a
  ``sdcadm.transport.zfs.Zfs``. Give that name to ``SourceRef.zfs_dataset``.
* ``destroy_source_dataset(zfs, dataset)``: destroys it with its snapshots
  (the holds receivers recorded in ``sdcadm:hold:<receiver>`` are
  released first: a source being destroyed needs no replica base).

``pool`` may also be a dataset (``lab/hn0``): sdcadm only ever creates
datasets below it, which lets several lab servers share one pool.
"""

import logging
import os
import signal
import subprocess
import time

from sdcadm.datasets.plan import HOLD_PROPERTY_PREFIX
from sdcadm.errors import DatasetError, ZfsError, ZfsNoSuchHold
from sdcadm.fsutil import find_program
from sdcadm.transport.zfs import Zfs

log = logging.getLogger(__name__)


def zfs_program(name):
    """``find_program`` with what every zfs caller says when it is missing."""
    return find_program(name, DatasetError, "the zfs dataset backend")


def zfs_fuse_pids():
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "zfs-fuse":
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _zfs_answers(zpool):
    proc = subprocess.run([zpool, "list"], capture_output=True, text=True)
    return proc.returncode == 0 or "no pools available" in (proc.stdout + proc.stderr)


def ensure_zfs_fuse(log_path=None, timeout=15.0):
    """Start the zfs-fuse daemon unless zfs already answers; return the pid
    started (or None)."""
    zpool = zfs_program("zpool")
    if zfs_fuse_pids() or (os.path.exists("/dev/zfs") and _zfs_answers(zpool)):
        return None
    if os.geteuid() != 0:
        raise DatasetError("the zfs-fuse daemon is not running and only root can start it",
                           hint="run as root, or start it: sudo zfs-fuse")
    daemon = zfs_program("zfs-fuse")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([daemon, "--no-daemon"], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log_path:
            out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DatasetError(f"zfs-fuse exited {proc.returncode} at start",
                               hint=f"see {log_path}" if log_path else "run zfs-fuse --no-daemon "
                                    "by hand to see why")
        if _zfs_answers(zpool):
            log.info("started zfs-fuse (pid %d)", proc.pid)
            return proc.pid
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise DatasetError(f"zfs-fuse did not answer within {timeout:g} s")


def stop_zfs_fuse(pid, timeout=15.0):
    """Stop a daemon ``ensure_zfs_fuse`` started (by its pid only)."""
    if not pid or pid not in zfs_fuse_pids():
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid in zfs_fuse_pids() and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if pid in zfs_fuse_pids():
        os.kill(pid, signal.SIGKILL)


def _run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DatasetError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def create_pool(name, file, size="512M"):
    file = os.path.abspath(file)
    os.makedirs(os.path.dirname(file), exist_ok=True)
    with open(file, "ab"):
        pass
    os.truncate(file, _size_bytes(size))
    _run([zfs_program("zpool"), "create", "-f", "-m", "none", name, file])
    return name


def destroy_pool(name, file=None, busy_timeout=10.0):
    zpool = zfs_program("zpool")
    deadline = time.monotonic() + busy_timeout
    while True:  # zfs-fuse calls a pool busy for a moment after its datasets were used
        proc = subprocess.run([zpool, "destroy", "-f", name], capture_output=True, text=True)
        if "is busy" not in proc.stderr or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if proc.returncode != 0 and "no such pool" not in proc.stderr:
        raise DatasetError(f"zpool destroy {name} exited {proc.returncode}: {proc.stderr.strip()}",
                           hint="something still uses its datasets (a shell in a mountpoint?)")
    if file:
        try:
            os.unlink(file)
        except FileNotFoundError:
            pass


def _size_bytes(size):
    text = str(size).strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def source_dataset_name(pool, instance_uuid):
    return f"{pool}/zones/{instance_uuid}/data"


def create_source_dataset(zfs, pool, instance_uuid, mountpoint):
    """The delegate dataset of an instance, mounted at ``mountpoint``."""
    name = source_dataset_name(pool, instance_uuid)
    mountpoint = os.path.abspath(mountpoint)
    if zfs.exists(name):
        if zfs.get_one(name, "mountpoint") != mountpoint:
            zfs.set(name, "mountpoint", mountpoint)
        return name
    parent = name.rsplit("/", 1)[0]
    if not zfs.exists(parent):
        zfs.create(parent, {"mountpoint": "none"}, parents=True)
    zfs.create(name, {"mountpoint": mountpoint})
    return name


def destroy_source_dataset(zfs, dataset):
    if not zfs.exists(dataset):
        return
    for snap in zfs.snapshots(dataset):
        if snap.userrefs:
            _release_all(zfs, snap)
    zfs.destroy(dataset, recursive=True, busy_timeout=10.0)


def _release_all(zfs, snap):
    # `zfs holds` is broken on zfs-fuse: each receiver records its tag in the
    # snapshot's sdcadm:hold:<receiver> property when it holds it.
    props = zfs.get(snap.name, ("all",)).get(snap.name, {})
    for prop, tag in props.items():
        if not prop.startswith(HOLD_PROPERTY_PREFIX) or not tag:
            continue
        try:
            zfs.release(tag, snap.name)
        except ZfsNoSuchHold:
            pass
        except ZfsError as e:
            log.warning("cannot release %s on %s: %s", tag, snap.name, e)


__all__ = ["zfs_program", "zfs_fuse_pids", "ensure_zfs_fuse", "stop_zfs_fuse", "create_pool",
           "destroy_pool", "create_source_dataset", "destroy_source_dataset",
           "source_dataset_name", "Zfs"]

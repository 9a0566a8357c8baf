"""The lab's zfs backend: a file-backed pool per server on zfs-fuse.

Pools are named ``sdcadm<6 hex of the lab dir>-<hostname>`` so that two labs
never collide, with their files in ``<lab>/zfs/``. The lab starts the
zfs-fuse daemon when none runs (and records it, to stop it on ``lab down``);
``lab up``/``start`` import the pools again after a daemon restart.
"""

import hashlib
import os
import subprocess

from sdcadm.errors import LabError

DEFAULT_POOL_SIZE = "1G"


def pool_prefix(directory):
    return "sdcadm" + hashlib.sha256(str(directory).encode()).hexdigest()[:6]


def plan_pools(directory, hostnames):
    return {h: f"{pool_prefix(directory)}-{h}" for h in hostnames}


def source_pool_template(directory):
    return pool_prefix(directory) + "-{hostname}"


def pool_dir(state):
    return state.path / "zfs"


def _zpool():
    from sdcadm.datasets.zfspool import zfs_program

    return zfs_program("zpool")


def _imported():
    out = subprocess.run([_zpool(), "list", "-H", "-o", "name"], capture_output=True, text=True)
    return set(out.stdout.split()) if out.returncode == 0 else set()


def require_root():
    if os.geteuid() != 0:
        raise LabError("the zfs backend needs root (zfs-fuse mounts pools through FUSE)",
                       hint="run as root, or use the dir backend (--backend dir)")


def start_daemon(state):
    """Make sure zfs-fuse runs; remember it when the lab started it."""
    from sdcadm.datasets.zfspool import ensure_zfs_fuse

    pid = ensure_zfs_fuse(log_path=str(pool_dir(state) / "zfs-fuse.log"))
    if pid:
        state.zfs["daemon_pid"] = pid
    return pid


def create_pools(state):
    from sdcadm.datasets.zfspool import create_pool

    require_root()
    pool_dir(state).mkdir(parents=True, exist_ok=True)
    start_daemon(state)
    for hostname, name in state.zfs["pools"].items():
        create_pool(name, str(pool_dir(state) / f"{hostname}.img"), size=state.zfs["pool_size"])


def ensure_pools(state):
    """After a daemon restart the pools are not imported: import them."""
    start_daemon(state)
    have = _imported()
    for name in state.zfs["pools"].values():
        if name not in have:
            out = subprocess.run([_zpool(), "import", "-d", str(pool_dir(state)), name],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise LabError(f"cannot import the lab's pool {name}: {out.stderr.strip()}",
                               hint="`sdcadm lab destroy` and `sdcadm lab up` rebuild the lab")


def stop_daemon(state):
    """Stop zfs-fuse if this lab started it (never one it found running)."""
    from sdcadm.datasets.zfspool import stop_zfs_fuse

    pid = state.zfs.get("daemon_pid")
    if pid:
        stop_zfs_fuse(pid)
        state.zfs["daemon_pid"] = None


def destroy_pools(state):
    from sdcadm.datasets.zfspool import destroy_pool

    if not state.zfs:
        return
    try:
        ensure_pools(state)
    except LabError:
        pass
    for hostname, name in state.zfs["pools"].items():
        try:
            destroy_pool(name, str(pool_dir(state) / f"{hostname}.img"))
        except Exception as e:  # noqa: BLE001 - destroy what can be destroyed, say what not
            raise LabError(f"cannot destroy the lab's pool {name}: {e}") from None
    stop_daemon(state)

"""The lab on the zfs backend (zfs-fuse, file-backed pool per server): the
drill end to end, then `lab destroy` leaves no pool and no process behind."""

import json
import os
import shutil
import subprocess

import pytest

from sdcadm.lab import procs
from sdcadm.lab.zfs import pool_prefix
from tests.conftest import needs_sshd, random_net, run

pytestmark = [
    pytest.mark.integration, pytest.mark.zfs, needs_sshd,
    pytest.mark.skipif(os.geteuid() != 0, reason="the zfs backend needs root (FUSE mounts)"),
    pytest.mark.skipif(shutil.which("zfs-fuse", path="/usr/sbin:/usr/bin:/sbin") is None,
                       reason="zfs-fuse not installed (apt-get install zfs-fuse; "
                              "`make test` does it as root)"),
]


def pools():
    out = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True)
    return out.stdout.split()


def test_drill_on_zfs_then_destroy_leaves_nothing(tmp_path):
    directory = tmp_path / "dc"
    try:
        out = run("sdcadm", "lab", "drill", "-j", "--dir", str(directory), "--net", random_net(),
                  "--headnodes", "3", "--computenodes", "0", "--backend", "zfs",
                  "--services", "sapi,imgapi,vmapi,binder")
        result = json.loads(out.stdout)
        assert result["ok"] and result["fencing_verified"]
        assert result["services_restored"] == 3
        assert result["canaries_verified"] == result["canaries_written_before_sync"] > 0
        mine = [p for p in pools() if p.startswith(pool_prefix(directory))]
        assert len(mine) == 3  # one pool per server (3 headnodes: the etcd quorum)
    finally:
        run("sdcadm", "lab", "destroy", "--dir", str(directory), check=False)
    assert not [p for p in pools() if p.startswith(pool_prefix(directory))]
    assert procs.lab_processes(directory) == []

"""Pulling another headnode's copy of one instance (``restore_data/peer_copy.py``)
over real files: hn1 syncs (tests/unit/restore_dc.py), its restore data is
hn2's, and hn3 (empty) pulls sapi0's copy from hn2 through a transport that
reads local files and the in-process copy backend. What hn3 ends up with must
be a copy its own RestoreData reads and verifies; a copy that does not match
its signed manifest, or is not the one offered, changes nothing on hn3.
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sdcadm.config import load_config
from sdcadm.errors import DatasetError, RestoreDataBroken
from sdcadm.model import Server
from sdcadm.restore_data.access import RestoreData
from sdcadm.restore_data.manifest import checksum
from sdcadm.restore_data.peer_copy import PeerCopyRefused, PeerPull, peer_restore_dir
from sdcadm.transport.interface import Result
from tests.unit.restore_dc import SAPI, VMAPI, CopyBackend, dc  # noqa: F401 (a fixture)

HN2 = Server("22222222-2222-4222-8222-222222222222", "hn2", "127.0.0.4", headnode=True)
HN3 = "33333333-3333-4333-8333-333333333333"


class LocalFiles:
    """``head -c N PATH`` on this machine: the only command PeerPull sends."""

    def __init__(self):
        self.argvs = []

    def run_bytes(self, argv, input=None, check=True, timeout=None):
        self.argvs.append(argv)
        assert argv[:2] == ["head", "-c"], argv
        return Result(0, Path(argv[3]).read_bytes()[:int(argv[2])], b"")

    def close(self):
        pass


class PullBackend(CopyBackend):
    def copy_path(self, replica_dir, snapshot=None):
        return str(Path(replica_dir) / "snapshots" / snapshot)

    def drop_copy(self, replica_dir, name, back_to=None):
        shutil.rmtree(Path(replica_dir) / "snapshots" / name)
        (Path(replica_dir) / "current").unlink(missing_ok=True)
        if back_to:
            (Path(replica_dir) / "current").symlink_to(f"snapshots/{back_to}")


@pytest.fixture
def peers(dc):
    """(hn3's RestoreData, hn2's restore data dir, hn2's sapi manifest doc)."""
    summary, _ = dc.sync()
    assert summary.ok, summary
    hn2_rd = dc.tmp / "hn2" / "rd"
    shutil.copytree(dc.layout.root, hn2_rd, symlinks=True)
    cfg = yaml.safe_load((dc.tmp / "hn1.yaml").read_text())
    cfg.update(server_uuid=HN3, hostname="hn3", root=str(dc.tmp / "hn3"),
               restore_data_dir=str(dc.tmp / "hn3" / "rd"))
    (dc.tmp / "hn3.yaml").write_text(yaml.safe_dump(cfg))
    data = RestoreData(load_config(dc.tmp / "hn3.yaml", environ={}), backend=PullBackend())
    manifest = json.loads((hn2_rd / "svc-sapi" / "manifest.json").read_text())
    return data, hn2_rd, manifest


def pull(data, manifest, uuid=SAPI, service="sapi", offered=None):
    offered = manifest["instances"][uuid]["last_success"] if offered is None else offered
    return PeerPull(data, transports=lambda host: LocalFiles()).pull(HN2, service, uuid, offered)


def test_the_peer_restore_dir_is_ours_under_the_peers_root(peers):
    data, hn2_rd, _ = peers
    assert peer_restore_dir(data.config, HN2) == hn2_rd


def test_a_pulled_copy_is_ours_and_verifies(peers):
    data, _, manifest = peers
    got = pull(data, manifest)
    assert got["last_success"] == manifest["instances"][SAPI]["last_success"]
    copy = data.instance_copy(SAPI, "sapi")
    assert copy.as_of == got["last_success"] and copy.snapshot == got["snapshot"]
    assert data.verify_copy(copy) == []
    ours = json.loads(data.layout.manifest("sapi").read_text())
    assert ours["receiver"]["hostname"] == "hn3"
    # Pulling again (a re-run) gives a copy that verifies as well.
    pull(data, manifest)
    assert data.verify_copy(data.instance_copy(SAPI, "sapi")) == []


def test_an_instance_without_a_dataset_brings_its_files_only(peers):
    data, hn2_rd, _ = peers
    vmapi = json.loads((hn2_rd / "svc-vmapi" / "manifest.json").read_text())
    got = pull(data, vmapi, VMAPI, "vmapi")
    assert got["snapshot"] is None and got["bytes_moved"] == 0
    assert data.verify_copy(data.instance_copy(VMAPI, "vmapi")) == []


def nothing_here(data):
    assert not data.layout.manifest("sapi").exists()
    replica = data.layout.dataset_dir("sapi", SAPI) / "snapshots"
    assert not replica.exists() or list(replica.iterdir()) == []


def test_a_forged_manifest_is_refused_and_changes_nothing(peers):
    data, hn2_rd, manifest = peers
    manifest["instances"][SAPI]["last_success"] += 3600        # looks an hour newer
    manifest["checksum"] = checksum(manifest)                   # consistent, but not signed
    (hn2_rd / "svc-sapi" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RestoreDataBroken, match="signature"):
        pull(data, manifest)
    nothing_here(data)


def test_a_dataset_file_changed_on_the_peer_is_refused_and_changes_nothing(peers):
    data, hn2_rd, manifest = peers
    snap = manifest["instances"][SAPI]["dataset"]["snapshot"]
    (hn2_rd / "svc-sapi" / "datasets" / SAPI / "snapshots" / snap / "canary").write_bytes(b"HELLO")
    with pytest.raises(PeerCopyRefused, match="changed: canary"):
        pull(data, manifest)
    nothing_here(data)


def test_a_metadata_file_changed_on_the_peer_is_refused(peers):
    data, hn2_rd, manifest = peers
    (hn2_rd / "svc-sapi" / f"vm-{SAPI}.json").write_text("{}")
    with pytest.raises(PeerCopyRefused, match="does not match its signed manifest"):
        pull(data, manifest)
    nothing_here(data)


def test_a_copy_older_than_the_one_offered_is_refused(peers):
    data, _, manifest = peers
    with pytest.raises(PeerCopyRefused, match="older copy of sapi0 than its agent offered"):
        pull(data, manifest, offered=manifest["instances"][SAPI]["last_success"] + 1)
    nothing_here(data)


def test_an_instance_the_peer_does_not_hold_is_refused(peers):
    data, _, manifest = peers
    with pytest.raises(PeerCopyRefused, match="holds no good copy"):
        pull(data, manifest, uuid=HN3, offered=0)


def test_zfs_is_refused_saying_where_to_run_the_restore(peers):
    data, _, manifest = peers
    data.backend.name = "zfs"
    with pytest.raises(DatasetError, match="not supported yet: run the restore on hn2"):
        pull(data, manifest)
    nothing_here(data)

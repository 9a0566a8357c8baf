"""The puller, verify and the restore API over real files, a real sqlite store
and a small in-process dataset backend (plain copies; the real `dir` and `zfs`
backends are exercised by the integration tests)."""

import gzip
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from sdcadm.config import load_config
from sdcadm.datasets.base import Copy, DatasetBackend, SyncResult
from sdcadm.errors import ReplicaDiverged, Unreachable
from sdcadm.images import build_image, sha256_file
from sdcadm.model import Image, Instance, Server, Service
from sdcadm.restore_data import commit as commits
from sdcadm.restore_data.access import RestoreData, holdings
from sdcadm.restore_data.files import FileLock
from sdcadm.restore_data.puller import Puller, restore_layout
from sdcadm.restore_data.verify import verify
from tests.conftest import FakeClock, heartbeat_at, store_at

HN0, HN1 = "00000000-0000-4000-8000-000000000000", "11111111-1111-4111-8111-111111111111"
SAPI, IMGAPI, VMAPI, BINDER = (f"a0000000-0000-4000-8000-00000000000{i}" for i in range(4))
IMG = "b0000000-0000-4000-8000-000000000001"
MANIFEST = {"name": "sapi", "version": "1", "command": ["true"]}


class CopyBackend(DatasetBackend):
    """snapshots/<n>/ full copies of a local source directory, ``current`` a symlink."""

    name = "dir"

    def __init__(self):
        self.fail = None
        self.synced = 0

    def sync(self, source, replica_dir, receiver_id, *, reseed=False, observer=None):
        if self.fail:
            raise self.fail
        replica = Path(replica_dir)
        snaps = replica / "snapshots"
        snaps.mkdir(parents=True, exist_ok=True)
        self.synced += 1
        name = f"{time.time():.6f}-{self.synced:04d}"
        tmp = snaps / f".tmp-{name}"
        shutil.copytree(source.path, tmp, symlinks=True)
        os.rename(tmp, snaps / name)
        link = replica / ".current.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(f"snapshots/{name}")
        os.replace(link, replica / "current")
        if observer:
            observer(type("E", (), {"message": f"copied {name}", "done": 1, "total": 1})())
        return SyncResult(snapshot=name, guid=None, bytes_moved=1)

    def copies(self, replica_dir):
        snaps = Path(replica_dir) / "snapshots"
        names = sorted(p.name for p in snaps.iterdir() if not p.name.startswith(".")) \
            if snaps.is_dir() else []
        return [Copy(n, 0.0) for n in names]

    def current_path(self, replica_dir):
        current = Path(replica_dir) / "current"
        return str(current.resolve()) if current.exists() else None

    def clone(self, replica_dir, target, snapshot=None, name=None):
        snapshot = snapshot or self.copies(replica_dir)[-1].name
        shutil.copytree(Path(replica_dir) / "snapshots" / snapshot, target, symlinks=True)
        return str(target)

    def destroy_clone(self, target):
        shutil.rmtree(target, ignore_errors=True)

    def prune(self, replica_dir, keep):
        names = [c.name for c in self.copies(replica_dir)]
        gone = names[:-keep] if keep else names
        for n in gone:
            shutil.rmtree(Path(replica_dir) / "snapshots" / n)
        return gone

    def destroy(self, replica_dir):
        shutil.rmtree(replica_dir, ignore_errors=True)


class DC:
    """A DC of two headnodes in a temporary directory; hn1 is the receiver."""

    def __init__(self, tmp, **restore):
        self.tmp = Path(tmp)
        self.images = self.tmp / "images"
        self.image = build_image(self.images, IMG, MANIFEST, {"bin/run": b"#!/bin/sh\n"})
        self.clock = FakeClock(time.time())
        self.store = store_at(self.tmp / "dc.sqlite", clock=self.clock, create=True)
        for uuid, name, ip in ((HN0, "hn0", "127.0.0.2"), (HN1, "hn1", "127.0.0.3")):
            self.store.put_server(Server(uuid, name, ip, headnode=True))
            self.store.heartbeat(uuid)
        self.store.put_image(self.image)
        for name in ("sapi", "imgapi", "vmapi", "binder"):
            self.store.put_service(Service(name, IMG))
        for uuid, name, where, ds in ((SAPI, "sapi", HN0, True), (IMGAPI, "imgapi", HN0, True),
                                      (VMAPI, "vmapi", HN0, False), (BINDER, "binder", HN0, True)):
            self.store.create_instance(Instance(uuid, f"{name}0", name, where, IMG, "127.0.1.1",
                                                delegate_dataset=ds))
            if ds:
                self.data(uuid).mkdir(parents=True)
        cfg = {
            "server_uuid": HN1, "hostname": "hn1", "root": str(self.tmp / "hn1"),
            "restore_data_dir": str(self.tmp / "hn1" / "rd"), "image_source": str(self.images),
            "store": {"path": str(self.tmp / "dc.sqlite")},
            "agent": {"heartbeat_timeout": 3600},
            "restore_data": {"source_root_template": str(self.tmp / "{hostname}"), **restore},
            "datasets": {"keep": 2},
        }
        path = self.tmp / "hn1.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.config = load_config(path, environ={})
        self.backend = CopyBackend()
        self.layout = restore_layout(self.config)
        self.puller = Puller(self.config, lambda: self.store, self.backend,
                             transport_factory=lambda host: None)

    def data(self, uuid):
        return self.tmp / "hn0" / "zones" / uuid / "data"

    def sync(self, **kw):
        events = []
        summary = self.puller.sync(observer=events.append, **kw)
        return summary, events

    def verify(self, services=None):
        return verify(self.layout, self.backend, services)


@pytest.fixture
def dc(tmp_path):
    d = DC(tmp_path)
    (d.data(SAPI) / "canary").write_bytes(b"hello")
    (d.data(SAPI) / "sub").mkdir()
    (d.data(SAPI) / "sub" / "deep").write_bytes(b"x" * 1000)
    (d.data(SAPI) / "inside-link").symlink_to("sub/deep")
    (d.data(IMGAPI) / "img").write_bytes(b"image data")
    yield d
    d.store.close()


def row(dc, alias):
    return next(r for r in dc.store.list_restore_status(HN1) if r.alias == alias)


def problems(report):
    return [p for s in report.services for p in s.problems] + report.problems


def test_sync_pulls_metadata_images_and_datasets(dc):
    summary, events = dc.sync()
    assert summary.ok, summary
    assert summary.services == {"imgapi": "ok", "sapi": "ok", "vmapi": "ok"}  # binder is HA
    svc = dc.layout.service_dir("sapi")
    assert json.loads((svc / "service.json").read_text())["name"] == "sapi"
    assert [i["uuid"] for i in json.loads((svc / "insts.json").read_text())] == [SAPI]
    payload = json.loads((svc / f"vm-{SAPI}.json").read_text())
    assert payload["instance"]["uuid"] == SAPI and payload["image"]["uuid"] == IMG
    assert sha256_file(svc / "images" / f"{IMG}.file") == dc.image.sha256
    current = Path(dc.backend.current_path(dc.layout.dataset_dir("sapi", SAPI)))
    assert (current / "canary").read_bytes() == b"hello"
    # vmapi: no delegate dataset, everything else.
    vm = dc.layout.service_dir("vmapi")
    assert (vm / f"vm-{VMAPI}.json").exists() and not (vm / "datasets").exists()
    assert not dc.layout.service_dir("binder").exists()
    dcjson = json.loads(dc.layout.dc_json.read_text())
    assert dcjson["revision"] == dc.store.revision() and dcjson["receiver"] == HN1
    kinds = {e.to_dict()["event"] for e in events}
    assert {"Progress", "ServiceResult", "SyncSummary"} <= kinds
    assert events[-1].to_dict()["event"] == "SyncSummary"
    rows = {r.alias: r for r in dc.store.list_restore_status(HN1)}
    assert set(rows) == {"sapi0", "imgapi0", "vmapi0"}
    assert rows["sapi0"].status == "ok" and rows["sapi0"].bytes == 1005
    assert rows["sapi0"].source == HN0 and rows["vmapi0"].snapshot is None
    assert dc.store.list_restore_status("nobody") == []
    report = dc.verify()
    assert report.ok, problems(report)
    assert {s.service for s in report.services} == {"imgapi", "sapi", "vmapi"}


def test_status_rows_do_not_bump_the_dc_revision(dc):
    dc.sync()
    before = dc.store.revision()
    dc.sync()
    assert dc.store.revision() == before


def test_second_sync_is_a_new_copy_and_old_ones_are_pruned(dc):
    for n in range(4):
        (dc.data(SAPI) / "canary").write_bytes(b"v%d" % n)
        assert dc.sync()[0].ok
    replica = dc.layout.dataset_dir("sapi", SAPI)
    assert len(dc.backend.copies(replica)) == 2      # datasets.keep
    manifest = json.loads(dc.layout.manifest("sapi").read_text())
    assert manifest["instances"][SAPI]["dataset"]["snapshot"] == dc.backend.copies(replica)[-1].name
    assert dc.verify().ok


def test_tampered_missing_and_extra_files_are_named_exactly(dc):
    dc.sync()
    snap = json.loads(dc.layout.manifest("sapi").read_text())["instances"][SAPI]["dataset"]["snapshot"]
    copy = dc.layout.dataset_dir("sapi", SAPI) / "snapshots" / snap
    (copy / "canary").write_bytes(b"HELLO")
    (copy / "sub" / "deep").unlink()
    (copy / "planted").write_bytes(b"?")
    (dc.layout.service_dir("sapi") / "stray.json").write_text("{}")
    report = dc.verify(["sapi"])
    assert not report.ok
    where = f"datasets/{SAPI}@{snap}"
    got = problems(report)
    assert any(p.startswith(f"{where}: changed: canary ") for p in got), got
    assert f"{where}: missing: sub/deep" in got
    assert f"{where}: extra: planted" in got
    assert "extra: stray.json" in got
    assert len(got) == 4, got
    assert dc.verify(["imgapi"]).ok


def test_changed_metadata_and_image_files_are_named(dc):
    dc.sync()
    svc = dc.layout.service_dir("sapi")
    (svc / f"vm-{SAPI}.json").write_text("{}")
    (svc / "images" / f"{IMG}.file").write_bytes(b"not an image")
    got = problems(dc.verify(["sapi"]))
    assert any(p.startswith(f"changed: vm-{SAPI}.json") for p in got), got
    assert any(p.startswith(f"changed: images/{IMG}.file") for p in got), got
    assert any(p.startswith(f"refused: images/{IMG}.file") for p in got), got


def test_truncated_and_edited_manifests_are_named(dc):
    dc.sync()
    path = dc.layout.manifest("sapi")
    good = path.read_bytes()
    path.write_bytes(good[:200])
    got = problems(dc.verify(["sapi"]))
    assert len(got) == 1 and got[0].startswith("manifest.json: is truncated"), got
    doc = json.loads(good)
    doc["instances"][SAPI]["last_success"] = 1.0
    path.write_text(json.dumps(doc))
    got = problems(dc.verify(["sapi"]))
    assert got == ["manifest.json: was modified after it was written (its checksum does not "
                   "match its content)"]
    path.unlink()
    assert problems(dc.verify(["sapi"])) == ["manifest.json: missing: this copy was never completed"]


def test_link_escaping_the_dataset_is_refused_and_the_last_copy_kept(dc):
    dc.sync()
    before = json.loads(dc.layout.manifest("sapi").read_text())["instances"][SAPI]
    (dc.data(SAPI) / "escape").symlink_to("../../../../etc/passwd")
    summary, _ = dc.sync(services=["sapi"])
    assert summary.services == {"sapi": "failed"}
    after = json.loads(dc.layout.manifest("sapi").read_text())["instances"][SAPI]
    assert "refused the new copy" in after["error"] and "escape: link escaping the copy" in after["error"]
    assert after["dataset"] == before["dataset"] and after["last_success"] == before["last_success"]
    assert row(dc, "sapi0").status == "failed"
    assert dc.verify(["sapi"]).ok
    (dc.data(SAPI) / "escape").unlink()
    (dc.data(SAPI) / "abs").symlink_to("/etc/passwd")
    assert dc.sync(services=["sapi"])[0].services == {"sapi": "failed"}
    (dc.data(SAPI) / "abs").unlink()
    assert dc.sync(services=["sapi"])[0].ok


def test_a_planted_escaping_link_in_a_copy_fails_verify(dc):
    dc.sync()
    snap = json.loads(dc.layout.manifest("sapi").read_text())["instances"][SAPI]["dataset"]["snapshot"]
    copy = dc.layout.dataset_dir("sapi", SAPI) / "snapshots" / snap
    (copy / "evil").symlink_to("/etc/shadow")
    got = problems(dc.verify(["sapi"]))
    where = f"datasets/{SAPI}@{snap}"
    assert f"{where}: evil: link escaping the copy -> /etc/shadow" in got
    assert f"{where}: extra: evil (link -> /etc/shadow)" in got


def _bad_image(path, name):
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for member, data in (("manifest.json", json.dumps(MANIFEST).encode()), (name, b"x")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(raw.getvalue())


def test_image_with_dotdot_entry_is_refused_and_the_last_copy_kept(dc):
    dc.sync()
    bad_uuid = "b0000000-0000-4000-8000-0000000000ff"
    _bad_image(dc.images / f"{bad_uuid}.file", "../escape")
    data = (dc.images / f"{bad_uuid}.file").read_bytes()
    import hashlib

    dc.store.put_image(Image(bad_uuid, "sapi", "2", hashlib.sha256(data).hexdigest(), len(data)))
    dc.store.move_instance(SAPI, 1, image=bad_uuid)
    summary, _ = dc.sync(services=["sapi"])
    entry = json.loads(dc.layout.manifest("sapi").read_text())["instances"][SAPI]
    assert summary.services == {"sapi": "failed"}
    assert "'../escape' contains '..'" in entry["error"]
    assert entry["images"] == [IMG]                          # the previous, good image
    assert not (dc.layout.service_dir("sapi") / "images" / f"{bad_uuid}.file").exists()
    payload = json.loads((dc.layout.service_dir("sapi") / f"vm-{SAPI}.json").read_text())
    assert payload["image"]["uuid"] == IMG
    assert dc.verify(["sapi"]).ok


def test_unreachable_source_keeps_the_copy(dc):
    dc.sync()
    heartbeat_at(dc.store, dc.clock, HN0, time.time() - 7200)
    (dc.data(SAPI) / "canary").write_bytes(b"newer")
    summary, _ = dc.sync(services=["sapi"])
    assert summary.services == {"sapi": "unreachable"}
    got = row(dc, "sapi0")
    assert got.status == "unreachable" and "hn0 is unreachable" in got.error
    assert "keeping the copy of 20" in got.error
    report = dc.verify(["sapi"])
    assert report.ok and report.services[0].as_of == got.last_success
    current = Path(dc.backend.current_path(dc.layout.dataset_dir("sapi", SAPI)))
    assert (current / "canary").read_bytes() == b"hello"


@pytest.mark.parametrize("error,status", [
    (ReplicaDiverged("the replica has no snapshot in common with its source"), "diverged"),
    (Unreachable("ssh to 127.0.0.2:22: connection refused"), "unreachable"),
    (OSError(28, "No space left on device"), "failed"),
])
def test_backend_failures_map_to_statuses(dc, error, status):
    dc.sync()
    dc.backend.fail = error
    summary, _ = dc.sync(services=["sapi"])
    assert summary.services == {"sapi": status}
    assert dc.verify(["sapi"]).ok


def test_first_sync_failing_leaves_nothing_restorable_and_says_so(dc):
    dc.backend.fail = Unreachable("connection refused")
    assert dc.sync(services=["sapi"])[0].services == {"sapi": "unreachable"}
    got = problems(dc.verify(["sapi"]))
    assert any("sapi0: no complete copy yet" in p for p in got)
    assert any("its delegate dataset has no copy yet" in p for p in got)


def test_interrupted_commit_is_finished_before_reading(dc):
    dc.sync()
    svc = dc.layout.service_dir("sapi")
    old_manifest = (svc / "manifest.json").read_bytes()
    # A sync killed between "decided" (.pending -> .commit) and the roll-forward:
    dc.store.put_service(Service("sapi", IMG, {"changed": True}))
    puller = dc.puller
    real = commits.roll_forward
    calls = []

    def crash(service_dir):
        if (Path(service_dir) / ".commit").exists():   # the roll-forward of the new set
            calls.append(service_dir)
            raise KeyboardInterrupt("killed")
        return real(service_dir)

    commits.roll_forward = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            puller._sync_service_locked("sapi", __import__("sdcadm.restore_data.plan", fromlist=["x"])
                                        .plan_pulls(HN1, dc.store.list_servers(),
                                                    dc.store.list_services(),
                                                    dc.store.list_instances(), puller.catalog.services,
                                                    now=time.time(), heartbeat_timeout=3600)["sapi"],
                                        __import__("sdcadm.restore_data.puller", fromlist=["x"])
                                        .Facts(dc.store), False, None, time.time())
    finally:
        commits.roll_forward = real
    assert (svc / ".commit").is_dir() and (svc / "manifest.json").read_bytes() == old_manifest
    report = dc.verify(["sapi"])
    assert report.ok, problems(report)
    assert not (svc / ".commit").exists()
    assert json.loads((svc / "service.json").read_text())["params"] == {"changed": True}


def test_leftover_staging_is_discarded(dc):
    dc.sync()
    pending = dc.layout.pending("sapi")
    pending.mkdir()
    (pending / "service.json").write_text("half")
    assert dc.verify(["sapi"]).ok
    assert not pending.exists()


def test_a_service_being_synced_elsewhere_is_busy(dc):
    with FileLock(dc.layout.service_lock("sapi")):
        summary, _ = dc.sync(services=["sapi"])
    assert summary.services == {"sapi": "busy"} and not summary.ok
    assert dc.store.list_restore_status(HN1) == []


def test_copies_of_vanished_instances_are_pruned_after_grace(tmp_path):
    dc = DC(tmp_path, prune_grace=3600)
    (dc.data(SAPI) / "canary").write_bytes(b"hello")
    dc.store.create_instance(Instance("a0000000-0000-4000-8000-000000000009", "sapi1", "sapi",
                                      HN0, IMG, "127.0.1.9", delegate_dataset=True))
    dc.data("a0000000-0000-4000-8000-000000000009").mkdir(parents=True)
    assert dc.sync()[0].ok
    dc.store.delete_instance("a0000000-0000-4000-8000-000000000009")
    dc.store.delete_instance(IMGAPI)
    summary, _ = dc.sync()
    assert summary.pruned == ()
    assert dc.layout.dataset_dir("imgapi", IMGAPI).exists()
    assert dc.verify().ok                  # copies waiting to be pruned still verify
    dc.puller.config._values["restore_data"]["prune_grace"] = 0
    summary, _ = dc.sync()
    assert sorted(summary.pruned) == ["imgapi/" + IMGAPI, "sapi/a0000000-0000-4000-8000-000000000009"]
    assert not dc.layout.service_dir("imgapi").exists()
    assert dc.layout.vm_uuids("sapi") == [SAPI]
    assert dc.layout.dataset_uuids("sapi") == [SAPI]
    assert {r.alias for r in dc.store.list_restore_status(HN1)} == {"sapi0", "vmapi0"}
    assert dc.verify().ok
    dc.store.close()


def test_empty_store_never_prunes(tmp_path):
    dc = DC(tmp_path, prune_grace=0)
    (dc.data(SAPI) / "canary").write_bytes(b"hello")
    dc.sync()
    for uuid in (SAPI, IMGAPI, VMAPI, BINDER):
        dc.store.delete_instance(uuid)
    assert dc.sync()[0].pruned == ()
    assert dc.layout.service_dir("sapi").exists()
    dc.store.close()


def test_restore_api_gives_payload_images_and_a_clone(dc, tmp_path):
    dc.sync()
    data = RestoreData(dc.config, dc.backend)
    copy = data.instance_copy(SAPI)
    assert copy.service == "sapi" and copy.alias == "sapi0" and copy.source["hostname"] == "hn0"
    assert copy.instance.uuid == SAPI and copy.payload["image"]["uuid"] == IMG
    assert [(i.uuid, p.name) for i, p in copy.images] == [(IMG, f"{IMG}.file")]
    assert copy.as_of and copy.snapshot
    target = tmp_path / "hn1" / "zones" / "new" / "data"
    path = Path(data.clone_dataset(copy, target))
    assert (path / "canary").read_bytes() == b"hello"
    assert (path / "inside-link").is_symlink()
    installed = data.install_images(copy, tmp_path / "hn1" / "images")
    assert sha256_file(installed[0]) == dc.image.sha256
    assert [c.alias for c in data.copies(source=HN0)] == ["imgapi0", "sapi0", "vmapi0"]
    assert data.copies(source=HN1) == []
    from sdcadm.errors import NotFound

    with pytest.raises(NotFound, match="no restore data of instance"):
        data.instance_copy(BINDER)
    vm = data.instance_copy(VMAPI)
    with pytest.raises(NotFound, match="no copy of vmapi0's delegate dataset"):
        data.clone_dataset(vm, tmp_path / "x")
    rows = holdings(dc.layout, time.time())
    assert {(r["service"], r["alias"], r["source"], r["status"]) for r in rows} == {
        ("imgapi", "imgapi0", "hn0", "ok"), ("sapi", "sapi0", "hn0", "ok"),
        ("vmapi", "vmapi0", "hn0", "ok")}


def test_runner_pulls_periodically_on_headnodes_only(dc):
    import threading

    from sdcadm.restore_data.runner import RestoreDataRunner

    dc.config._values["restore_data"].update(sync_interval=0.05, jitter=0)
    stores = type("Stores", (), {"get": lambda self: dc.store})()
    runner = RestoreDataRunner(dc.config, stores, backend=dc.backend)
    runner.puller.transport_factory = lambda host: None

    def run_for(seconds):
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,))
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join(10)
        assert not thread.is_alive()

    run_for(1.0)
    assert runner.cycles >= 2 and runner.last_summary.ok
    assert {h["alias"] for h in runner.holdings()} == {"sapi0", "imgapi0", "vmapi0"}
    cycles = runner.cycles
    dc.store.put_server(Server(HN1, "hn1", "127.0.0.3", headnode=False))
    assert not runner.is_headnode()
    run_for(0.5)
    assert runner.cycles == cycles
    dc.config._values["restore_data"]["enabled"] = False
    dc.store.put_server(Server(HN1, "hn1", "127.0.0.3", headnode=True))
    run_for(0.5)
    assert runner.cycles == cycles
    assert runner.sync_now(["sapi"]).services == {"sapi": "ok"}   # on demand still works

"""A sync cycle (sources, staging, dataset sync, commit, status) and its
scheduler, over the shared two-headnode DC of ``restore_dc``."""

import gzip
import io
import json
import tarfile
import time
from pathlib import Path

import pytest

from sdcadm.errors import ReplicaDiverged, Unreachable
from sdcadm.fsutil import sha256_file
from sdcadm.model import Image, Server, Service
from sdcadm.restore_data import commit as commits
from sdcadm.restore_data.files import FileLock
from sdcadm.restore_data.plan import plan_pulls
from sdcadm.restore_data.sources import Facts
from tests.unit.restore_dc import dc  # noqa: F401 (a fixture)
from tests.unit.restore_dc import HN0, HN1, IMG, MANIFEST, SAPI, VMAPI, problems, row
from tests.conftest import heartbeat_at, wait_for


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


def test_files_vanishing_from_a_busy_source_keep_the_copy_with_a_warning(dc):
    """A busy instance renames its temporary files while its dataset is copied:
    the copy is kept and committed (status ok), the count is a warning in the
    manifest, the status row and the events, and the manifest describes exactly
    what was copied, so verify stays green."""
    dc.sync()
    (dc.data(SAPI) / "canary").write_bytes(b"newer")
    (dc.data(SAPI) / ".key.tmp42").write_bytes(b"half-written")
    dc.backend.vanish = (".key.tmp42",)
    summary, events = dc.sync(services=["sapi"])
    assert summary.ok and summary.services == {"sapi": "ok"}
    (result,) = [e for e in events if type(e).__name__ == "ServiceResult"]
    assert result.status == "ok" and result.error is None and result.vanished == 1
    assert ".key.tmp42" in result.warning and "kept" in result.warning
    assert result.instances[0]["vanished"] == 1 and result.instances[0]["status"] == "ok"
    got = row(dc, "sapi0")
    assert (got.status, got.error, got.vanished) == ("ok", None, 1)
    manifest = json.loads((dc.layout.service_dir("sapi") / "manifest.json").read_text())
    dataset = manifest["instances"][SAPI]["dataset"]
    assert dataset["vanished"] == 1 and ".key.tmp42" not in dataset["files"]
    assert "canary" in dataset["files"]
    assert dc.verify(["sapi"]).ok, problems(dc.verify(["sapi"]))
    current = Path(dc.backend.current_path(dc.layout.dataset_dir("sapi", SAPI)))
    assert (current / "canary").read_bytes() == b"newer"
    # The next quiet sync clears the warning.
    dc.backend.vanish = ()
    (dc.data(SAPI) / ".key.tmp42").unlink()
    dc.sync(services=["sapi"])
    assert row(dc, "sapi0").vanished == 0


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

    items = plan_pulls(HN1, dc.store.list_servers(), dc.store.list_services(),
                       dc.store.list_instances(), puller.catalog.services, now=time.time(),
                       heartbeat_timeout=3600)["sapi"]
    commits.roll_forward = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            puller.service_sync.sync_locked("sapi", items, Facts(dc.store), False, None, time.time())
    finally:
        commits.roll_forward = real
    assert (svc / ".commit").is_dir() and (svc / "manifest.json").read_bytes() == old_manifest
    report = dc.verify(["sapi"])
    assert report.ok, problems(report)
    assert not (svc / ".commit").exists()
    assert json.loads((svc / "service.json").read_text())["params"] == {"changed": True}


def test_a_service_being_synced_elsewhere_is_busy(dc):
    with FileLock(dc.layout.service_lock("sapi")):
        summary, _ = dc.sync(services=["sapi"])
    assert summary.services == {"sapi": "busy"} and not summary.ok
    assert dc.store.list_restore_status(HN1) == []


class Cycles:
    """A stop event for ``RestoreDataScheduler.run`` that lets ``count`` cycles
    through at once instead of waiting, then stops it; it records the delays
    the runner asked to wait."""

    def __init__(self, count):
        self.left, self.delays = count, []

    def wait(self, delay):
        self.delays.append(delay)
        self.left -= 1
        return self.left < 0


def test_runner_pulls_periodically_on_headnodes_only(dc):
    import threading

    from sdcadm.restore_data.scheduler import RestoreDataScheduler

    dc.config._values["restore_data"].update(sync_interval=0.05, jitter=0)
    stores = type("Stores", (), {"get": lambda self: dc.store})()
    runner = RestoreDataScheduler(dc.config, stores, backend=dc.backend)
    runner.puller.transport_factory = lambda host: None

    # In its thread, with a real stop event, it pulls by itself.
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: runner.cycles >= 2, 30, "two periodic pulls")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert runner.last_summary.ok
    assert {h["alias"] for h in runner.holdings()} == {"sapi0", "imgapi0", "vmapi0"}
    # One pull per cycle, each sync_interval (no jitter) after the last.
    cycles, ticks = runner.cycles, Cycles(2)
    runner.run(ticks)
    assert runner.cycles == cycles + 2 and ticks.delays == [0.05] * 3
    cycles = runner.cycles
    dc.store.put_server(Server(HN1, "hn1", "127.0.0.3", headnode=False))
    assert not runner.is_headnode()
    runner.run(Cycles(3))
    assert runner.cycles == cycles
    dc.config._values["restore_data"]["enabled"] = False
    dc.store.put_server(Server(HN1, "hn1", "127.0.0.3", headnode=True))
    runner.run(Cycles(3))
    assert runner.cycles == cycles
    assert runner.sync_now(["sapi"]).services == {"sapi": "ok"}   # on demand still works

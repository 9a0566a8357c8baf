"""`restore-data verify` names every damaged, missing and extra file."""

import hashlib
import json

import pytest

from sdcadm.errors import InvalidName, InvalidUUID

from tests.unit.restore_dc import dc  # noqa: F401 (a fixture)
from tests.unit.restore_dc import IMG, SAPI, problems


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


def test_a_planted_escaping_link_in_a_copy_fails_verify(dc):
    dc.sync()
    snap = json.loads(dc.layout.manifest("sapi").read_text())["instances"][SAPI]["dataset"]["snapshot"]
    copy = dc.layout.dataset_dir("sapi", SAPI) / "snapshots" / snap
    (copy / "evil").symlink_to("/etc/shadow")
    got = problems(dc.verify(["sapi"]))
    where = f"datasets/{SAPI}@{snap}"
    assert f"{where}: evil: link escaping the copy -> /etc/shadow" in got
    assert f"{where}: extra: evil (link -> /etc/shadow)" in got


def test_leftover_staging_is_discarded(dc):
    dc.sync()
    pending = dc.layout.pending("sapi")
    pending.mkdir()
    (pending / "service.json").write_text("half")
    assert dc.verify(["sapi"]).ok
    assert not pending.exists()


@pytest.mark.parametrize("name", ["sapi/../../victim", "../victim", "/tmp/victim", "sapi\0",
                                  "SAPI", "", "a" * 64])
def test_a_name_that_is_not_a_service_is_refused_before_any_path_is_used(dc, name):
    dc.sync()
    victim = dc.tmp / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    before = sorted(p.relative_to(dc.tmp) for p in dc.tmp.rglob("*"))
    with pytest.raises(InvalidName, match="is not valid"):
        dc.verify(["sapi", name])
    assert sorted(p.relative_to(dc.tmp) for p in dc.tmp.rglob("*")) == before
    assert (victim / "precious").read_text() == "keep me"


def test_every_per_service_and_per_instance_path_checks_its_name(dc):
    layout = dc.layout
    for call in (lambda: layout.service_dir("../x"), lambda: layout.service_lock("a/b"),
                 lambda: layout.commit_lock(".."), lambda: layout.manifest("x/../../y")):
        with pytest.raises(InvalidName):
            call()
    for call in (lambda: layout.dataset_dir("sapi", "../../x"),
                 lambda: layout.instance_lock("../x"), lambda: layout.vm_json("sapi", "x/y"),
                 lambda: layout.image_file("sapi", "../../../etc/passwd"),
                 lambda: layout.hash_cache("sapi", "..")):
        with pytest.raises(InvalidUUID):
            call()


def test_a_stray_directory_that_is_not_a_service_name_is_not_listed(dc):
    dc.sync()
    (dc.layout.root / "svc-Not_A_Name").mkdir()
    assert "Not_A_Name" not in dc.layout.services()
    assert dc.verify().ok


def test_a_forged_manifest_with_a_consistent_checksum_is_broken(dc):
    """Whoever can write restore data can recompute the checksum, not the
    signature: a manifest that lies about the copy is refused as unsigned or
    badly signed, and the copy is not trusted on its word."""
    from sdcadm.restore_data.manifest import checksum

    dc.sync()
    path = dc.layout.manifest("sapi")
    doc = json.loads(path.read_text())
    snap = doc["instances"][SAPI]["dataset"]["snapshot"]
    copy = dc.layout.dataset_dir("sapi", SAPI) / "snapshots" / snap
    (copy / "canary").write_bytes(b"forged")
    doc["instances"][SAPI]["dataset"]["files"]["canary"] = {
        "sha256": hashlib.sha256(b"forged").hexdigest(), "bytes": 6}
    for signature in ("keep", None):
        if signature is None:
            doc.pop("signature")
        doc["checksum"] = checksum(doc)
        path.write_text(json.dumps(doc))
        got = problems(dc.verify(["sapi"]))
        assert len(got) == 1, got
        assert got[0].startswith("manifest.json: " + ("has a signature that does not match"
                                                      if signature else "is not signed")), got


def test_verify_without_the_key_is_a_config_error_saying_how_to_make_one(dc):
    from sdcadm.errors import ConfigError

    dc.sync()
    dc.key_file.unlink()
    dc.layout._key = None    # a new process would read it afresh
    with pytest.raises(ConfigError, match="restore_data.key_file") as exc:
        dc.verify()
    assert "head -c 32 /dev/urandom | base64" in str(exc.value)

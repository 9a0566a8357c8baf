"""manifest.json: written sealed, read back validated; truncation and edits named."""

import json

import pytest

from sdcadm.errors import ValidationError
from sdcadm.restore_data.manifest import (
    ManifestError,
    parse_manifest,
    read_manifest,
    seal,
    service_status,
    total_bytes,
    write_manifest,
)

HN1 = "11111111-1111-4111-8111-111111111111"
HN0 = "00000000-0000-4000-8000-000000000000"
I1 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
I2 = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
IMG = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
SHA = "ab" * 32


def instance(alias="sapi0", status="ok", error=None, dataset=True):
    return {
        "alias": alias, "source": {"server_uuid": HN0, "hostname": "hn0", "admin_ip": "127.0.0.2"},
        "images": [IMG], "status": status, "error": error, "last_attempt": 10.0,
        "last_success": 10.0 if status == "ok" else 5.0,
        "dataset": ({"backend": "dir", "snapshot": "20250101T000000Z", "guid": None,
                     "bytes": 5, "synced": 10.0,
                     "files": {"canary": {"sha256": SHA, "bytes": 5}},
                     "links": {"ok-link": "canary"}} if dataset else None),
    }


def doc(**changes):
    base = {
        "service": "sapi", "receiver": {"server_uuid": HN1, "hostname": "hn1"},
        "dc_revision": 7, "started": 1.0, "finished": 2.0, "status": "ok", "error": None,
        "bytes": 0,
        "files": {"service.json": {"sha256": SHA, "bytes": 10},
                  f"vm-{I1}.json": {"sha256": SHA, "bytes": 20}},
        "instances": {I1: instance()}, "checksum": "0" * 64,
    }
    base.update(changes)
    return base


def test_round_trip(tmp_path):
    path = tmp_path / "manifest.json"
    written = write_manifest(path, doc())
    assert read_manifest(path) == written
    assert written["version"] == 1 and len(written["checksum"]) == 64
    assert json.loads(path.read_text())["checksum"] == written["checksum"]


def test_missing_manifest_says_the_copy_was_never_completed(tmp_path):
    with pytest.raises(ManifestError, match="missing: this copy was never completed"):
        read_manifest(tmp_path / "manifest.json")


def test_truncated_manifest_is_named_truncated(tmp_path):
    path = tmp_path / "manifest.json"
    write_manifest(path, doc())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ManifestError) as exc:
        read_manifest(path)
    assert "is truncated" in exc.value.problem
    assert str(path) in str(exc.value)
    path.write_bytes(b"")
    with pytest.raises(ManifestError, match="is empty"):
        read_manifest(path)


def test_edited_manifest_is_named_edited(tmp_path):
    path = tmp_path / "manifest.json"
    write_manifest(path, doc())
    edited = json.loads(path.read_text())
    edited["instances"][I1]["dataset"]["files"]["canary"]["sha256"] = "cd" * 32
    path.write_text(json.dumps(edited))
    with pytest.raises(ManifestError, match="modified after it was written"):
        read_manifest(path)


def test_invalid_manifest_lists_the_problem():
    bad = seal(doc())
    bad["status"] = "splendid"
    with pytest.raises(ManifestError, match="is invalid") as exc:
        parse_manifest(json.dumps(bad).encode())
    assert "at status" in exc.value.problem
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(b"{nope}")
    with pytest.raises(ManifestError, match="not a JSON object"):
        parse_manifest(b"[1, 2]")
    with pytest.raises(ManifestError, match="not UTF-8"):
        parse_manifest(b"\xff\xfe{")


@pytest.mark.parametrize("where,name", [
    ("files", "../../etc/passwd"), ("files", "/etc/passwd"), ("files", "a/../../b"),
    ("dataset", "../escape"), ("links", "../../x"),
])
def test_paths_escaping_the_copy_are_refused(where, name):
    d = doc()
    if where == "files":
        d["files"][name] = {"sha256": SHA, "bytes": 1}
    else:
        key = "files" if where == "dataset" else "links"
        value = {"sha256": SHA, "bytes": 1} if key == "files" else "x"
        d["instances"][I1]["dataset"][key][name] = value
    with pytest.raises(ValidationError):
        seal(d)
    # A hand-made manifest with a good checksum is refused the same way.
    d["checksum"] = "0" * 64
    from sdcadm.restore_data.manifest import checksum

    d["version"] = 1
    d["checksum"] = checksum(d)
    with pytest.raises(ManifestError):
        parse_manifest(json.dumps(d).encode())


def test_service_status_is_the_worst_instance():
    assert service_status({}) == ("ok", None)
    assert service_status({I1: instance()}) == ("ok", None)
    got = service_status({I1: instance(), I2: instance("sapi1", "unreachable", "hn2 down")})
    assert got == ("unreachable", "sapi1: hn2 down")
    got = service_status({I1: instance("sapi0", "failed", "disk full"),
                          I2: instance("sapi1", "unreachable", "hn2 down")})
    assert got == ("failed", "sapi0: disk full")


def test_total_bytes_counts_files_and_datasets():
    d = doc()
    d["instances"][I2] = instance("sapi1", dataset=False)
    assert total_bytes(d) == 10 + 20 + 5

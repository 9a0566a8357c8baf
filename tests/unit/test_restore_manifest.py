"""manifest.json: written sealed and signed, read back validated; truncation,
edits and forgeries named."""

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
KEY = b"the DC restore-data key, 32+ bytes"


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
    written = write_manifest(path, doc(), KEY)
    assert read_manifest(path, KEY) == written
    assert written["version"] == 1 and len(written["checksum"]) == 64
    assert json.loads(path.read_text())["checksum"] == written["checksum"]


def test_missing_manifest_says_the_copy_was_never_completed(tmp_path):
    with pytest.raises(ManifestError, match="missing: this copy was never completed"):
        read_manifest(tmp_path / "manifest.json", KEY)


def test_truncated_manifest_is_named_truncated(tmp_path):
    path = tmp_path / "manifest.json"
    write_manifest(path, doc(), KEY)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ManifestError) as exc:
        read_manifest(path, KEY)
    assert "is truncated" in exc.value.problem
    assert str(path) in str(exc.value)
    path.write_bytes(b"")
    with pytest.raises(ManifestError, match="is empty"):
        read_manifest(path, KEY)


def test_edited_manifest_is_named_edited(tmp_path):
    path = tmp_path / "manifest.json"
    write_manifest(path, doc(), KEY)
    edited = json.loads(path.read_text())
    edited["instances"][I1]["dataset"]["files"]["canary"]["sha256"] = "cd" * 32
    path.write_text(json.dumps(edited))
    with pytest.raises(ManifestError, match="modified after it was written"):
        read_manifest(path, KEY)


def test_invalid_manifest_lists_the_problem():
    bad = seal(doc(), KEY)
    bad["status"] = "splendid"
    with pytest.raises(ManifestError, match="is invalid") as exc:
        parse_manifest(json.dumps(bad).encode(), KEY)
    assert "at status" in exc.value.problem
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(b"{nope}", KEY)
    with pytest.raises(ManifestError, match="not a JSON object"):
        parse_manifest(b"[1, 2]", KEY)
    with pytest.raises(ManifestError, match="not UTF-8"):
        parse_manifest(b"\xff\xfe{", KEY)


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
        seal(d, KEY)
    # A hand-made manifest with a good checksum is refused the same way.
    d["checksum"] = "0" * 64
    from sdcadm.restore_data.manifest import checksum

    d["version"] = 1
    d["checksum"] = checksum(d)
    with pytest.raises(ManifestError):
        parse_manifest(json.dumps(d).encode(), KEY)


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


# -- signatures: a consistent checksum is not enough -------------------------------------
def forge(path, change, signature="keep"):
    """Rewrite the manifest at ``path`` as a forger who knows the format but not
    the key would: content changed, checksum recomputed."""
    from sdcadm.restore_data.manifest import checksum

    d = json.loads(path.read_text())
    change(d)
    if signature is None:
        d.pop("signature", None)
    elif signature != "keep":
        d["signature"] = signature
    d["checksum"] = checksum(d)
    path.write_text(json.dumps(d))


def lie_about_canary(d):
    d["instances"][I1]["dataset"]["files"]["canary"]["sha256"] = "cd" * 32


@pytest.mark.parametrize("signature,problem", [
    ("keep", "signature that does not match"),          # the old signature over new content
    ("ef" * 32, "signature that does not match"),       # a made-up one
    (None, "is not signed"),                            # an old-style, checksum-only manifest
])
def test_forged_manifest_with_a_consistent_checksum_is_refused(tmp_path, signature, problem):
    path = tmp_path / "manifest.json"
    write_manifest(path, doc(), KEY)
    forge(path, lie_about_canary, signature)
    with pytest.raises(ManifestError, match=problem) as exc:
        read_manifest(path, KEY)
    assert "sync-restore-data" in str(exc.value) and "key_file" in str(exc.value)


def test_manifest_signed_with_another_key_is_refused_and_the_right_key_accepted(tmp_path):
    path = tmp_path / "manifest.json"
    written = write_manifest(path, doc(), b"another DC's key, also 32+ bytes")
    with pytest.raises(ManifestError, match="signature that does not match"):
        read_manifest(path, KEY)
    assert read_manifest(path, b"another DC's key, also 32+ bytes") == written


def test_the_signature_is_compared_in_constant_time(tmp_path, monkeypatch):
    import hmac

    from sdcadm.restore_data import manifest

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(manifest.hmac, "compare_digest",
                        lambda a, b: calls.append((a, b)) or real(a, b))
    path = tmp_path / "manifest.json"
    written = write_manifest(path, doc(), KEY)
    read_manifest(path, KEY)
    assert calls == [(written["signature"], written["signature"])]


def test_a_missing_or_short_key_file_is_a_config_error_saying_how_to_create_it(tmp_path):
    from sdcadm.config import read_restore_key
    from sdcadm.errors import ConfigError
    from sdcadm.restore_data.layout import RestoreLayout

    missing = tmp_path / "restore-data.key"
    with pytest.raises(ConfigError, match="restore_data.key_file") as exc:
        RestoreLayout(tmp_path, key_file=str(missing), source="hn1.yaml").key
    assert str(missing) in str(exc.value)
    assert "head -c 32 /dev/urandom | base64" in str(exc.value)
    assert "every headnode" in str(exc.value)
    missing.write_text("short\n")
    with pytest.raises(ConfigError, match="fewer than"):
        read_restore_key(missing)
    missing.write_text("c2RjYWRtIHRlc3Qga2V5OiBub3QgYSBzZWNyZXQgYXQgYWxs\n")
    assert read_restore_key(missing) == b"c2RjYWRtIHRlc3Qga2V5OiBub3QgYSBzZWNyZXQgYXQgYWxs"

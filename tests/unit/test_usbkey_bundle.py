"""The headnode bundle: built from a usbkey directory, read in one pass that
trusts nothing, seeded atomically. Every hostile archive is refused and
leaves the target exactly as it was."""

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from sdcadm.usbkey import bundle
from sdcadm.usbkey.bundle import BundleError


@pytest.fixture
def usbkey(tmp_path):
    root = tmp_path / "usbkey"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.json").write_text('{"name": "sapi"}\n')
    (root / "images" / "a.file").write_bytes(os.urandom(300_000))
    (root / "secrets").mkdir()
    (root / "secrets" / "token").write_text("t" * 40)
    os.chmod(root / "secrets" / "token", 0o600)
    (root / "platforms" / "20260101T000000Z").mkdir(parents=True)
    (root / "platforms" / "20260101T000000Z" / "boot").write_text("platform\n")
    (root / "scratch").mkdir()  # not a part: left out
    (root / "scratch" / "junk").write_text("x")
    return root


def tree(root):
    """{relative name: (bytes, mode)} of every file under ``root``."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = (f.read(), os.stat(path).st_mode & 0o777)
    return out


def test_build_verify_seed_round_trip(usbkey, tmp_path):
    out = tmp_path / bundle.BUNDLE_NAME
    manifest, left_out = bundle.build(usbkey, out, source="hn0", clock=lambda: 1000.0)
    assert left_out == ["scratch"]
    assert os.stat(out).st_mode & 0o777 == 0o600  # it carries the DC's secrets
    assert sorted(manifest["files"]) == ["images/a.file", "images/a.json",
                                         "platforms/20260101T000000Z/boot", "secrets/token"]
    assert bundle.verify(out) == manifest
    target = tmp_path / "seeded"
    bundle.seed(out, target)
    want = {k: v for k, v in tree(usbkey).items() if not k.startswith("scratch")}
    assert tree(target) == want
    assert bundle.drift(manifest["files"], bundle.scan(target)[0]) == []


def test_seed_replaces_an_existing_target_whole(usbkey, tmp_path):
    out = tmp_path / "b.tgz"
    bundle.build(usbkey, out, source="hn0")
    target = tmp_path / "seeded"
    (target / "images").mkdir(parents=True)
    (target / "images" / "stale.json").write_text("old")
    bundle.seed(out, target)
    assert "images/stale.json" not in tree(target)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_drift_names_each_file_and_what_changed(usbkey, tmp_path):
    before, _ = bundle.scan(usbkey)
    (usbkey / "images" / "a.json").write_text('{"name": "vmapi"}\n')
    (usbkey / "images" / "b.json").write_text("{}")
    os.unlink(usbkey / "secrets" / "token")
    os.chmod(usbkey / "platforms" / "20260101T000000Z" / "boot", 0o755)
    after, _ = bundle.scan(usbkey)
    assert bundle.drift(before, after) == [
        {"file": "images/a.json", "change": "changed"},
        {"file": "images/b.json", "change": "extra"},
        {"file": "platforms/20260101T000000Z/boot", "change": "mode"},
        {"file": "secrets/token", "change": "missing"}]


def test_a_link_in_the_usbkey_directory_is_not_bundled(usbkey, tmp_path):
    os.symlink("/etc/passwd", usbkey / "images" / "evil.json")
    with pytest.raises(BundleError, match="not a regular file"):
        bundle.build(usbkey, tmp_path / "b.tgz", source="hn0")
    assert not (tmp_path / "b.tgz").exists()


# -- hostile bundles -----------------------------------------------------------------

def make(path, members, manifest=None, *, raw_manifest=None):
    """A bundle of ``members`` [(TarInfo-ish dict, data)]; the manifest lists
    them truthfully unless given."""
    files = {}
    for m, data in members:
        if m.get("type", tarfile.REGTYPE) == tarfile.REGTYPE:
            files[m["name"]] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "mode": 0o644}
    doc = manifest if manifest is not None else {"format": bundle.FORMAT, "created": 1.0,
                                                 "source": "x", "files": files}
    raw = raw_manifest if raw_manifest is not None else json.dumps(doc).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(bundle.MANIFEST)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        for m, data in members:
            info = tarfile.TarInfo(m["name"])
            info.type = m.get("type", tarfile.REGTYPE)
            info.linkname = m.get("linkname", "")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return path


@pytest.fixture
def target(tmp_path):
    target = tmp_path / "target"
    (target / "images").mkdir(parents=True)
    (target / "images" / "keep.json").write_text("untouched")
    return target


def refused(path, target, match):
    before = tree(target)
    with pytest.raises(BundleError, match=match):
        bundle.seed(path, target)
    assert tree(target) == before
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".target")] == []
    outside = target.parent / "x"
    assert not outside.exists()


def test_a_tampered_member_is_refused(tmp_path, target):
    good = b"good content"
    path = tmp_path / "b.tgz"
    make(path, [({"name": "images/a.json"}, good)],
         {"format": bundle.FORMAT, "files": {"images/a.json": {
             "sha256": hashlib.sha256(b"other content").hexdigest(), "size": len(good),
             "mode": 0o644}}})
    refused(path, target, "does not match its sha256")


@pytest.mark.parametrize("name", ["../x", "/etc/x", "images/../../x", "images/./a",
                                  "notapart/a", "images"])
def test_an_unsafe_name_is_refused(tmp_path, target, name):
    path = make(tmp_path / "b.tgz", [({"name": name}, b"data")])
    refused(path, target, "not a safe name")


def test_a_member_not_in_the_manifest_is_refused(tmp_path, target):
    path = make(tmp_path / "b.tgz", [({"name": "images/a.json"}, b"a")],
                {"format": bundle.FORMAT, "files": {}})
    refused(path, target, "not in its manifest")


@pytest.mark.parametrize("kind, linkname", [(tarfile.SYMTYPE, "/etc/passwd"),
                                            (tarfile.SYMTYPE, "../../x"),
                                            (tarfile.LNKTYPE, "/etc/passwd"),
                                            (tarfile.CHRTYPE, ""), (tarfile.FIFOTYPE, ""),
                                            (tarfile.DIRTYPE, "")])
def test_links_devices_and_directories_are_refused(tmp_path, target, kind, linkname):
    path = make(tmp_path / "b.tgz", [({"name": "images/a.json", "type": kind,
                                       "linkname": linkname}, b"")])
    refused(path, target, "only regular files")


def test_a_truncated_bundle_is_refused(usbkey, tmp_path, target):
    out = tmp_path / "b.tgz"
    bundle.build(usbkey, out, source="hn0")
    data = out.read_bytes()
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(data[:len(data) // 2])
    refused(cut, target, "truncated or damaged")
    # Cut exactly after a member: the tar is well formed, a file is missing.
    raw = gzip.decompress(data)
    first = tarfile.open(fileobj=io.BytesIO(raw)).getmembers()
    end = first[1].offset_data + ((first[1].size + 511) // 512) * 512
    cut.write_bytes(gzip.compress(raw[:end] + b"\0" * 1024))
    refused(cut, target, "missing")


@pytest.mark.parametrize("raw, match", [
    (b"{not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"format": "other/9", "files": {}}).encode(), "format"),
    (json.dumps({"format": bundle.FORMAT, "files": {"images/a": {"sha256": "zz", "size": -1,
                                                                   "mode": 0o4777}}}).encode(),
     "sha256 is not"),
])
def test_a_bad_manifest_is_refused(tmp_path, target, raw, match):
    path = make(tmp_path / "b.tgz", [], raw_manifest=raw)
    refused(path, target, match)


def test_the_manifest_must_come_first(tmp_path, target):
    path = tmp_path / "b.tgz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("images/a.json")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
    refused(path, target, "first member")


def test_a_bundle_claiming_more_than_the_free_space_is_refused_before_writing(tmp_path, target):
    huge = {"images/big.file": {"sha256": "0" * 64, "size": bundle.MAX_TOTAL_BYTES,
                                "mode": 0o644}}
    path = make(tmp_path / "b.tgz", [], {"format": bundle.FORMAT, "files": huge})
    refused(path, target, "free")


def test_a_member_larger_than_its_manifest_says_is_refused(tmp_path, target):
    path = tmp_path / "b.tgz"
    make(path, [({"name": "images/a.json"}, b"x" * 5000)],
         {"format": bundle.FORMAT, "files": {"images/a.json": {
             "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1, "mode": 0o644}}})
    refused(path, target, "5000 bytes")


def test_not_a_gzip_file_is_refused(tmp_path, target):
    path = tmp_path / "b.tgz"
    path.write_bytes(b"PK\x03\x04 this is a zip")
    refused(path, target, "not a complete gzip")
    refused(tmp_path / "nope.tgz", target, "does not exist")

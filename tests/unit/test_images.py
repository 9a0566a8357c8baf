"""Image files: building is reproducible; unsafe or broken images are refused
before anything is written."""

import io
import json
import tarfile

import pytest

from sdcadm.errors import ImageError, ValidationError
from sdcadm.fsutil import sha256_file
from sdcadm.images import build_image, read_image_record, unpack_image
from sdcadm.lab.images import build_workload_image

MANIFEST = {"name": "sapi", "version": "1.0.0", "command": ["python3", "workload.py"]}


def tarball(path, entries):
    """entries: list of (TarInfo-modifier, name, data)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link or ""
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def regular(name, data=b"x"):
    return (name, data, tarfile.REGTYPE, None)


def manifest_entry(doc=MANIFEST):
    return regular("manifest.json", json.dumps(doc).encode())


def test_build_is_reproducible_and_unpacks(tmp_path):
    a = build_workload_image(tmp_path / "a", "sapi")
    b = build_workload_image(tmp_path / "b", "sapi")
    assert a.sha256 == b.sha256 and a.uuid == b.uuid
    assert read_image_record(tmp_path / "a" / f"{a.uuid}.json") == a
    manifest = unpack_image(tmp_path / "a" / f"{a.uuid}.file", tmp_path / "root", a.sha256)
    assert manifest["command"] == ["python3", "workload.py"]
    assert (tmp_path / "root" / "workload.py").read_bytes().startswith(b'"""The lab')


def test_sha256_mismatch_refused(tmp_path):
    img = build_workload_image(tmp_path, "sapi")
    with pytest.raises(ImageError, match="expected 0000"):
        unpack_image(tmp_path / f"{img.uuid}.file", tmp_path / "root", "0" * 64)
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("bad,match", [
    (regular("/etc/evil"), "absolute path"),
    (regular("../evil"), r"contains '\.\.'"),
    (regular("a/../../evil"), r"contains '\.\.'"),
    (("link", b"", tarfile.SYMTYPE, "/etc/passwd"), "links to absolute path"),
    (("d/link", b"", tarfile.SYMTYPE, "../../outside"), "links outside"),
    (("hard", b"", tarfile.LNKTYPE, "../x"), "contains|links outside"),
    (("dev", b"", tarfile.CHRTYPE, None), "not a regular file"),
    (("fifo", b"", tarfile.FIFOTYPE, None), "not a regular file"),
])
def test_unsafe_entries_refused_and_nothing_written(tmp_path, bad, match):
    path = tarball(tmp_path / "bad.tgz", [manifest_entry(), regular("ok.txt"), bad])
    dest = tmp_path / "root"
    with pytest.raises(ImageError, match=match):
        unpack_image(path, dest)
    assert not dest.exists()


def test_link_inside_root_is_allowed(tmp_path):
    path = tarball(tmp_path / "ok.tgz", [manifest_entry(), regular("bin/real"),
                                         ("bin/alias", b"", tarfile.SYMTYPE, "real")])
    unpack_image(path, tmp_path / "root")
    assert (tmp_path / "root" / "bin" / "alias").resolve() == (tmp_path / "root" / "bin" / "real")


def test_missing_or_invalid_manifest(tmp_path):
    with pytest.raises(ImageError, match="has no manifest.json"):
        unpack_image(tarball(tmp_path / "a.tgz", [regular("x")]), tmp_path / "r1")
    with pytest.raises(ImageError, match="not JSON"):
        unpack_image(tarball(tmp_path / "b.tgz", [regular("manifest.json", b"{nope")]), tmp_path / "r2")
    with pytest.raises(ValidationError, match="command"):
        unpack_image(tarball(tmp_path / "c.tgz", [manifest_entry({"name": "x", "version": "1"})]),
                     tmp_path / "r3")
    for d in ("r1", "r2", "r3"):
        assert not (tmp_path / d).exists()


def test_not_a_tarball(tmp_path):
    path = tmp_path / "junk.file"
    path.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ImageError, match="not a readable tarball"):
        unpack_image(path, tmp_path / "root")


def test_bad_manifest_refused_at_build(tmp_path):
    with pytest.raises(ValidationError):
        build_image(tmp_path, "11111111-1111-4111-8111-111111111111", {"name": "x"}, {})


def test_bad_image_record(tmp_path):
    (tmp_path / "r.json").write_text('{"uuid": "nope"}')
    with pytest.raises(ValidationError, match="uuid"):
        read_image_record(tmp_path / "r.json")
    (tmp_path / "t.json").write_text("{")
    with pytest.raises(ImageError, match="cannot read image record"):
        read_image_record(tmp_path / "t.json")


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f").startswith("ba7816bf")

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


# Bounded unpacking: a bad image is one clear ImageError, never a crash or a
# disk filled.

def test_a_gzip_bomb_is_stopped_while_reading_and_nothing_is_written(tmp_path):
    import gzip

    bomb = tmp_path / "bomb.file"
    member = tarfile.TarInfo("zeros")
    member.size = 64 << 20
    with open(bomb, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
            with tarfile.open(fileobj=gz, mode="w") as tar:
                tar.addfile(member, io.BytesIO(bytes(member.size)))
    assert bomb.stat().st_size < (1 << 20)
    dest = tmp_path / "out"
    with pytest.raises(ImageError, match="expands beyond 4194304 bytes"):
        unpack_image(bomb, dest, max_bytes=4 << 20)
    assert not dest.exists()


def test_an_image_within_the_bound_unpacks(tmp_path):
    path = tarball(tmp_path / "i.file", [manifest_entry(), regular("bin/x", bytes(1 << 20))])
    unpack_image(path, tmp_path / "out", max_bytes=4 << 20)
    assert (tmp_path / "out" / "bin" / "x").stat().st_size == 1 << 20


def test_a_manifest_that_is_a_directory_is_refused(tmp_path):
    path = tarball(tmp_path / "i.file", [("manifest.json", b"", tarfile.DIRTYPE, None)])
    with pytest.raises(ImageError, match="manifest.json in .* is not a regular file"):
        unpack_image(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_deeply_nested_manifest_is_refused(tmp_path):
    deep = b"[" * 200_000 + b"]" * 200_000
    path = tarball(tmp_path / "i.file", [regular("manifest.json", deep)])
    with pytest.raises(ImageError, match=r"manifest.json in .* (is not JSON|is \d+ bytes)"):
        unpack_image(path, tmp_path / "out")


def test_a_nested_manifest_under_the_size_bound_is_refused_as_not_json(tmp_path):
    deep = b"[" * 30_000 + b"]" * 30_000
    path = tarball(tmp_path / "i.file", [regular("manifest.json", deep)])
    with pytest.raises(ImageError, match="is not JSON: nested too deeply"):
        unpack_image(path, tmp_path / "out")


def test_a_corrupt_deflate_stream_is_refused(tmp_path):
    good = build_workload_image(tmp_path / "img", "sapi")
    data = bytearray((tmp_path / "img" / f"{good.uuid}.file").read_bytes())
    for i in range(20, min(len(data) - 8, 400)):
        data[i] ^= 0x5A          # garble the deflate stream, keep the gzip header
    bad = tmp_path / "bad.file"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="is not a readable tarball"):
        unpack_image(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_too_many_entries_are_refused(tmp_path, monkeypatch):
    import sdcadm.images

    monkeypatch.setattr(sdcadm.images, "MAX_MEMBERS", 5)
    path = tarball(tmp_path / "i.file", [manifest_entry(), *[regular(f"f{i}") for i in range(10)]])
    with pytest.raises(ImageError, match="more than 5 entries"):
        unpack_image(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()

"""Image files: build, check and safely unpack.

An image file is a gzip'd tarball holding ``manifest.json`` (schema
``image_manifest``: name, version, the command to run) and the files of the
instance root. Its Image record (uuid, name, version, sha256, size, origin)
lives in the store and beside the file as ``<uuid>.json``.

Unpacking refuses absolute paths, ``..``, links that leave the root, device
files and anything that is not a regular file, directory or in-root link. It
is bounded: the decompressed stream may not exceed ``max_bytes`` (default
``MAX_UNPACKED``; a gzip bomb is stopped while it is being read, before any
file is written), nor hold more than ``MAX_MEMBERS`` entries, and the
manifest must be a small regular file of plain JSON.
"""

import io
import json
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from sdcadm.errors import ImageError
from sdcadm.fsutil import copy_atomic, sha256_file, write_json_atomic
from sdcadm.model import Image
from sdcadm.schemas import validate

MANIFEST = "manifest.json"
MAX_UNPACKED = 4 << 30     # bytes of tar stream an image may expand to
MAX_MEMBERS = 100_000
MAX_MANIFEST = 64 << 10


class BoundedReader(io.RawIOBase):
    """A read-only view of a (decompressing) file that refuses to go past
    ``limit`` bytes: tarfile reads and skips through it, so the limit bounds
    the work a bomb can cause, not just what is written."""

    def __init__(self, raw, limit, name):
        super().__init__()
        self.raw, self.limit, self.name = raw, limit, name

    def _check(self, position):
        if position > self.limit:
            raise ImageError(f"image file {self.name} expands beyond {self.limit} bytes",
                             hint="a compressed image this large is refused as a possible "
                                  "decompression bomb; raise the limit only for a trusted image")

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, buffer):
        data = self.raw.read(len(buffer))
        self._check(self.raw.tell())
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset, whence=io.SEEK_SET):
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.raw.tell() + offset}.get(whence)
        if target is None:
            raise io.UnsupportedOperation("seek from the end of a compressed stream")
        self._check(target)
        return self.raw.seek(target)

    def tell(self):
        return self.raw.tell()


def build_image(out_dir, uuid, manifest, files, origin=None):
    """Write ``<uuid>.file`` and ``<uuid>.json`` into ``out_dir``.

    ``files``: {relative path: bytes}. Returns the Image record. Builds are
    reproducible (fixed mtimes, sorted entries) so the sha256 is stable.
    """
    validate("image_manifest", manifest, "image manifest")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{uuid}.file"
    tmp = path.with_suffix(".file.tmp")
    entries = {MANIFEST: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), **files}
    with open(tmp, "wb") as raw:
        import gzip

        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w") as tar:
            for name in sorted(entries):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(entries[name]), 0, 0o644
                tar.addfile(info, io.BytesIO(entries[name]))
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    image = Image(uuid=uuid, name=manifest["name"], version=manifest["version"],
                  sha256=sha256_file(path), size=path.stat().st_size, origin=origin)
    write_json_atomic(out_dir / f"{uuid}.json", image.to_dict())
    return image


def read_image_record(path):
    """Load and validate an image's ``<uuid>.json``."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot read image record {path}: {e}") from None
    validate("image", doc, path)
    return Image.from_dict(doc)


def check_member(member, root="."):
    """Raise ImageError unless ``member`` stays inside the root when extracted."""
    name = member.name
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith("/"):
        raise ImageError(f"image entry {name!r} is an absolute path")
    if ".." in pure.parts:
        raise ImageError(f"image entry {name!r} contains '..'")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        base = pure.parent if member.issym() else PurePosixPath(".")
        if target.is_absolute():
            raise ImageError(f"image entry {name!r} links to absolute path {member.linkname!r}")
        depth = 0
        for part in (base / target).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise ImageError(f"image entry {name!r} links outside the image ({member.linkname!r})")
    elif not (member.isfile() or member.isdir()):
        raise ImageError(f"image entry {name!r} is not a regular file, directory or link")


def open_bounded(image_file, max_bytes):
    """The decompressed tar stream of ``image_file`` behind a BoundedReader."""
    import bz2
    import gzip
    import lzma

    with open(image_file, "rb") as f:
        magic = f.read(6)
    opener = (gzip.open if magic[:2] == b"\x1f\x8b" else bz2.open if magic[:3] == b"BZh"
              else lzma.open if magic[:6] == b"\xfd7zXZ\x00" else open)
    return io.BufferedReader(BoundedReader(opener(image_file, "rb"), max_bytes, image_file))


def read_manifest_member(tar, members, image_file):
    """The image's manifest: one small regular file holding JSON."""
    found = [m for m in members if m.name.lstrip("./") == MANIFEST]
    if not found:
        raise ImageError(f"image file {image_file} has no {MANIFEST}")
    member = found[-1]
    if not member.isfile():
        raise ImageError(f"{MANIFEST} in {image_file} is not a regular file")
    if member.size > MAX_MANIFEST:
        raise ImageError(f"{MANIFEST} in {image_file} is {member.size} bytes (at most {MAX_MANIFEST})")
    try:
        return json.loads(tar.extractfile(member).read())
    except (ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ImageError(f"{MANIFEST} in {image_file} is not JSON: {reason}") from None


def unpack_image(image_file, dest, expected_sha256=None, max_bytes=MAX_UNPACKED):
    """Check and unpack an image into ``dest``; return its validated manifest.

    Every entry is checked before anything is written, so a bad image leaves
    ``dest`` untouched.
    """
    image_file = Path(image_file)
    if expected_sha256 is not None:
        actual = sha256_file(image_file)
        if actual != expected_sha256:
            raise ImageError(f"image file {image_file} has sha256 {actual}, expected {expected_sha256}",
                             hint="the file is corrupt or not the image the record names; re-import it")
    try:
        with open_bounded(image_file, max_bytes) as stream, \
                tarfile.open(fileobj=stream, mode="r:") as tar:
            members, manifest = _checked_members(tar, image_file)
            Path(dest).mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as e:
        raise ImageError(f"image file {image_file} is not a readable tarball: {e}") from None
    return manifest


def _checked_members(tar, image_file):
    """(every entry, checked safe; the validated manifest) of an open image tarball."""
    members = []
    for member in tar:
        check_member(member)
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise ImageError(f"image file {image_file} has more than {MAX_MEMBERS} entries")
    manifest = read_manifest_member(tar, members, image_file)
    validate("image_manifest", manifest, f"{image_file}:{MANIFEST}")
    return members, manifest


def check_image_file(record, image_file, max_bytes=MAX_UNPACKED):
    """ImageError unless ``image_file`` is the image ``record`` (an Image)
    describes: its size and sha256, every entry safe to unpack, and a valid
    manifest naming the record's name and version. Writes nothing."""
    image_file = Path(image_file)
    try:
        size = image_file.stat().st_size
    except OSError as e:
        raise ImageError(f"cannot read image file {image_file}: {e.strerror}",
                         hint="give the file with --file, or put it beside the record as "
                              f"{record.uuid}.file") from None
    if record.size and size != record.size:
        raise ImageError(f"image file {image_file} is {size} bytes, its record says {record.size}",
                         hint="the file is truncated or not this image's")
    actual = sha256_file(image_file)
    if actual != record.sha256:
        raise ImageError(f"image file {image_file} has sha256 {actual}, its record says "
                         f"{record.sha256}", hint="the file is corrupt or not this image's")
    try:
        with open_bounded(image_file, max_bytes) as stream, \
                tarfile.open(fileobj=stream, mode="r:") as tar:
            _, manifest = _checked_members(tar, image_file)
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as e:
        raise ImageError(f"image file {image_file} is not a readable tarball: {e}") from None
    if (manifest.get("name"), manifest.get("version")) != (record.name, record.version):
        raise ImageError(f"image file {image_file} holds {manifest.get('name')} "
                         f"{manifest.get('version')}, its record says {record.name} "
                         f"{record.version}", hint="the record and the file do not belong together")
    return manifest


def import_image(store, image_dir, record_path, image_file=None):
    """Check an image (record ``<uuid>.json`` and its file) and add it: the
    file and record into ``image_dir`` (atomically), then the record into the
    store. Returns (Image, already): ``already`` when the store had it with
    the same sha256. Refused (ImageError, Conflict, nothing changed) when the
    file does not match its record or manifest, its origin is not imported,
    or another image holds its UUID."""
    from sdcadm.errors import Conflict, NotFound

    record = read_image_record(record_path)
    image_file = Path(image_file or Path(record_path).with_name(f"{record.uuid}.file"))
    check_image_file(record, image_file)
    if record.origin:
        try:
            store.get_image(record.origin)
        except NotFound:
            raise ImageError(f"image {record.name} {record.version} is built on image "
                             f"{record.origin}, which is not imported",
                             hint="import its origin first") from None
    try:
        known = store.get_image(record.uuid)
    except NotFound:
        known = None
    if known is not None and known.sha256 != record.sha256:
        raise Conflict(f"image {record.uuid} is already imported as {known.name} "
                       f"{known.version} with another sha256",
                       hint="an image's UUID names one file only: give this one a new UUID")
    image_dir = Path(image_dir)
    digest, _ = copy_atomic(image_file, image_dir / f"{record.uuid}.file")
    if digest != record.sha256:
        raise ImageError(f"image file {image_file} changed while it was imported",
                         hint="import it again once nothing writes to it")
    write_json_atomic(image_dir / f"{record.uuid}.json", record.to_dict())
    if known is None:
        store.put_image(record)
    return record, known is not None


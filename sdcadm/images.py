"""Image files: build, check and safely unpack.

An image file is a gzip'd tarball holding ``manifest.json`` (schema
``image_manifest``: name, version, the command to run) and the files of the
instance root. Its Image record (uuid, name, version, sha256, size, origin)
lives in the store and beside the file as ``<uuid>.json``.

Unpacking refuses absolute paths, ``..``, links that leave the root, device
files and anything that is not a regular file, directory or in-root link.
"""

import io
import json
import os
import tarfile
from pathlib import Path, PurePosixPath

from sdcadm.errors import ImageError
from sdcadm.fsutil import sha256_file, write_json_atomic
from sdcadm.model import Image
from sdcadm.schemas import validate

MANIFEST = "manifest.json"


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


def unpack_image(image_file, dest, expected_sha256=None):
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
        with tarfile.open(image_file, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                check_member(m)
            names = {m.name.lstrip("./") for m in members}
            if MANIFEST not in names:
                raise ImageError(f"image file {image_file} has no {MANIFEST}")
            manifest_member = next(m for m in members if m.name.lstrip("./") == MANIFEST)
            try:
                manifest = json.loads(tar.extractfile(manifest_member).read())
            except ValueError as e:
                raise ImageError(f"{MANIFEST} in {image_file} is not JSON: {e}") from None
            validate("image_manifest", manifest, f"{image_file}:{MANIFEST}")
            Path(dest).mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ImageError(f"image file {image_file} is not a readable tarball: {e}") from None
    return manifest

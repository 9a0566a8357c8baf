"""`restore-data verify`, the files beside the dataset copies: every metadata
file and image the manifest lists is there, unchanged (sha256 and size) and
valid (its schema; an image against its record, every entry inside its
root), and nothing is there that the manifest does not list. Each problem is
one line of the service's report, naming the file.
"""

import json
import os
import stat
from dataclasses import dataclass, field

from sdcadm.errors import ImageError
from sdcadm.fsutil import sha256_file
from sdcadm.model import Image
from sdcadm.restore_data.imagecopy import check_image_file
from sdcadm.restore_data.layout import INSTS_JSON, MANIFEST, SERVICE_JSON


@dataclass
class Findings:
    """What a check found: problems (one line each, naming the file) and what it read.
    verify's ServiceReport is one too."""

    problems: list = field(default_factory=list)
    files: int = 0
    bytes: int = 0


def check_files(svc_dir, manifest, report):
    """Every listed file present and unchanged; nothing unlisted."""
    listed = manifest["files"]
    check_listed(svc_dir, listed, report)
    for rel in _metadata_files(svc_dir):
        if rel not in listed:
            report.problems.append(f"extra: {rel}")


def check_listed(svc_dir, listed, report):
    """Every file of ``listed`` ({rel: {"sha256", "bytes"}}, from the manifest)
    present under ``svc_dir`` and unchanged; the seeding of one instance checks
    its own files with this."""
    for rel, want in sorted(listed.items()):
        path = svc_dir / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            report.problems.append(f"missing: {rel}")
            continue
        if not stat.S_ISREG(st.st_mode):
            report.problems.append(f"not a regular file: {rel}")
            continue
        digest, size = sha256_file(path, follow_symlinks=False), st.st_size
        report.files += 1
        report.bytes += size
        if digest != want["sha256"] or size != want["bytes"]:
            report.problems.append(f"changed: {rel} (sha256 {digest[:12]}…, {size} bytes; "
                                   f"manifest: {want['sha256'][:12]}…, {want['bytes']} bytes)")


def _metadata_files(svc_dir):
    out = []
    for entry in sorted(svc_dir.iterdir()):
        if entry.name.startswith(".") or entry.name in ("datasets", MANIFEST):
            continue
        if entry.name == "images" and entry.is_dir() and not entry.is_symlink():
            out.extend(f"images/{p.name}" for p in sorted(entry.iterdir())
                       if not p.name.startswith("."))
        else:
            out.append(entry.name)
    return out


def load_checked(svc_dir, rel, kind, report):
    from sdcadm.schemas import problems

    path = svc_dir / rel
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        report.problems.append(f"invalid: {rel}: not JSON ({e})")
        return None
    found = problems(kind, doc)
    if found:
        report.problems.append(f"invalid: {rel}: " + "; ".join(found[:5]))
        return None
    return doc


def check_content(svc_dir, manifest, report):
    from sdcadm.schemas import problems

    load_checked(svc_dir, SERVICE_JSON, "service", report)
    insts = load_checked(svc_dir, INSTS_JSON, "restore_insts", report)
    for n, inst in enumerate(insts or []):
        found = problems("instance", inst)
        if found:
            report.problems.append(f"invalid: {INSTS_JSON}[{n}]: " + "; ".join(found[:5]))
    for rel in sorted(manifest["files"]):
        if rel.startswith("images/") and rel.endswith(".json"):
            record = load_checked(svc_dir, rel, "image", report)
            file_rel = rel[:-len(".json")] + ".file"
            if record is None:
                continue
            if file_rel not in manifest["files"]:
                report.problems.append(f"missing: {file_rel} (the image file of {rel})")
                continue
            if not (svc_dir / file_rel).is_file() or (svc_dir / file_rel).is_symlink():
                continue  # reported by check_files
            try:
                check_image_file(svc_dir / file_rel, Image.from_dict(record))
            except ImageError as e:
                report.problems.append(f"refused: {file_rel}: {e}")

"""Making a new set of metadata files of a service visible all at once.

The puller writes every new file of ``svc-<service>/`` (service.json,
insts.json, vm-*.json, images/*, and manifest.json last) into ``.pending/``
(each fsync'd). Committing renames ``.pending`` to ``.commit`` in one atomic
step -- from then on the new set is decided -- and rolls it forward: each file
is renamed into place, the manifest last, and ``.commit`` removed. A crash
before the rename leaves the old set (``.pending`` is discarded); a crash
after it is finished by the next ``recover()``, which every reader and writer
runs first under the commit lock. So the manifest never describes files that
are not there.
"""

import os
from pathlib import Path

from sdcadm.fsutil import canonical_json, fsync_dir, sha256_bytes, write_bytes_atomic
from sdcadm.restore_data.files import remove_tree
from sdcadm.restore_data.layout import MANIFEST

# How long a commit waits for readers (a verify clones under the commit lock)
# and readers wait for a commit.
COMMIT_LOCK_TIMEOUT = 600.0


class Staging:
    """Files written into ``.pending/`` of a service directory."""

    def __init__(self, path):
        self.path = Path(path)
        remove_tree(self.path)
        self.path.mkdir(parents=True)

    def file(self, rel):
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def discard(self, rels):
        """Remove these staged files (an instance whose staging failed)."""
        for rel in rels:
            try:
                (self.path / rel).unlink()
            except FileNotFoundError:
                pass

    def keep_only(self, listed):
        """Drop staged files the manifest does not list (a half-staged instance
        whose previous files are kept instead)."""
        for dirpath, _dirs, names in os.walk(self.path):
            for name in names:
                path = Path(dirpath) / name
                if str(path.relative_to(self.path)) not in listed:
                    path.unlink()

    def write_json(self, rel, doc):
        """Write ``doc`` at ``rel``; return its manifest entry."""
        data = canonical_json(doc).encode()
        write_bytes_atomic(self.file(rel), data)
        return {"sha256": sha256_bytes(data), "bytes": len(data)}


def commit(service_dir, staging, manifest_doc):
    """Write the (sealed) manifest into staging, then make the set visible."""
    service_dir = Path(service_dir)
    staging.keep_only(manifest_doc["files"])
    write_bytes_atomic(staging.path / MANIFEST, canonical_json(manifest_doc).encode())
    fsync_dir(staging.path)
    committing = service_dir / ".commit"
    roll_forward(service_dir)         # an older interrupted commit goes first
    os.rename(staging.path, committing)
    fsync_dir(service_dir)
    roll_forward(service_dir)


def roll_forward(service_dir):
    """Finish moving ``.commit/`` into place (idempotent); True if there was one."""
    service_dir = Path(service_dir)
    committing = service_dir / ".commit"
    if not committing.is_dir():
        return False
    touched = {service_dir}
    for dirpath, _dirs, names in os.walk(committing):
        for name in names:
            src = Path(dirpath) / name
            rel = src.relative_to(committing)
            if str(rel) == MANIFEST:
                continue
            dest = service_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
            touched.add(dest.parent)
    for d in touched:
        fsync_dir(d)
    manifest = committing / MANIFEST
    if manifest.exists():
        os.replace(manifest, service_dir / MANIFEST)
        fsync_dir(service_dir)
    remove_tree(committing)
    return True


def recover(service_dir):
    """Before reading or writing a service directory: finish a commit that was
    interrupted, discard a staging area that was never committed."""
    service_dir = Path(service_dir)
    remove_tree(service_dir / ".pending")
    return roll_forward(service_dir)


def remove_unlisted(service_dir, listed):
    """Remove metadata files the committed manifest does not list (old vm-*.json,
    images no longer used). Dataset copies are left to the dataset backend."""
    service_dir = Path(service_dir)
    keep = set(listed) | {MANIFEST}
    removed = []
    for entry in service_dir.iterdir() if service_dir.is_dir() else ():
        if entry.name.startswith(".") or entry.name == "datasets":
            continue
        if entry.name == "images" and entry.is_dir() and not entry.is_symlink():
            for image in entry.iterdir():
                rel = f"images/{image.name}"
                if rel not in keep and not image.name.startswith("."):
                    remove_tree(image)
                    removed.append(rel)
            continue
        if entry.name not in keep:
            remove_tree(entry)
            removed.append(entry.name)
    return removed

"""The DC store as one more source of restore data: ``store/`` (docs/store.md).

Every sync cycle, a headnode on the etcd store takes a snapshot of the store
through etcd's API (``store.etcd_maintenance.save_snapshot``: etcd's own
snapshot format) and keeps it next to the other restore data::

    store/
      snapshot-<revision>-<sha256[:12]>.db   the snapshot (what `etcdctl snapshot restore` reads)
      manifest.json                          which file, its sha256 and bytes, the store's
                                             revision, cluster id, member, time; signed
      .tmp-*                                 a snapshot being taken (removed on failure)

The same rules as every other copy: the snapshot is streamed to a scratch
file, checked whole (etcd's trailing sha256, then ``etcdctl snapshot status``
for its exact revision when etcdctl is installed), fsync'd and renamed; the
manifest naming it is written last, atomically, signed with the DC's
restore-data key; only then are older snapshot files removed. A snapshot that
fails any check is removed and the last good one stays as it was.

``read_store_manifest`` / ``check_store_copy`` are what `store status` and
`store recover` read, here or from another headnode.
"""

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sdcadm.errors import RestoreDataBroken, SdcadmError, StoreError, TransportError
from sdcadm.fsutil import canonical_json, fsync_dir, sha256_file, which, write_bytes_atomic
from sdcadm.restore_data.manifest import ManifestError, checksum, parse_manifest, signature

log = logging.getLogger(__name__)

STORE_DIR = "store"
MANIFEST = "manifest.json"
VERSION = 1
MAX_MANIFEST_BYTES = 64 << 10


def store_dir(layout):
    return layout.root / STORE_DIR


def snapshot_name(revision, sha256):
    return f"snapshot-{int(revision)}-{sha256[:12]}.db"


# -- the manifest ---------------------------------------------------------------------

def seal_store_manifest(doc, key):
    from sdcadm.schemas import problems

    doc = dict(doc, version=VERSION)
    doc.pop("checksum", None)
    doc["signature"] = signature(doc, key)
    doc["checksum"] = checksum(doc)
    found = problems("store_manifest", doc)
    if found:
        raise RestoreDataBroken("store snapshot manifest would be invalid: " + "; ".join(found))
    return doc


def parse_store_manifest(raw, key, path):
    """The validated, signed store manifest in ``raw``; ManifestError saying
    what is wrong (truncated, not JSON, invalid, edited, not signed with this
    DC's key)."""
    from sdcadm.schemas import problems

    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(path, f"is over {MAX_MANIFEST_BYTES} bytes: not a store manifest")
    return parse_manifest(raw, key, path, check=lambda doc: problems("store_manifest", doc))


def read_store_manifest(layout):
    """This headnode's store manifest, or None when it never took a snapshot;
    ManifestError when it is there but bad."""
    path = store_dir(layout) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ManifestError(path, f"cannot be read: {e.strerror}") from None
    return parse_store_manifest(raw, layout.key, path)


def check_store_copy(path, manifest):
    """Problems (text) of the snapshot file at ``path`` against its manifest:
    missing, not a regular file, size or sha256 that differ, or not whole."""
    from sdcadm.store.etcd_maintenance import check_snapshot_bytes

    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return [f"{path}: missing (the manifest names it)"]
    if not path.is_file() or path.is_symlink():
        return [f"{path}: not a regular file"]
    if st.st_size != manifest["bytes"]:
        return [f"{path}: {st.st_size} bytes, the manifest says {manifest['bytes']}"]
    try:
        digest = sha256_file(path, follow_symlinks=False)
    except OSError as e:
        return [f"{path}: cannot be read: {e.strerror}"]
    if digest != manifest["sha256"]:
        return [f"{path}: sha256 {digest[:12]}… does not match the manifest's "
                f"{manifest['sha256'][:12]}… (changed or damaged)"]
    return check_snapshot_bytes(path)


# -- taking a snapshot ------------------------------------------------------------------

@dataclass
class StoreSnapshotResult:
    """What one cycle did with the store: ``status`` ok | failed | skipped."""

    status: str
    revision: int | None = None
    bytes: int = 0
    file: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self):
        return dict(self.__dict__)


class StoreSnapshotter:
    def __init__(self, config, layout, clock=time.time, shell=None):
        self.config, self.layout, self.clock = config, layout, clock
        self._shell = shell

    @property
    def shell(self):
        if self._shell is None:
            from sdcadm.transport.local import LocalShell

            self._shell = LocalShell()
        return self._shell

    def take(self, dc_revision=None):
        """Take a snapshot of the store and make it this headnode's copy; never
        raises for the store's sake: a failure is the result's ``error`` and the
        last good copy stays."""
        started = time.monotonic()
        if self.config.store.backend != "etcd":
            return StoreSnapshotResult("skipped", error="the sqlite store is one file: there is "
                                                        "no cluster to snapshot")
        try:
            result = self._take(dc_revision)
        except (SdcadmError, OSError) as e:
            message = e.message if isinstance(e, SdcadmError) else str(e)
            log.warning("store snapshot failed: %s", message,
                        extra={"event": "store-snapshot-failed"})
            return StoreSnapshotResult("failed", error=message,
                                       seconds=round(time.monotonic() - started, 3))
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _take(self, dc_revision):
        from sdcadm.store.etcd_maintenance import check_snapshot_bytes, save_snapshot

        directory = store_dir(self.layout)
        directory.mkdir(parents=True, exist_ok=True)
        key = self.layout.key      # before any work: a missing key is a config error
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".db", dir=directory)
        try:
            taken = self.clock()
            with os.fdopen(fd, "w+b") as out:
                info = save_snapshot(self.config.store.etcd_endpoints, out,
                                     timeout=max(30.0, float(self.config.store.timeout)))
                os.fsync(out.fileno())
            problems = check_snapshot_bytes(tmp)
            if problems:
                raise StoreError("; ".join(problems))
            revision = self._exact_revision(tmp) or info["revision"]
            name = snapshot_name(revision, info["sha256"])
            os.replace(tmp, directory / name)
            fsync_dir(directory)
        except BaseException:
            _unlink(tmp)
            raise
        doc = seal_store_manifest({
            "backend": "etcd", "file": name, "bytes": info["bytes"], "sha256": info["sha256"],
            "revision": revision, "cluster_id": info["cluster_id"],
            "member_id": info["member_id"], "endpoint": info["endpoint"], "taken": taken,
            "dc_revision": dc_revision, "prefix": self.config.store.etcd_prefix,
            "receiver": {"server_uuid": self.config.server_uuid or "",
                         "hostname": self.config.hostname or self.config.server_uuid or ""},
        }, key)
        write_bytes_atomic(directory / MANIFEST, canonical_json(doc).encode())
        for p in directory.iterdir():   # older snapshots and leftovers of killed cycles
            if p.name not in (name, MANIFEST) and (p.name.startswith("snapshot-")
                                                   or p.name.startswith(".tmp-")):
                if p.name.startswith(".tmp-") and self._recent(p):
                    continue            # another cycle's scratch file, still being written
                _unlink(p)
        return StoreSnapshotResult("ok", revision=revision, bytes=info["bytes"], file=name)

    def _recent(self, path):
        try:
            return time.time() - path.stat().st_mtime < 600
        except OSError:
            return False

    def _exact_revision(self, path):
        """The revision inside the snapshot (``etcdctl snapshot status``), or
        None without etcdctl (the revision read just before is kept then)."""
        if which("etcdctl") is None:
            return None
        try:
            out = self.shell.run([which("etcdctl"), "snapshot", "status", str(path), "-w",
                                  "json"], timeout=60).stdout
            return int(json.loads(out)["revision"])
        except (TransportError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"etcdctl cannot read the snapshot just taken: {e}") from None


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

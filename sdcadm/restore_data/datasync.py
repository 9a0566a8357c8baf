"""Pulling one instance's delegate dataset through the dataset backend.

The backend makes the new copy (incremental where it can); here it is listed
and checked before the manifest may name it: a copy holding a link that
escapes it, or a device file, is refused and the previous copy kept. Files
are hashed once: by the backend when it reports hashes, else here, reusing
the hashes of unchanged files (``layout.hash_cache``). Old copies beyond
``datasets.keep`` are pruned once a new one is committed.
"""

import logging

from sdcadm.datasets import digest
from sdcadm.datasets.tree import scan_tree
from sdcadm.errors import DatasetError, TransportError
from sdcadm.fsutil import write_cache_atomic
from sdcadm.progress import Progress, notify
from sdcadm.restore_data.commit import COMMIT_LOCK_TIMEOUT
from sdcadm.restore_data.files import FileLock, read_json, remove_tree
from sdcadm.restore_data.sources import source_ref

log = logging.getLogger(__name__)

MAX_LISTED = 10   # problems named in a refusal; the rest are counted


class CopyRefused(DatasetError):
    """A new dataset copy is unsafe to restore (a link escaping it, a device file)."""


class DatasetSync:
    def __init__(self, config, layout, backend, receiver, clock):
        """``backend``: a callable returning the dataset backend (made on first use)."""
        self.config, self.layout, self._backend = config, layout, backend
        self.receiver, self.clock = receiver, clock

    def sync(self, name, item, reseed=False, observer=None, prev=None):
        """Pull ``item``'s dataset; return (its manifest entry, bytes moved, the
        paths that vanished from the live source while it was copied).
        ``prev``: the entry of the copy the manifest names now -- kept as it
        is (not listed again) when the backend found nothing new since it."""
        backend = self._backend()
        inst = item.instance
        replica = self.layout.dataset_dir(name, inst.uuid)
        replica.parent.mkdir(parents=True, exist_ok=True)
        step = f"restore-data/{name}/{inst.alias}"

        def relay(event):
            notify(observer, Progress(step, f"{inst.alias}: {getattr(event, 'message', event)}",
                                      getattr(event, "done", None), getattr(event, "total", None)))

        with FileLock(self.layout.instance_lock(inst.uuid), timeout=COMMIT_LOCK_TIMEOUT,
                      what=f"the copy of {inst.alias}"):
            result = backend.sync(source_ref(self.config, item), str(replica), self.receiver,
                                  reseed=reseed, observer=relay)
            if (result.unchanged and prev and prev.get("backend") == backend.name
                    and prev.get("snapshot") == result.snapshot
                    and prev.get("digest") == digest.ALGORITHM
                    and isinstance(prev.get("files"), dict)):
                # The very copy checked when the manifest took it, and nothing
                # in it changed since (the backend checked): no walk again.
                return dict(prev, synced=self.clock()), 0, ()
            current = backend.current_path(str(replica))
            if current is None:
                raise DatasetError(f"the dataset backend reported a copy of {inst.alias} "
                                   "but has no current copy")
            # The backend's own walk of this very copy, when it made one.
            tree = result.tree or self._scan(name, inst.uuid, current, result.files)
        if tree.problems:
            listed = "; ".join(tree.problems[:MAX_LISTED])
            more = len(tree.problems) - MAX_LISTED
            raise CopyRefused(
                f"refused the new copy of {inst.alias}'s dataset ({result.snapshot}): {listed}"
                + (f" (and {more} more)" if more > 0 else ""),
                hint="fix the source dataset; the previous copy is kept")
        dataset = {"backend": backend.name, "digest": digest.ALGORITHM, "snapshot": result.snapshot,
                   "guid": result.guid, "bytes": tree.bytes, "synced": self.clock(),
                   "files": tree.files, "links": tree.links}
        if result.vanished:
            # Kept, with a count: the files and links above are what the copy holds.
            dataset["vanished"] = len(result.vanished)
        return dataset, int(result.bytes_moved or 0), tuple(result.vanished)

    def _scan(self, name, uuid, current, backend_files):
        if backend_files:    # the backend hashed this copy already: trust it
            return scan_tree(current, known=backend_files)
        cache_path = self.layout.hash_cache(name, uuid)
        cache = read_json(cache_path)
        tree = scan_tree(current, cache if isinstance(cache, dict) else None)
        write_cache_atomic(cache_path, tree.cache)
        return tree

    def remove_hash_caches(self, name, keep):
        """Remove the hash caches of instances not in ``keep``."""
        for uuid in self.layout.hash_cache_uuids(name):
            if uuid not in keep:
                remove_tree(self.layout.hash_cache(name, uuid))

    def prune_copies(self, name, uuid, snapshot):
        """Keep datasets.keep copies, and never the one the manifest names."""
        backend = self._backend()
        replica = str(self.layout.dataset_dir(name, uuid))
        try:
            names = [c.name for c in backend.copies(replica)]
            keep = int(self.config.datasets.keep)
            if snapshot in names:
                keep = max(keep, len(names) - names.index(snapshot))
            backend.prune(replica, keep)
        except (DatasetError, TransportError, OSError) as e:
            log.warning("pruning old copies of %s: %s", uuid, e,
                        extra={"event": "restore-data-prune-failed", "instance": uuid})

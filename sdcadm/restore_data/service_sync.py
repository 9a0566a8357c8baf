"""Syncing one service's restore data, under its lock, committed at once.

Never two syncs of one service at a time (a lock file per service, across
threads and processes). The new metadata is staged, each instance synced
(``instance_sync``), then the metadata and the manifest are committed
together (``commit.py``) under the commit lock that readers share: a reader
sees the old set or the new one, never a mix. Copies no longer planned stay,
still described, until the pruner removes them.
"""

import logging

from sdcadm.progress import Progress, notify
from sdcadm.restore_data import commit as commits
from sdcadm.restore_data.commit import COMMIT_LOCK_TIMEOUT
from sdcadm.restore_data.events import ServiceResult
from sdcadm.restore_data.files import FileLock, LockBusy
from sdcadm.restore_data.manifest import read_previous, seal, service_status, total_bytes
from sdcadm.restore_data.staging import carry_files, stage_service

log = logging.getLogger(__name__)


class ServiceSync:
    def __init__(self, layout, receiver, hostname, instances, datasets, reporter, clock):
        """``hostname``: this server's, when the store does not list it;
        ``instances``: an InstanceSync; ``datasets``: a DatasetSync;
        ``reporter``: a StatusReporter."""
        self.layout, self.receiver, self.hostname, self.clock = layout, receiver, hostname, clock
        self.instances, self.datasets, self.reporter = instances, datasets, reporter

    def sync(self, name, items, facts, *, reseed=False, observer=None, lock_timeout=0.0):
        """Sync one service (under its lock); return its ServiceResult."""
        started = self.clock()
        if not items:
            notify(observer, Progress(f"restore-data/{name}", f"{name}: nothing to pull "
                                      "(HA, or no instance on another server)"))
            return ServiceResult(name, "ok", None, 0.0, ())
        try:
            with FileLock(self.layout.service_lock(name), timeout=lock_timeout,
                          what=f"restore data of {name}"):
                return self.sync_locked(name, items, facts, reseed, observer, started)
        except LockBusy as e:
            return ServiceResult(name, "busy", str(e), self.clock() - started, ())
        except Exception as e:  # noqa: BLE001 - one service must not stop the others
            log.exception("restore-data sync of %s failed", name,
                          extra={"event": "restore-data-failed", "service": name})
            return ServiceResult(name, "failed", f"{type(e).__name__}: {e}",
                                 self.clock() - started, ())

    def _commit_lock(self, name):
        return FileLock(self.layout.commit_lock(name), timeout=COMMIT_LOCK_TIMEOUT,
                        what=f"restore data of {name}")

    def sync_locked(self, name, items, facts, reseed, observer, started):
        """The sync proper, the service's lock held by the caller."""
        svc_dir = self.layout.service_dir(name)
        svc_dir.mkdir(parents=True, exist_ok=True)
        with self._commit_lock(name):
            commits.recover(svc_dir)
        previous = read_previous(self.layout.manifest(name), name, self.layout.key) or {}
        prev_instances, prev_files = previous.get("instances", {}), previous.get("files", {})
        staging = commits.Staging(self.layout.pending(name))
        files = stage_service(staging, facts, name)
        entries, results = {}, []
        for n, item in enumerate(items, 1):
            notify(observer, Progress(f"restore-data/{name}",
                                      f"{name}: {item.instance.alias} from "
                                      f"{item.source.hostname if item.source else '?'}",
                                      n - 1, len(items)))
            entry, result = self.instances.sync(name, item, facts, staging, files,
                                                prev_instances.get(item.instance.uuid),
                                                prev_files, reseed, observer)
            entries[item.instance.uuid] = entry
            results.append(result)
        planned = set(entries)
        for uuid, entry in prev_instances.items():
            if uuid not in planned:
                entries[uuid] = entry
                carry_files(uuid, entry, prev_files, files)
        status, error = service_status({u: entries[u] for u in planned})
        doc = self._manifest(name, facts, started, status, error, files, entries)
        with self._commit_lock(name):
            commits.commit(svc_dir, staging, doc)
            commits.remove_unlisted(svc_dir, files)
            self.datasets.remove_hash_caches(name, entries)
            for uuid in planned:
                if entries[uuid]["status"] == "ok" and entries[uuid]["dataset"]:
                    self.datasets.prune_copies(name, uuid, entries[uuid]["dataset"]["snapshot"])
        self.reporter.record(name, results, entries)
        warnings = [f"{r.alias}: {r.warning}" for r in results if r.warning]
        return ServiceResult(name, status, error, self.clock() - started,
                             tuple(r.to_dict() for r in results),
                             sum(r.vanished for r in results), "; ".join(warnings) or None)

    def _manifest(self, name, facts, started, status, error, files, entries):
        doc = {
            "service": name,
            "receiver": {"server_uuid": self.receiver,
                         "hostname": facts.hostname(self.receiver, self.hostname)},
            "dc_revision": facts.revision, "started": started, "finished": self.clock(),
            "status": status, "error": error, "bytes": 0, "files": files, "instances": entries,
            "checksum": "0" * 64,
        }
        doc["bytes"] = total_bytes(doc)
        return seal(doc, self.layout.key)

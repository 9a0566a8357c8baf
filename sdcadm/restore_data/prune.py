"""Pruning restore data: copies of instances that left the plan.

An instance that is gone from the DC store (or no longer needs a copy here:
moved to this headnode, or its service became HA) keeps its copy, still
described by the manifest and still verified, for ``prune_grace`` seconds
from when it was first seen gone (``.vanished.json``), then the copy, its
vm-<uuid>.json, images no longer used and its status row are removed (the
whole svc-<service>/ when nothing is left). A store that lists no instance at
all prunes nothing: that is a broken store, not an empty DC.
"""

import logging

from sdcadm.errors import DatasetError, TransportError
from sdcadm.fsutil import write_json_atomic
from sdcadm.progress import Progress, notify
from sdcadm.restore_data import commit as commits
from sdcadm.restore_data.commit import COMMIT_LOCK_TIMEOUT
from sdcadm.restore_data.files import FileLock, LockBusy, read_json, remove_tree
from sdcadm.restore_data.layout import INSTS_JSON, SERVICE_JSON
from sdcadm.restore_data.manifest import read_previous, seal, service_status, total_bytes
from sdcadm.restore_data.plan import plan_prune
from sdcadm.restore_data.staging import carry_files

log = logging.getLogger(__name__)


class Pruner:
    def __init__(self, config, layout, backend, reporter, clock):
        """``backend``: a callable returning the dataset backend; ``reporter``:
        the StatusReporter whose rows of pruned copies are removed."""
        self.config, self.layout, self._backend = config, layout, backend
        self.reporter, self.clock = reporter, clock

    def prune(self, full_plan, facts, observer=None):
        """Remove copies of instances out of the plan for ``prune_grace``; return
        "service/uuid" of what was removed."""
        if not facts.instances:
            log.warning("the DC store lists no instance at all; not pruning restore data",
                        extra={"event": "restore-data-prune-skipped"})
            return []
        held = self._held()
        planned = {item.instance.uuid for items in full_plan.values() for item in items}
        with FileLock(self.layout.prune_lock, timeout=COMMIT_LOCK_TIMEOUT,
                      what="pruning restore data"):
            vanished = read_json(self.layout.vanished_file)
            vanished = vanished if isinstance(vanished, dict) else {}
            remove, vanished = plan_prune(held, planned, vanished, now=self.clock(),
                                          grace=float(self.config.restore_data.prune_grace))
            removed = []
            for service, uuid in remove:
                try:
                    self._remove_copy(service, uuid)
                except LockBusy:
                    vanished[uuid] = 0.0      # due already; retried next cycle
                    continue
                except (DatasetError, TransportError, OSError) as e:
                    log.warning("cannot prune the copy of %s: %s", uuid, e,
                                extra={"event": "restore-data-prune-failed", "instance": uuid})
                    vanished[uuid] = 0.0
                    continue
                removed.append(f"{service}/{uuid}")
                notify(observer, Progress("restore-data/prune", f"removed the copy of {uuid} "
                                          f"({service}): gone from the DC"))
            if vanished or self.layout.vanished_file.exists():
                write_json_atomic(self.layout.vanished_file, vanished)
        return removed

    def _held(self):
        held = {}
        for service in self.layout.services():
            uuids = set(self.layout.dataset_uuids(service)) | set(self.layout.vm_uuids(service))
            previous = read_previous(self.layout.manifest(service), service, self.layout.key)
            if previous:
                uuids |= set(previous["instances"])
            for uuid in uuids:
                held[uuid] = service
        return held

    def _remove_copy(self, service, uuid):
        svc_dir = self.layout.service_dir(service)
        with FileLock(self.layout.service_lock(service), timeout=0,
                      what=f"restore data of {service}"), \
                FileLock(self.layout.commit_lock(service), timeout=COMMIT_LOCK_TIMEOUT,
                         what=f"restore data of {service}"):
            commits.recover(svc_dir)
            replica = self.layout.dataset_dir(service, uuid)
            if replica.exists():
                with FileLock(self.layout.instance_lock(uuid), timeout=COMMIT_LOCK_TIMEOUT,
                              what=f"the copy of {uuid}"):
                    self._backend().destroy(str(replica))
                    remove_tree(replica)
            previous = read_previous(self.layout.manifest(service), service, self.layout.key)
            remaining = {u: e for u, e in (previous or {}).get("instances", {}).items()
                         if u != uuid}
            if not remaining and not self.layout.dataset_uuids(service):
                remove_tree(svc_dir)
            elif previous:
                files = {}
                for rel in (SERVICE_JSON, INSTS_JSON):
                    if rel in previous["files"]:
                        files[rel] = previous["files"][rel]
                for u, e in remaining.items():
                    carry_files(u, e, previous["files"], files)
                doc = dict(previous, instances=remaining, files=files)
                doc["bytes"] = total_bytes(doc)
                doc["status"], doc["error"] = service_status(remaining)
                staging = commits.Staging(self.layout.pending(service))
                commits.commit(svc_dir, staging, seal(doc, self.layout.key))
                commits.remove_unlisted(svc_dir, files)
            else:
                remove_tree(self.layout.vm_json(service, uuid))
            remove_tree(self.layout.hash_cache(service, uuid))
        self.reporter.forget(uuid)

"""Syncing one instance: its metadata, then its delegate dataset.

Every failure becomes a status of the instance (``failed``, ``diverged``,
``unreachable``; the worst wins) with the reason, never an exception: the
other instances of the service go on, and what was held before stays held and
described (its manifest entry keeps the last good copy and ``last_success``).
"""

import logging
import time

from sdcadm.errors import ReplicaDiverged, SdcadmError, Unreachable
from sdcadm.restore_data.events import InstanceResult
from sdcadm.restore_data.manifest import SEVERITY
from sdcadm.restore_data.staging import carry_files

log = logging.getLogger(__name__)


class InstanceSync:
    def __init__(self, stager, datasets, transports, clock):
        """``stager``: an InstanceStager; ``datasets``: a DatasetSync;
        ``transports(host)``: an SSH transport to a source server."""
        self.stager, self.datasets = stager, datasets
        self.transports, self.clock = transports, clock

    def sync(self, name, item, facts, staging, files, prev, prev_files, reseed, observer):
        """Sync ``item``; return (its new manifest entry, an InstanceResult).
        ``prev``: its previous manifest entry (None: first copy)."""
        inst, source, started = item.instance, item.source, self.clock()
        entry = {
            "alias": inst.alias,
            "source": ({"server_uuid": source.uuid, "hostname": source.hostname,
                        "admin_ip": source.admin_ip} if source else None),
            "images": prev["images"] if prev else [], "status": "ok", "error": None,
            "last_attempt": started,
            "last_success": prev["last_success"] if prev else None,
            "dataset": prev["dataset"] if prev else None,
        }
        problems, status, moved, vanished = [], "ok", 0, ()
        transport = self.transports(source.admin_ip) if item.reachable else None
        try:
            try:
                staged, chain = self.stager.stage(name, item, facts, staging, files, prev_files,
                                                  transport)
            except (KeyError, ValueError, SdcadmError, OSError) as e:
                problems.append(str(e).strip("'\""))
                status = "failed"
                carry_files(inst.uuid, entry, prev_files, files)
            else:
                files.update(staged)
                entry["images"] = chain
            if not item.reachable:
                status = worse(status, "unreachable")
                problems.append(f"{item.reason}; keeping the copy of "
                                f"{_when(entry['last_success'])}")
            elif inst.delegate_dataset:
                try:
                    entry["dataset"], moved, vanished = self.datasets.sync(
                        name, item, reseed, observer, prev=entry["dataset"])
                except (SdcadmError, OSError) as e:
                    status = worse(status, _dataset_status(e))
                    problems.append(str(e))
            else:
                entry["dataset"] = None
        finally:
            if transport is not None:
                transport.close()
        return entry, self._result(name, item, entry, status, problems, moved, started, vanished)

    def _result(self, name, item, entry, status, problems, moved, started, vanished=()):
        inst, source = item.instance, item.source
        finished = self.clock()
        entry["status"] = status
        entry["error"] = "; ".join(problems) or None
        if status == "ok":
            entry["last_success"] = finished
        ds = entry["dataset"]
        result = InstanceResult(
            inst.uuid, inst.alias, source.hostname if source else None, status, entry["error"],
            ds["snapshot"] if ds else None, ds["bytes"] if ds else 0, moved,
            round(finished - started, 3), entry["last_success"], len(vanished),
            vanished_warning(vanished))
        log.info("restore data of %s (%s) from %s: %s", inst.alias, name,
                 result.source, status, extra={"event": "restore-data-instance",
                                               "instance": inst.uuid, "reason": entry["error"]})
        return result


def vanished_warning(vanished, listed=3):
    """The warning for files that vanished from a live source while it was
    copied (None: none did). Not a failure: the copy holds everything else."""
    if not vanished:
        return None
    names = ", ".join(vanished[:listed]) + (", ..." if len(vanished) > listed else "")
    return (f"{len(vanished)} file(s) vanished while copied ({names}): the instance changed "
            "them as it ran; the copy holds the rest and was kept")


def _dataset_status(error):
    if isinstance(error, ReplicaDiverged):
        return "diverged"
    if isinstance(error, Unreachable):
        return "unreachable"
    return "failed"


def worse(a, b):
    """The worse of two instance statuses."""
    return a if SEVERITY[a] >= SEVERITY[b] else b


def _when(ts):
    if not ts:
        return "never (there is no copy yet)"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

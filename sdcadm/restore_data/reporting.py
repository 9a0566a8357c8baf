"""Reporting what each instance's sync did: a status row in the DC store (for
`sdcadm restore-data ls` and `sdcadm status`, seen from every headnode) and
series in the agent's metrics. A store that cannot be written loses the row,
never the copy: the manifest on disk stays the record of what is held.
"""

import logging

from sdcadm.errors import StoreError
from sdcadm.model import RestoreStatus

log = logging.getLogger(__name__)


class StatusReporter:
    def __init__(self, store, receiver, metrics=None):
        """``store``: a callable returning the DC store (it may be reopened)."""
        self._store, self.receiver, self.metrics = store, receiver, metrics

    def record(self, name, results, entries):
        """One status row (and metrics) per InstanceResult of service ``name``;
        ``entries``: the manifest entries of those instances."""
        for r in results:
            entry = entries[r.uuid]
            ds, source = entry["dataset"], entry["source"]
            row = RestoreStatus(
                receiver=self.receiver, service=name, instance=r.uuid, alias=r.alias,
                source=source["server_uuid"] if source else None,
                snapshot=ds["snapshot"] if ds else None, guid=ds["guid"] if ds else None,
                bytes=ds["bytes"] if ds else 0, duration=r.duration,
                last_success=entry["last_success"], last_attempt=entry["last_attempt"],
                status=r.status, error=r.error, vanished=r.vanished)
            try:
                self._store().put_restore_status(row)
            except (StoreError, OSError) as e:
                log.warning("cannot record restore-data status of %s: %s", r.alias, e,
                            extra={"event": "restore-data-status-failed", "instance": r.uuid})
            if self.metrics is not None:
                self.metrics.record_restore(name, r.source or "unknown", r.status, row.bytes,
                                            r.duration, row.last_success, r.bytes_moved)

    def forget(self, uuid):
        """Remove the status row of a copy that was pruned."""
        try:
            self._store().delete_restore_status(self.receiver, uuid)
        except (StoreError, OSError) as e:
            log.warning("cannot forget the restore-data status of %s: %s", uuid, e)

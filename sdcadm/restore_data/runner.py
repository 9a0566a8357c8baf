"""The agent's side of restore data: the periodic puller and on-demand syncs.

Runs on headnodes only (the store's ``Server.headnode`` for this server,
checked every cycle, so a server converted by ``headnode-setup`` starts
pulling without a restart). ``restore_data.enabled: false`` stops the
periodic pull; an explicit request (``POST /v1/restore-data/sync``) still
runs. The periodic cycle never waits for a service another sync holds (it is
reported ``busy`` and picked up next time); an on-demand sync waits for it.
"""

import logging
import random
import threading
import time

from sdcadm.errors import NotFound, StoreError
from sdcadm.restore_data.access import holdings
from sdcadm.restore_data.puller import Puller, restore_layout

log = logging.getLogger(__name__)

ON_DEMAND_LOCK_TIMEOUT = 3600.0


class RestoreDataRunner:
    def __init__(self, config, stores, metrics=None, *, backend=None, clock=time.time):
        self.config = config
        self.me = config.server_uuid
        self.stores = stores
        self.clock = clock
        self.layout = restore_layout(config)
        self.puller = Puller(config, stores.get, backend, metrics=metrics, clock=clock)
        self.last_summary = None
        self.cycles = 0
        self._lock = threading.Lock()

    # -- facts ---------------------------------------------------------------------
    def is_headnode(self):
        """True if the store says this server is a headnode (False if it cannot say)."""
        try:
            return bool(self.stores.get().get_server(self.me).headnode)
        except NotFound:
            return False
        except StoreError:
            return False

    def known_services(self):
        """Service names of the DC (raises a store failure when it cannot be read)."""
        return sorted(s.name for s in self.stores.get().list_services())

    def holdings(self):
        return holdings(self.layout, self.clock())

    # -- syncing -------------------------------------------------------------------
    def sync_now(self, services=None, reseed=False, observer=None):
        """An on-demand sync (waits for syncs of the same services elsewhere)."""
        return self._sync(services, reseed, observer, ON_DEMAND_LOCK_TIMEOUT)

    def _sync(self, services, reseed, observer, lock_timeout):
        summary = self.puller.sync(services=services, reseed=reseed, observer=observer,
                                   lock_timeout=lock_timeout)
        with self._lock:
            self.last_summary = summary
            self.cycles += 1
        level = logging.INFO if summary.ok else logging.WARNING
        log.log(level, "restore-data sync: %s", summary.services or summary.error,
                extra={"event": "restore-data-sync", "reason": summary.error,
                       "duration": round(summary.finished - summary.started, 3)})
        return summary

    def next_delay(self):
        rd = self.config.restore_data
        return float(rd.sync_interval) * (1.0 + random.random() * float(rd.jitter))

    def run(self, stop):
        """The periodic loop (a thread): a sync every sync_interval plus jitter,
        the first one interval after start (a restarted agent finds the copies
        of its previous life; `sdcadm service sync-restore-data` pulls now)."""
        rd = self.config.restore_data
        delay = self.next_delay()
        while not stop.wait(delay):
            delay = self.next_delay()
            if not rd.enabled or not self.is_headnode():
                continue
            try:
                self._sync(None, False, None, 0.0)
            except Exception:  # a bug in one cycle must not end the puller
                log.exception("restore-data cycle crashed; retrying next cycle",
                              extra={"event": "restore-data-crash"})

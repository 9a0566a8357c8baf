"""Heartbeat: tell the store this server's agent is alive, every interval.

The store derives the server's status from the last heartbeat
(``model.status_of``); nothing else is written here.
"""

import logging
import time

from sdcadm import instance_lease
from sdcadm.agent.log import Throttled
from sdcadm.errors import NotFound, StoreError

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, me, stores, interval, metrics, clock=time.time, after_beat=None):
        self.me, self.stores, self.interval = me, stores, interval
        # called with the lease-clock start of each heartbeat that succeeded,
        # the server record and its instances read with it: the supervisor
        # renews instance leases from there (supervisor.py)
        self.after_beat = after_beat
        self.metrics, self.clock = metrics, clock
        self.last_ok = None       # unix time of the last heartbeat written
        # lease-clock reading of when that heartbeat started: instance leases
        # run from here (the store stamps it no earlier)
        self.ok_started = None
        self.last_error = None
        self._problems = Throttled(log)

    @property
    def reachable(self):
        return self.last_error is None and self.last_ok is not None

    def beat(self):
        now = self.clock()  # when this agent last succeeded (its own status), not the record
        started = instance_lease.now()
        try:
            server, owned = self.stores.get().beat(self.me)
        except NotFound:
            self._failed(f"server {self.me} is not in the DC store; heartbeat not recorded "
                         "(this agent registers it once the DC exists: `sdcadm dc init`; see "
                         "`sdcadm server ls`)", "heartbeat-unknown-server")
            return False
        except StoreError as e:
            self._failed(f"heartbeat failed, store unreachable: {e}", "heartbeat-failed")
            return False
        self.last_ok, self.last_error, self.ok_started = now, None, started
        if self.after_beat is not None:
            self.after_beat(started, server, owned)
        self.metrics.heartbeats.inc()
        self._problems.clear("heartbeat-failed", "heartbeat written again")
        self._problems.clear("heartbeat-unknown-server", "heartbeat written again")
        return True

    def _failed(self, message, key):
        self.last_error = message
        self.metrics.heartbeat_failures.inc()
        self._problems.problem(key, message)

    def run(self, stop):
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.beat()
            except Exception:  # a bug must not silence the heartbeat for good
                log.exception("heartbeat crashed; retrying", extra={"event": "heartbeat-crash"})
            # At a fixed rate: a slow store must not also space the beats out
            # (instance leases are renewed from them).
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

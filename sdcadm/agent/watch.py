"""Watching the store: a pass as soon as this server's assignment changes.

The supervisor polls every ``agent.reconcile_interval``; on a store that can
watch (etcd), this thread also wakes it within a round trip of any change to
an instance assigned to this server, or taken from it: a restore or migrate
run from any headnode starts (or stops) the instance here without waiting
for the next poll, and without having to reach this agent's API. Polling
stays as the safety net: a watch that is down only costs time.
"""

import logging
import threading

from sdcadm.errors import StoreError

log = logging.getLogger(__name__)


class AssignmentWatcher:
    def __init__(self, me, stores, wake, retry=1.0):
        self.me, self.stores, self.wake, self.retry = me, stores, wake, retry
        self._watch = None
        self._mutex = threading.Lock()

    def run(self, stop):
        while not stop.is_set():
            try:
                watch = self.stores.get().watch_assignment(self.me, self.wake.set)
            except StoreError as e:
                log.debug("cannot watch the store yet: %s", e)
                stop.wait(self.retry)
                continue
            if watch is None:
                log.info("the DC store cannot be watched: polling only",
                         extra={"event": "watch-unsupported"})
                return
            with self._mutex:
                self._watch = watch
            if stop.is_set():
                break
            log.info("watching the DC store for changes to this server's instances",
                     extra={"event": "watch-started"})
            watch.run()  # until cancelled
        self.cancel()

    def cancel(self):
        with self._mutex:
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()

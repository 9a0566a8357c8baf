"""The agent's access to the DC store, which may be unreachable at any time."""

import threading


def agent_store_timeout(config):
    """How long the agent waits for one etcd member: ``store.timeout``, at
    most one heartbeat interval.

    A member can stop answering without refusing (a partition drops the
    packets), and the agent learns it only by waiting. Every singleton's
    lease lasts ``agent.heartbeat_timeout`` from the last beat; if one wait
    can take longer than a beat, the failover to the next member can outlast
    the lease, and the singletons stop although a majority was in reach all
    along. (Seen in the lab: hn0 cut off from hn1 only, its client on hn1's
    member, 5 s of waiting against a 4 s lease.) The operator's CLI keeps
    ``store.timeout``: it has no lease to keep."""
    return min(float(config.store.timeout), float(config.agent.heartbeat_interval))


class StoreHandle:
    """Opens the store on first use and again after it failed to open, so an
    agent started while the store is unreachable connects once it appears."""

    def __init__(self, config, opener=None):
        from sdcadm.store import open_store

        self.config = config
        self._open = opener or (lambda c: open_store(c, timeout=agent_store_timeout(c)))
        self._store = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._store is None:
                self._store = self._open(self.config)
            return self._store

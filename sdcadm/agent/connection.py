"""The agent's access to the DC store, which may be unreachable at any time."""

import threading


class StoreHandle:
    """Opens the store on first use and again after it failed to open, so an
    agent started while the store is unreachable connects once it appears."""

    def __init__(self, config, opener=None):
        from sdcadm.store import open_store

        self.config = config
        self._open = opener or open_store
        self._store = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._store is None:
                self._store = self._open(self.config)
            return self._store


def beat_timeout(store_timeout, lease):
    """How long one heartbeat may wait on one etcd member: ``store.timeout``,
    but at most a third of the lease. The heartbeat is what renews the
    instance leases (it reads ownership in the same round trip); a beat that
    waits longer on a member that drops its packets (cut off, or failing)
    leaves too little of the lease to fail over and beat again before the
    leases run out, and the singletons of a server that still reaches a
    majority stop. Only the heartbeat is bounded: the other store calls move
    more data, and a short bound turns slow answers into failures."""
    return min(store_timeout, lease / 3)


def with_store_timeout(config, timeout):
    """A copy of ``config`` whose ``store.timeout`` is ``timeout``."""
    from sdcadm.config import Config

    values = config.to_dict()
    values["store"]["timeout"] = timeout
    return Config(values, config.path)


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

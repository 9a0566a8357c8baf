"""The DC state store: one interface (``base.Store``), pluggable backends.

``open_store(config)`` opens the store the configuration names and refuses
one that was never initialised; whoever creates a DC (the lab, tests) calls
``store_for(config).initialize()`` instead. Callers catch ``StoreError``
(re-exported here): no backend lets its own exceptions out.
"""

import time

from sdcadm.errors import ConfigError, StoreError

__all__ = ["StoreError", "open_store", "store_for"]


def store_for(config, clock=None):
    """The store ``config.store`` names, not yet opened (no I/O): call
    ``open()`` or ``initialize()`` on it. ``clock``: the store's clock (tests)."""
    backend = config.store.backend
    if backend == "sqlite":
        from sdcadm.store.sqlite import SqliteStore

        return SqliteStore(config.store.path, timeout=config.store.timeout,
                           clock=clock or time.time)
    if backend == "etcd":
        from sdcadm.store.etcd import EtcdStore

        # A server is unreachable once its heartbeat lease (this TTL) ran out.
        return EtcdStore(config.store.etcd_endpoints, prefix=config.store.etcd_prefix,
                         timeout=config.store.timeout,
                         heartbeat_ttl=config.agent.heartbeat_timeout, clock=clock or time.time)
    raise ConfigError(config.path, [f"store backend {backend!r} is not known"],
                      hint="use store.backend: sqlite or etcd")


def open_store(config, clock=None):
    """Open the store the configuration names; StoreError if it is unreachable
    or not initialised (it is never created here)."""
    return store_for(config, clock).open()

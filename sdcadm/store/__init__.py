"""The DC state store: one interface (``base.Store``), pluggable backends.

``open_store(config)`` opens the store the configuration names and refuses
one that was never initialised; whoever creates a DC (the lab, tests) calls
``store_for(config).initialize()`` instead. Callers catch ``StoreError``
(re-exported here): no backend lets its own exceptions out.
"""

import time

from sdcadm.errors import ConfigError, StoreError

__all__ = ["StoreError", "open_store", "sqlite_shared_by", "store_for"]


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


def sqlite_shared_by(config, servers):
    """The other servers (of ``servers``, the store's list) that already run
    on the sqlite store ``config`` names: any that ever heartbeated.

    sqlite is the embedded store of a one-server DC (and of unit tests): one
    file on one server. A second server using it would reach it through a
    shared path (the loss of that server takes the store with it), so an
    agent refuses to start on a sqlite store another server's agent uses; a
    DC of several servers keeps its store in etcd. Servers that are only
    records (never heartbeated) do not count: a DC being built, or tests of
    one agent, list servers no agent runs for."""
    if config.store.backend != "sqlite":
        return []
    return [s for s in servers if s.uuid != config.server_uuid and s.last_heartbeat]

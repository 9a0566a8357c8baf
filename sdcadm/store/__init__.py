"""The DC state store: one interface (``base.Store``), pluggable backends."""

from sdcadm.errors import ConfigError


def open_store(config, create=False):
    """Open the store the configuration names. ``create``: make it if missing."""
    backend = config.store.backend
    if backend == "sqlite":
        from sdcadm.store.sqlite import SqliteStore

        return SqliteStore(config.store.path, create=create, timeout=config.store.timeout)
    raise ConfigError(config.path, [f"store backend {backend!r} is not available yet"],
                      hint="use store.backend: sqlite")

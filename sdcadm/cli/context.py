"""Per-invocation state shared by every command: config, store and catalog.

Each is loaded on first use and at most once per invocation, so a command
pays only for what it touches (``server ls`` never loads the catalog, whose
validation imports jsonschema). Commands receive the state with
``@pass_state`` and read ``state.config``, ``state.store``, ``state.catalog``.
"""

import time

import click


def now():
    """The current unix time. One place, so tests can freeze the clock."""
    return time.time()


class AppState:
    """Options of the top-level group plus lazily opened resources."""

    def __init__(self, config_path=None, debug=False):
        self.config_path = config_path
        self.debug = debug
        self._config = None
        self._store = None
        self._catalog = None

    @property
    def config(self):
        if self._config is None:
            from sdcadm.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    @property
    def store(self):
        if self._store is None:
            from sdcadm.store import open_store

            self._store = open_store(self.config)
        return self._store

    @property
    def catalog(self):
        if self._catalog is None:
            from sdcadm.catalog import load_catalog

            self._catalog = load_catalog(self.config.catalog)
        return self._catalog

    def check_services(self, names):
        """Raise NotFound unless every name is a service of the store or the catalog."""
        from sdcadm.errors import NotFound

        names = list(dict.fromkeys(names))
        if not names:
            return names
        known = {s.name for s in self.store.list_services()}
        if set(names) - known:
            known.update(self.catalog.names())
        unknown = [n for n in names if n not in known]
        if unknown:
            listed = ", ".join(repr(n) for n in unknown)
            raise NotFound(f"unknown service {listed}",
                           hint="known services: " + ", ".join(sorted(known)))
        return names

    def close(self):
        if self._store is not None:
            self._store.close()
            self._store = None


pass_state = click.make_pass_decorator(AppState, ensure=True)

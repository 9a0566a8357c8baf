"""The DC's servers and instances kept in memory, current by an etcd watch:
what `server ls` and `insts` list on a DC of 10,000 servers and 50,000
instances without fetching 60,000 keys through the gateway each time.

``ListingCache.run()`` reads the servers, the heartbeat keys (their names
only), the instances and ``meta/revision`` in one read-only transaction (one
etcd revision: a consistent picture), then follows every change under the
DC's prefix from the next revision on. A stream that ends or goes silent is
opened again from the revision after the last one seen, so no change is
missed; one that cannot resume (compacted history, any error) reads
everything again. Readers ask ``wait(model_revision, timeout)`` first:
``meta/revision`` counts the model's writes (every one puts it in its own
transaction), so once the cache holds that value it holds every model write
the reader could have seen. Heartbeat keys are not model writes: a lease that
etcd ended reaches the cache within the watch's latency (milliseconds).

The agent of a headnode hosts it (``agent/listing.py``); this module only
keeps it, and builds the same records the store's own reads build.
"""

import json
import logging
import threading
import time
from itertools import compress
from urllib.parse import unquote

from sdcadm.errors import StoreError
from sdcadm.model import Instance, Server
from sdcadm.store.base import check_instance_fields
from sdcadm.store.etcd_client import _shut, _short, open_watch, read, watch_events
from sdcadm.store.etcd_keys import decode, record

log = logging.getLogger(__name__)


class Picture:
    """Servers, live heartbeats and instances, and the revisions they are at
    (pure: fed key-values, asked for listings; no I/O, no locking).

    What readers get is built once per change of what it shows, not once per
    request: the server list and each instance column are kept until a
    change makes them wrong (a heartbeat rewritten by a live server's agent
    changes nothing, so does not clear them)."""

    def __init__(self, keys):
        self.keys = keys
        self._dirs = {kind: keys.dir(kind) for kind in ("servers", "heartbeats", "instances")}
        self.servers, self.alive, self.instances = {}, set(), {}
        self.model_revision = None   # meta/revision's value; None: not read yet
        self.etcd_revision = 0       # every change up to this etcd revision is applied
        self.stamp = 0               # moves whenever what a listing shows changes
        self._server_docs = None
        self._order = None           # instance UUIDs by (service, alias)
        self._columns = {}           # field -> values in _order

    def load(self, etcd_revision, servers, beats, instances, revision_kv):
        """Everything, from one read-only transaction at ``etcd_revision``."""
        self.servers = {s.uuid: s for s in (record(Server, kv) for kv in servers)}
        self.alive = {self._name(kv["key"], "heartbeats") for kv in beats}
        self.instances = {i.uuid: i for i in (record(Instance, kv) for kv in instances)}
        self.model_revision = decode(revision_kv) if revision_kv else 0
        self.etcd_revision = etcd_revision
        self._server_docs, self._order, self._columns = None, None, {}
        self.stamp += 1

    def _name(self, key, kind):
        return unquote(key[len(self._dirs[kind]):])

    def apply(self, key, kv):
        """One change of ``key``: ``kv`` its key-value now, None: deleted."""
        if key == self.keys.revision:
            if kv is not None:
                self.model_revision = decode(kv)
        elif key.startswith(self._dirs["heartbeats"]):
            name = self._name(key, "heartbeats")
            if (kv is not None) != (name in self.alive):
                (self.alive.add if kv is not None else self.alive.discard)(name)
                self._server_docs = None
                self.stamp += 1
        elif key.startswith(self._dirs["servers"]):
            name = self._name(key, "servers")
            if kv is None:
                self.servers.pop(name, None)
            else:
                self.servers[name] = record(Server, kv)
            self._server_docs = None
            self.stamp += 1
        elif key.startswith(self._dirs["instances"]):
            name = self._name(key, "instances")
            old = self.instances.get(name)
            self.stamp += 1
            if kv is None:
                self.instances.pop(name, None)
            else:
                new = self.instances[name] = record(Instance, kv)
                if old is not None and (old.service, old.alias) == (new.service, new.alias):
                    self._columns = {}   # same place in the order
                    return
            self._order, self._columns = None, {}

    # -- what readers get ------------------------------------------------------
    def server_docs(self):
        """Every server's record and whether its heartbeat key lives, by hostname."""
        if self._server_docs is None:
            alive = self.alive
            self._server_docs = [{"server": vars(s), "alive": s.uuid in alive}
                                 for s in sorted(self.servers.values(), key=lambda s: s.hostname)]
        return self._server_docs

    def _column(self, name):
        column = self._columns.get(name)
        if column is None:
            if self._order is None:
                self._order = [i.uuid for i in sorted(self.instances.values(),
                                                      key=lambda i: (i.service, i.alias))]
            # by UUID: a change replaces the record, and keeps its place in the order
            instances = self.instances
            column = self._columns[name] = [getattr(instances[u], name) for u in self._order]
        return column

    def columns(self, fields, service=None, server_uuid=None):
        """``Store.instance_columns``: the instances in (service, alias) order,
        by column, for ``fields``."""
        fields = check_instance_fields(fields)
        columns = {name: self._column(name) for name in fields}
        mask = None
        for name, wanted in (("service", service), ("server_uuid", server_uuid)):
            if wanted is not None:
                hits = [v == wanted for v in self._column(name)]
                mask = hits if mask is None else [a and b for a, b in zip(mask, hits)]
        if mask is not None:
            columns = {name: list(compress(values, mask)) for name, values in columns.items()}
        return columns


class ListingCache:
    """A ``Picture`` of ``store`` (an EtcdStore) kept current by a watch, in
    its own thread (``run()`` until ``stop()``). Readers call ``wait`` then
    ``read``; both are thread-safe."""

    def __init__(self, store, idle=30.0, clock=time.monotonic):
        self.client, self.keys = store.client, store.keys
        self.picture = Picture(store.keys)
        self.idle = idle
        self.clock = clock
        self.following = False     # True while a watch stream delivers changes
        self.loads = 0             # full reads so far (1 normally; more after lost streams)
        self.streams = 0           # watch streams opened (one more per resumption)
        self.problem = None        # why it does not follow now, for the reader's error
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._response = None

    # -- the reader's side -----------------------------------------------------
    def wait(self, model_revision, timeout):
        """True once the cache follows the store and holds ``model_revision``
        (meta/revision as the reader read it) or newer, within ``timeout``."""
        deadline = self.clock() + timeout
        with self._cond:
            while not (self.following and self.picture.model_revision is not None
                       and self.picture.model_revision >= model_revision):
                left = deadline - self.clock()
                if left <= 0 or self._stopped.is_set():
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def read(self, what):
        """``what(picture)`` under the cache's lock, with the model revision it was at."""
        with self._cond:
            return self.picture.model_revision, what(self.picture)

    # -- the thread ------------------------------------------------------------
    def stop(self):
        self._stopped.set()
        with self._cond:
            response, self._response = self._response, None
            self._cond.notify_all()
        if response is not None:
            _shut(response)

    def run(self):
        while not self._stopped.is_set():
            try:
                self._load()
                self._follow()
            except Exception as e:  # noqa: BLE001 - any failure: read everything again
                self._lost(_short(e) if not isinstance(e, StoreError) else str(e))
                self._stopped.wait(0.5)

    def _lost(self, why):
        with self._cond:
            self.following, self.problem = False, why
            self._cond.notify_all()
        if not self._stopped.is_set():
            log.info("listing cache: %s; reading the store again", why)

    def _load(self):
        found = self.client.txn_read([], [
            read(self.keys.dir("servers"), prefix=True), read(self.keys.dir("heartbeats"), prefix=True, keys_only=True),
            read(self.keys.dir("instances"), prefix=True), read(self.keys.revision)])
        _, etcd_revision, (servers, beats, instances, revision) = found
        with self._cond:
            self.picture.load(etcd_revision, servers, beats, instances,
                              revision[0] if revision else None)
            self.loads += 1
            self._cond.notify_all()

    def _follow(self):
        """Apply changes until the stream cannot resume; an idle or dropped
        stream is opened again from the revision after the last one applied."""
        while not self._stopped.is_set():
            clients = self.client._clients()
            try:
                response = open_watch(clients[self.client.current % len(clients)],
                                      self.keys.prefix, self.client.timeout, self.idle,
                                      start_revision=self.picture.etcd_revision + 1)
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"cannot open a watch: {_short(e)}") from None
            with self._cond:
                if self._stopped.is_set():
                    response.close()
                    return
                self._response = response
                self.streams += 1
            try:
                response.raise_for_status()
                self._stream(response)
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001 - idle or dropped: resume
                if self._stopped.is_set():
                    return
                log.debug("listing cache: watch resumes after: %s", _short(e))
            finally:
                with self._cond:
                    self._response = None
                    self.following = False
                response.close()

    def _stream(self, response):
        for line in response.iter_lines():
            if not line.strip():
                continue
            events = watch_events(json.loads(line))
            with self._cond:
                for deleted, kv, _ in events:
                    self.picture.apply(kv["key"], None if deleted else kv)
                    # Resuming after the last applied event (not after the
                    # header's revision) replays at worst, never skips.
                    self.picture.etcd_revision = max(self.picture.etcd_revision,
                                                     kv["mod_revision"])
                self.following, self.problem = True, None
                self._cond.notify_all()

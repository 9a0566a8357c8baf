"""The agent's listing service: `server ls` and `insts` of a big DC served from
memory (``GET /v1/listing/servers``, ``GET /v1/listing/instances``).

On an etcd store, the first request starts a ``ListingCache``
(store/etcd_listing.py): one read of everything, then a watch that keeps it
current. It stops, and its memory goes, after ``idle`` seconds without a
request: a DC nobody lists costs nothing, and an agent of a compute node
never holds one unless asked. On a sqlite store there is nothing to gain
(the store is a local file): 404, and the CLI reads the store.

Before answering, the agent reads the store's model revision
(``meta/revision``, a linearizable read: it sees every write acknowledged
before the request came) and waits until the cache holds it, so a listing
never shows less than the reader's own last write; ``min_revision`` asks for
a revision explicitly. Encoded answers are kept until what they show changes:
listing 50,000 instances again costs one lookup. A cache that cannot get
there in ``wait`` seconds answers 503 with the reason; the CLI then reads the
store itself (slower, never wrong).
"""

import json
import logging
import threading
import time
from urllib.parse import parse_qs

from sdcadm.errors import RequestError, SdcadmError
from sdcadm.store.base import check_instance_fields
from sdcadm.uuids import is_uuid

log = logging.getLogger(__name__)

# A listing asked for while the cache starts waits this long for it: a first
# read of 60,000 keys takes seconds; the reader waits longer (cli/listing.py).
WAIT = 10.0
IDLE = 600.0
MAX_QUERY = 4096
KEPT_ANSWERS = 16


def parse_query(query):
    """``min_revision`` (int >= 0), and for instances ``fields`` (comma-separated),
    ``service``, ``server_uuid``; RequestError 400 for anything else or malformed."""
    if len(query) > MAX_QUERY:
        raise RequestError(400, "bad-request", f"query string over {MAX_QUERY} bytes")
    try:
        pairs = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                         max_num_fields=8)
    except ValueError as e:
        raise RequestError(400, "bad-request", f"malformed query string: {e}") from None
    params = {}
    for key, values in pairs.items():
        if key not in ("min_revision", "fields", "service", "server_uuid"):
            raise RequestError(400, "bad-request", f"unknown query parameter {key!r}")
        if len(values) != 1:
            raise RequestError(400, "bad-request", f"query parameter {key!r} given twice")
        params[key] = values[0]
    raw = params.get("min_revision")
    if raw is not None:
        if not raw.isdigit() or len(raw) > 18:
            raise RequestError(400, "bad-request",
                               f"min_revision must be a whole number, got {raw!r}")
        params["min_revision"] = int(raw)
    if "server_uuid" in params and not is_uuid(params["server_uuid"]):
        raise RequestError(400, "bad-request", "server_uuid must be a lower-case UUID")
    if "fields" in params:
        params["fields"] = [f for f in params["fields"].split(",") if f]
    return params


class Listings:
    """One ``ListingCache`` at most, started on demand, stopped when idle."""

    def __init__(self, stores, idle=IDLE, wait=WAIT, clock=time.monotonic):
        self.stores, self.idle, self.wait, self.clock = stores, idle, wait, clock
        self._cache = None
        self._answers = {}   # query -> ((picture stamp, model revision), encoded answer)
        self._used = 0.0
        self._mutex = threading.Lock()
        self._stopped = threading.Event()

    def _get(self):
        try:
            store = self.stores.get()
        except SdcadmError as e:
            raise RequestError(503, "store-unreachable", f"the DC store does not answer: {e}") \
                from None
        if store.backend != "etcd":
            raise RequestError(404, "no-listing-cache",
                               f"the DC store is {store.backend}: read it directly")
        with self._mutex:
            self._used = self.clock()
            if self._cache is None and not self._stopped.is_set():
                from sdcadm.store.etcd_listing import ListingCache

                self._cache = ListingCache(store)
                threading.Thread(target=self._cache.run, name="listing-cache",
                                 daemon=True).start()
                threading.Thread(target=self._expire, args=(self._cache,),
                                 name="listing-idle", daemon=True).start()
                log.info("listing cache started", extra={"event": "listing-cache-started"})
            return self._cache, store

    def _expire(self, cache):
        while not self._stopped.wait(min(self.idle, 5.0)):
            with self._mutex:
                if self.clock() - self._used >= self.idle:
                    self._cache, self._answers = None, {}
                    break
        cache.stop()
        log.info("listing cache stopped", extra={"event": "listing-cache-stopped"})

    def stop(self):
        self._stopped.set()
        with self._mutex:
            cache, self._cache = self._cache, None
        if cache is not None:
            cache.stop()

    def _read(self, params, key, build):
        """The encoded answer ``build(picture)`` once the cache holds the
        revision asked for (else the store's current one)."""
        cache, store = self._get()
        wanted = params.get("min_revision")
        if wanted is None:
            try:
                wanted = store.revision()
            except SdcadmError as e:
                raise RequestError(503, "store-unreachable",
                                   f"the DC store does not answer: {e}") from None
        if not cache.wait(wanted, self.wait):
            why = cache.problem or "it is still reading the store"
            raise RequestError(503, "listing-not-ready",
                               f"the listing cache does not hold revision {wanted} yet: {why}",
                               headers={"Retry-After": "1"})

        def encoded(picture):
            stamp = (picture.stamp, picture.model_revision)
            kept = self._answers.get(key)
            if kept is not None and kept[0] == stamp:
                return kept[1]
            body = json.dumps({"revision": picture.model_revision, **build(picture)},
                              separators=(",", ":")).encode()
            if len(self._answers) >= KEPT_ANSWERS:
                self._answers.clear()
            self._answers[key] = (stamp, body)
            return body

        return cache.read(encoded)[1]

    def servers(self, query):
        """The encoded answer of ``GET /v1/listing/servers``."""
        params = parse_query(query)
        return self._read(params, ("servers",), lambda picture: {"servers": picture.server_docs()})

    def instances(self, query):
        """The encoded answer of ``GET /v1/listing/instances``."""
        params = parse_query(query)
        try:
            fields = check_instance_fields(params.get("fields") or ())
        except SdcadmError as e:
            raise RequestError(400, "bad-request", f"{e}; {e.hint}") from None
        if not fields:
            raise RequestError(400, "bad-request", "fields= is required (comma-separated)")
        key = ("instances", fields, params.get("service"), params.get("server_uuid"))
        return self._read(params, key, lambda picture: {"columns": picture.columns(
            fields, params.get("service"), params.get("server_uuid"))})

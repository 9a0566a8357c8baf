"""The few etcd v3 calls the etcd store makes, over etcd's JSON gateway, with
failover between the cluster's endpoints.

Built on ``etcd3gw`` (HTTP through ``requests``): only its ``post`` is used,
because the store needs the raw answers (mod and create revisions, lease ids,
whether a transaction's compares held) that its higher-level helpers drop.
No ``etcd3gw`` or ``requests`` exception leaves this module: an endpoint that
does not answer is skipped for the next one, and when none answers the call is
``StoreUnreachable``; any other refusal is ``StoreError``.
"""

import base64
import json
import logging
import socket
import threading
import time

from etcd3gw import exceptions as etcd_errors
from etcd3gw.client import Etcd3Client

from sdcadm.config import parse_endpoint
from sdcadm.errors import StoreError, StoreUnreachable

log = logging.getLogger(__name__)

# etcd 3.4 serves its gateway at /v3/ only; etcd3gw's default (discovery or
# the old /v3beta/) gets a 404 there.
API_PATH = "/v3/"

UNREACHABLE_HINT = ("check that etcd runs on the headnodes (`systemctl status etcd`, or "
                    "`sdcadm lab status` in the lab) and that store.etcd_endpoints lists "
                    "their client URLs; a cluster that lost its quorum answers no request "
                    "until a majority of its members is back")


def b64(text):
    return base64.b64encode(text.encode()).decode()


def unb64(text):
    # Bytes that are not UTF-8 (written by another program) decode to text that
    # is not JSON either: a StoreError naming the key, not a UnicodeDecodeError.
    return base64.b64decode(text or "").decode(errors="replace")


def kv_of(raw):
    """One key-value of a range answer, with its numbers as ints (the gateway
    sends int64 as strings and leaves out zeros)."""
    return {"key": unb64(raw["key"]), "value": unb64(raw.get("value")),
            "create_revision": int(raw.get("create_revision", 0)),
            "mod_revision": int(raw.get("mod_revision", 0)),
            "lease": int(raw.get("lease", 0))}


class LeaseGone(StoreError):
    """A lease expired or was revoked (internal: the store grants a new one)."""


# Seconds between two reads of the cluster's member list (a member added by
# `server headnode-setup` is then tried too, without any configuration change).
DISCOVER_EVERY = 30.0


def learned_places(configured, client_urls):
    """The places (protocol, host, port) to try: the configured ones in their
    order, then every member's client URL not configured (pure). A member
    removed from the cluster drops out of the learned ones; a configured
    endpoint stays (it may be the only way in after a store recovery)."""
    places = list(configured)
    for text in client_urls:
        try:
            place = parse_endpoint(text)
        except ValueError:
            continue
        if place not in places:
            places.append(place)
    return places


class EtcdClient:
    """Endpoints tried in order, starting with the last one that answered;
    every ``DISCOVER_EVERY`` seconds the cluster's member list adds the client
    URLs of members not configured (``learned_places``)."""

    def __init__(self, endpoints, timeout):
        if not endpoints:
            raise StoreError("no etcd endpoint configured",
                             hint="list the cluster's client URLs in store.etcd_endpoints, "
                                  "e.g. [127.0.0.1:2379]")
        self.endpoints = list(endpoints)
        self.places = []
        for text in self.endpoints:
            try:
                protocol, host, port = parse_endpoint(text)
            except ValueError as e:
                raise StoreError(f"bad etcd endpoint: {e}",
                                 hint="fix store.etcd_endpoints (host:port, ...)") from None
            self.places.append((protocol, host, port))
        self.configured, self.configured_endpoints = list(self.places), list(self.endpoints)
        self.timeout = timeout
        self.current = 0
        self._local = threading.local()
        self._version = 0
        self._learned_at = None
        self._learning = threading.Lock()

    def _clients(self):
        # One HTTP session per thread: a requests.Session is not meant to be
        # shared by threads (agents call the store from several).
        clients = getattr(self._local, "clients", None)
        if clients is None or self._local.version != self._version:
            places, self._local.version = list(self.places), self._version
            clients = self._local.clients = [
                Etcd3Client(host=host, port=port, protocol=protocol, timeout=self.timeout,
                            api_path=API_PATH) for protocol, host, port in places]
        return clients

    def learn_members(self, client, clock=time.monotonic):
        """Read the member list through ``client`` (one that just answered) when
        ``DISCOVER_EVERY`` passed; add the members' client URLs. Never fails:
        the configured endpoints are enough to go on."""
        now = clock()
        if self._learned_at is not None and now - self._learned_at < DISCOVER_EVERY:
            return
        if not self._learning.acquire(blocking=False):
            return
        try:
            self._learned_at = now
            answer = client.post(client.get_url("cluster/member/list"), data="{}")
            urls = [u for m in answer.get("members") or [] for u in m.get("clientURLs") or []]
            places = learned_places(self.configured, urls)
            if places != self.places:
                endpoints = [f"{p}://{h}:{port}" for p, h, port in places]
                using = self.places[self.current % len(self.places)]
                self.places = places
                self.endpoints = self.configured_endpoints + endpoints[len(self.configured):]
                # keep using the member that answered (a dead one tried first costs a timeout)
                self.current = places.index(using) if using in places else 0
                self._version += 1
                log.info("etcd store: endpoints now %s", ", ".join(self.endpoints))
        except Exception as e:  # noqa: BLE001 - learning is an extra, never a failure
            log.debug("etcd store: reading the member list: %s", _short(e))
        finally:
            self._learning.release()

    def describe(self):
        return ", ".join(self.endpoints)

    def post(self, path, body, once=False):
        """The JSON answer of the first endpoint that answers ``path``.

        ``once``: a request that must not be sent twice (a transaction). If it
        timed out it may have been applied, so it is not sent to another member:
        the caller is told that its outcome is unknown, and the next request
        starts at the next member (a hung member must not keep every client).
        Refused connections and 503 answers (a member without a leader) are
        not applied and move on at once."""
        failures, clients = [], self._clients()
        endpoints = self.endpoints   # the names of these clients (learn_members may change both)
        if len(endpoints) != len(clients):
            endpoints = [f"{c.host}:{c.port}" for c in clients]
        for step in range(len(clients)):
            index = (self.current + step) % len(clients)
            client = clients[index]
            try:
                answer = client.post(client.get_url(path), data=json.dumps(body))
            except etcd_errors.ConnectionTimeoutError:
                if once:
                    self.current = (index + 1) % len(clients)
                    log.warning("etcd store: %s did not answer; next request to %s",
                                endpoints[index], endpoints[self.current % len(endpoints)])
                    raise StoreUnreachable(
                        f"etcd at {endpoints[index]} did not answer a write within "
                        f"{self.timeout:g}s; it may or may not have been applied",
                        hint="re-read the records before retrying; " + UNREACHABLE_HINT) from None
                failures.append(f"{endpoints[index]}: no answer within {self.timeout:g}s")
                continue
            except etcd_errors.ConnectionFailedError as e:
                failures.append(f"{endpoints[index]}: {_short(e)}")
                continue
            except etcd_errors.Etcd3Exception as e:
                text = _short(e)
                if "lease not found" in text:
                    raise LeaseGone(text) from None
                raise StoreError(f"etcd at {endpoints[index]} refused {path}: {text}",
                                 hint="check the etcd member's log; the request was not applied")\
                    from None
            except (ValueError, OSError) as e:  # a non-JSON answer, a broken socket
                failures.append(f"{endpoints[index]}: {_short(e)}")
                continue
            if index != self.current:
                log.warning("etcd store: now using %s (%s)", endpoints[index],
                            "; ".join(failures))
                self.current = index
            self.learn_members(client)
            return answer
        raise StoreUnreachable("no etcd endpoint of the DC store answers: " + "; ".join(failures),
                               hint=UNREACHABLE_HINT)

    # -- the calls -----------------------------------------------------------
    def get(self, key):
        """The key-value at ``key``, or None."""
        kvs = self.post("kv/range", {"key": b64(key)}).get("kvs") or []
        return kv_of(kvs[0]) if kvs else None

    def prefix(self, prefix):
        """Every key-value under ``prefix``, by key."""
        kvs = self.post("kv/range", read(prefix, prefix=True)["request_range"]).get("kvs") or []
        return [kv_of(raw) for raw in kvs]

    def txn(self, compare, success, failure=()):
        """(succeeded, header revision) of one transaction."""
        ok, revision, _ = self.txn_read(compare, success, failure)
        return ok, revision

    def txn_read(self, compare, success, failure=()):
        """(succeeded, header revision, [the key-values of each branch op, in
        order: [] for a write]) of one transaction."""
        answer = self.post("kv/txn", {"compare": list(compare), "success": list(success),
                                      "failure": list(failure)}, once=True)
        found = [[kv_of(raw) for raw in (r.get("response_range") or {}).get("kvs") or []]
                 for r in answer.get("responses") or []]
        return (bool(answer.get("succeeded")), int(answer.get("header", {}).get("revision", 0)),
                found)

    def grant(self, ttl):
        # Sent again on another member after a timeout: at worst an unused
        # lease, which etcd ends after its TTL.
        return int(self.post("lease/grant", {"TTL": int(ttl), "ID": 0})["ID"])

    def keepalive(self, lease):
        """Refresh a lease; LeaseGone once it expired."""
        result = self.post("lease/keepalive", {"ID": lease}).get("result", {})
        if int(result.get("TTL", 0)) <= 0:
            raise LeaseGone(f"lease {lease:x} expired")

    def revoke(self, lease):
        try:
            self.post("kv/lease/revoke", {"ID": lease})
        except LeaseGone:
            pass  # already gone: what revoking wanted


class Watch:
    """A watch on every key under a prefix, over the gateway's streaming
    ``/v3/watch``: ``run()`` calls ``on_event(kv, prev_kv)`` for each
    change (either None: created, deleted) until ``cancel()``. A dropped or
    silent stream (``idle`` seconds without a byte: a hung member) is opened
    again on the next endpoint, and ``on_event(None, None)`` says that
    changes may have been missed meanwhile. Only ever an accelerator: whoever
    watches also polls."""

    def __init__(self, client, prefix, on_event, idle=30.0):
        self.client, self.prefix, self.on_event, self.idle = client, prefix, on_event, idle
        self._cancelled = threading.Event()
        self._response = None
        self._mutex = threading.Lock()

    def cancel(self):
        self._cancelled.set()
        with self._mutex:
            response = self._response
        if response is not None:
            _shut(response)

    def run(self):
        on_event = self.on_event
        index = self.client.current
        while not self._cancelled.is_set():
            clients = self.client._clients()
            index %= len(clients)
            client = clients[index]
            try:
                response = open_watch(client, self.prefix, self.client.timeout, self.idle,
                                      prev_kv=True)
                with self._mutex:
                    self._response = response
                if self._cancelled.is_set():
                    break
                response.raise_for_status()
                on_event(None, None)
                for line in response.iter_lines():
                    if line.strip():
                        self._dispatch(json.loads(line), on_event)
            except Exception as e:  # noqa: BLE001 - any failure: the next endpoint
                if not self._cancelled.is_set():
                    log.debug("etcd watch on %s via %s ended: %s", self.prefix,
                              f"{client.host}:{client.port}", _short(e))
            finally:
                with self._mutex:
                    self._response = None
            index += 1
            self._cancelled.wait(0.2)  # a cluster without a leader: do not spin

    @staticmethod
    def _dispatch(chunk, on_event):
        for deleted, kv, prev in watch_events(chunk):
            on_event(None if deleted else kv, prev)


def open_watch(client, prefix, timeout, idle, start_revision=None, prev_kv=False):
    """A streaming ``/v3/watch`` of every key under ``prefix`` through one
    endpoint's ``Etcd3Client`` (from ``start_revision``, with each event's
    previous key-value if ``prev_kv``); a read silent for ``idle`` seconds
    raises. The caller reads its lines (``watch_events``) and closes it."""
    request = read(prefix, prefix=True)["request_range"]
    if start_revision is not None:
        request["start_revision"] = start_revision
    if prev_kv:
        request["prev_kv"] = True
    return client.session.post(client.get_url("/watch"), stream=True, timeout=(timeout, idle),
                               data=json.dumps({"create_request": request}))


def watch_events(chunk):
    """[(deleted, kv, prev kv or None)] of one line of a watch stream, in order
    (a delete's kv is its key and the revision that deleted it); StoreError
    when etcd cancelled the watch (compacted history, an error)."""
    result = chunk.get("result") or {}
    if "error" in chunk or result.get("canceled") or result.get("compact_revision"):
        why = chunk.get("error") or result.get("cancel_reason") or \
            f"history compacted up to revision {result.get('compact_revision')}"
        raise StoreError(f"watch cancelled: {why}")
    return [(event.get("type") == "DELETE", kv_of(event["kv"]),
             kv_of(event["prev_kv"]) if event.get("prev_kv") else None)
            for event in result.get("events") or []]


def _shut(response):
    """End a streaming response from another thread: its blocking read returns."""
    try:
        sock = socket.fromfd(response.raw.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    except (OSError, AttributeError, ValueError):
        pass
    response.close()


def _short(error):
    # etcd3gw keeps the text in detail_text (its str() is often empty)
    text = " ".join(f"{getattr(error, 'detail_text', None) or ''} {error}".split())
    return text[:200] or type(error).__name__


# -- transaction parts ---------------------------------------------------------------

def put(key, value, lease=0):
    request = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = lease
    return {"request_put": request}


def read(key, prefix=False, keys_only=False):
    """A range read inside a transaction: ``key``, or every key under it
    (their names alone if ``keys_only``)."""
    request = {"key": b64(key)}
    if prefix:
        request["range_end"] = b64(key[:-1] + chr(ord(key[-1]) + 1))
    if keys_only:
        request["keys_only"] = True
    return {"request_range": request}


def delete(key):
    return {"request_delete_range": {"key": b64(key)}}


def same_mod(key, mod_revision):
    """The key was not written since it was read (0: it still does not exist)."""
    return {"key": b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": mod_revision}


def same_create(key, create_revision):
    """The key is the one created at ``create_revision`` (0: it does not exist)."""
    return {"key": b64(key), "result": "EQUAL", "target": "CREATE",
            "create_revision": create_revision}


def exists(key):
    return {"key": b64(key), "result": "GREATER", "target": "CREATE", "create_revision": 0}

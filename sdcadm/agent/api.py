"""The agent's HTTP API.

Every ``/v1/*`` request needs ``Authorization: Bearer <token>``; without it,
or with a wrong token, the answer is 401 before any routing, so nothing
happens and nothing is revealed. ``/metrics`` is open (Prometheus). Errors
are JSON: ``{"error": "<word>", "message": "<what and how to fix>"}``.

    GET  /v1/ping                      {"ok": true, "server_uuid", "hostname"}
    GET  /v1/status                    uptime, heartbeat, store, counts by state
    GET  /v1/instances                 the instances this agent supervises
    POST /v1/instances/<uuid>/restart  restart one (202; 404 if not supervised)
    POST /v1/instances/stage           provision, never start, what a restore is about to
                                       move here (202; agent/stage_request.py)
    POST /v1/reconcile                 run a supervisor pass now (202), e.g. right after a
                                       procedure assigned an instance here
    GET  /v1/images/<uuid>/file        an image's file, for a server that lacks it
                                       (agent/image_fetch.py checks its sha256)
    GET  /v1/listing/servers           every server and whether it is alive, from memory
    GET  /v1/listing/instances         instances by column (?fields=a,b&service=&server_uuid=);
                                       both wait for ?min_revision= (agent/listing.py)
    GET  /v1/restore-data              what this headnode holds (per service and instance)
    POST /v1/restore-data/sync         sync now; body {"services": [...], "reseed": false}
                                       (optional); streams NDJSON events, the last a
                                       SyncSummary (HTTP/1.0: ends when the connection closes)
    GET  /metrics                      Prometheus text format
"""

import hmac
import json
import logging
import os
import re
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sdcadm.errors import RequestError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
# A client has this long to send each part of its request (and to take each
# part of the answer): a request whose body never comes holds no thread for
# longer. A sync stream writes its events as they come and is not idle.
IO_TIMEOUT = 10.0
# Requests served at once; one more is answered 503 at once, without a thread.
MAX_CONNECTIONS = 32
# A client that went away mid-request is routine, not an error with a traceback.
GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ROUTES = (
    ("GET", re.compile(r"/v1/ping"), "ping"),
    ("GET", re.compile(r"/v1/status"), "status"),
    ("GET", re.compile(r"/v1/instances"), "instances"),
    ("POST", re.compile(rf"/v1/instances/(?P<uuid>{_UUID})/restart"), "restart"),
    ("POST", re.compile(r"/v1/instances/stage"), "stage"),
    ("POST", re.compile(r"/v1/reconcile"), "reconcile"),
    ("GET", re.compile(rf"/v1/images/(?P<uuid>{_UUID})/file"), "image_file"),
    ("GET", re.compile(r"/v1/listing/servers"), "listing_servers"),
    ("GET", re.compile(r"/v1/listing/instances"), "listing_instances"),
    ("GET", re.compile(r"/v1/restore-data"), "restore_data"),
    ("POST", re.compile(r"/v1/restore-data/sync"), "restore_data_sync"),
    ("GET", re.compile(r"/metrics"), "metrics"),
)


# Not in sdcadm.errors on purpose: HttpError is the HTTP layer's own answer
# (status, error word, headers), raised and caught inside this module's
# Handler only -- it never reaches a caller, the CLI or an exit code.
class HttpError(Exception):
    def __init__(self, status, error, message, headers=None):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers = headers or {}


def needs_auth(path):
    return path == "/v1" or path.startswith("/v1/")


def authorized(header, token):
    """True if the Authorization header carries exactly ``token`` (constant time)."""
    if not token or not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def route(method, path):
    """(handler name, path parameters) for a request; HttpError 404 or 405 otherwise."""
    allowed = []
    for verb, pattern, name in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if verb == method or (method == "HEAD" and verb == "GET"):
                return name, match.groupdict()
            allowed.append(verb)
    if allowed:
        raise HttpError(405, "method-not-allowed", f"{method} is not allowed on {path} "
                        f"(allowed: {', '.join(sorted(set(allowed)))})",
                        {"Allow": ", ".join(sorted(set(allowed)))})
    raise HttpError(404, "not-found", f"no such resource: {path}")


class Handler(BaseHTTPRequestHandler):
    server_version = "sdcadm-agent/1"
    protocol_version = "HTTP/1.0"
    timeout = IO_TIMEOUT

    def log_message(self, fmt, *args):
        log.debug("api: " + fmt, *args, extra={"event": "http", "client": self.client_address[0]})

    def send_error(self, code, message=None, explain=None):
        """Errors found by the HTTP parser itself (a malformed request line,
        headers too long) answer in the same JSON shape as ours, with a
        status line even when the request line was too broken to say which
        HTTP version the client speaks."""
        self.request_version = "HTTP/1.0"
        try:
            self._json(code, {"error": "bad-request" if code < 500 else "internal",
                              "message": message or explain or self.responses.get(code, ("",))[0]},
                       {"Connection": "close"})
        except GONE:
            pass

    def _dispatch(self):
        path = self.path.split("?", 1)[0]
        try:
            # Who asks comes first: a request without the token is answered
            # before its body is read, so it cannot make the agent wait for one.
            if needs_auth(path) and not authorized(self.headers.get("Authorization"),
                                                   self.server.token):
                raise HttpError(401, "unauthorized",
                                "missing or wrong bearer token: send 'Authorization: Bearer "
                                "<token>' with the contents of the agent's token file",
                                {"WWW-Authenticate": 'Bearer realm="sdcadm-agent"'})
            name, params = route(self.command, path)
            self._drain()
            getattr(self, f"_{name}")(**params)
        except (HttpError, RequestError) as e:   # RequestError: refused by a layer below
            self._answer_error(e.status, e.error, e.message, e.headers)
        except GONE as e:
            log.info("api: %s %s: the client went away (%s)", self.command, path,
                     type(e).__name__, extra={"event": "http-client-gone"})
            self.close_connection = True
        except Exception:
            log.exception("api: %s %s failed", self.command, path, extra={"event": "http-error"})
            self._answer_error(500, "internal", "internal error; see the agent log")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    def _answer_error(self, status, error, message, headers=None):
        try:
            self._json(status, {"error": error, "message": message}, headers)
        except GONE:
            self.close_connection = True

    def _drain(self):
        """Read the body, which must come with a Content-Length: anything else
        (chunked, or another transfer coding) is refused, never guessed at."""
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(411, "length-required",
                            "a request body must be sent with Content-Length (Transfer-Encoding "
                            f"{self.headers.get('Transfer-Encoding')!r} is not accepted)")
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw or 0)
        except ValueError:
            raise HttpError(400, "bad-request", "Content-Length is not a number") from None
        if length < 0:
            raise HttpError(400, "bad-request", "Content-Length is negative")
        if length > MAX_BODY:
            raise HttpError(413, "too-large", f"request body over {MAX_BODY} bytes")
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) != length:
            raise HttpError(400, "bad-request", f"the body ended after {len(body)} of "
                                                f"{length} bytes")
        self.body = body

    def _send(self, status, body, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, doc, headers=None):
        self._send(status, (json.dumps(doc, sort_keys=True) + "\n").encode(), "application/json",
                   headers)

    # -- routes ------------------------------------------------------------------------
    def _ping(self):
        self._json(200, self.server.agent.ping())

    def _status(self):
        self._json(200, self.server.agent.status())

    def _instances(self):
        self._json(200, self.server.agent.instances())

    def _restart(self, uuid):
        if not self.server.agent.restart(uuid):
            raise HttpError(404, "not-found", f"instance {uuid} is not supervised by this agent")
        self._json(202, {"uuid": uuid, "restart": "requested"})

    def _stage(self):
        from sdcadm.agent.stage_request import parse_stage_request

        instances = parse_stage_request(self.body, self.server.agent.me)
        self.server.agent.stage(instances)
        self._json(202, {"staging": [i.uuid for i in instances]})

    def _reconcile(self):
        self.server.agent.reconcile_now()
        self._json(202, {"reconcile": "requested"})

    def _image_file(self, uuid):
        path = self.server.agent.image_file(uuid)
        if path is None:
            raise HttpError(404, "not-found", f"image {uuid} is not on this server")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command != "HEAD":
                shutil.copyfileobj(f, self.wfile, 1 << 20)

    def _listing_servers(self):
        self._send(200, self.server.agent.listings.servers(self._query()), "application/json")

    def _listing_instances(self):
        self._send(200, self.server.agent.listings.instances(self._query()), "application/json")

    def _query(self):
        return self.path.split("?", 1)[1] if "?" in self.path else ""

    def _restore_data(self):
        self._json(200, self.server.agent.restore_data_held())

    def _restore_data_sync(self):
        from sdcadm.restore_data.api import parse_sync_request, stream_sync

        services, reseed = parse_sync_request(self.body, self.server.agent)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        stream_sync(self.server.agent, services, reseed, self.wfile)

    def _metrics(self):
        metrics = self.server.agent.metrics
        self._send(200, metrics.render(), metrics.content_type)


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, agent, token, max_connections=MAX_CONNECTIONS):
        self.agent, self.token = agent, token
        self.max_connections = max_connections
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        """A thread per request, up to ``max_connections``; beyond that the
        client is told at once to come back later."""
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                body = b'{"error": "busy", "message": "too many requests at once; retry"}\n'
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: "
                                b"application/json\r\nRetry-After: 1\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            log.warning("api: refused a connection from %s: %d requests already being served",
                        client_address[0], self.max_connections,
                        extra={"event": "http-busy", "client": client_address[0]})
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        """What escaped a handler: one JSON log line, not a traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, GONE):
            log.info("api: the client %s went away (%s)", client_address[0],
                     type(error).__name__, extra={"event": "http-client-gone"})
            return
        log.exception("api: request from %s failed", client_address[0],
                      extra={"event": "http-error", "client": client_address[0]})


def make_server(listen, port, agent, token):
    """Bind the API (raises OSError if the address is taken); serve with serve_forever()."""
    return ApiServer((listen, port), agent, token)

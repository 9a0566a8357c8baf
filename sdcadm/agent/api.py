"""The agent's HTTP API.

Every ``/v1/*`` request needs ``Authorization: Bearer <token>``; without it,
or with a wrong token, the answer is 401 before any routing, so nothing
happens and nothing is revealed. ``/metrics`` is open (Prometheus). Errors
are JSON: ``{"error": "<word>", "message": "<what and how to fix>"}``.

    GET  /v1/ping                      {"ok": true, "server_uuid", "hostname"}
    GET  /v1/status                    uptime, heartbeat, store, counts by state
    GET  /v1/instances                 the instances this agent supervises
    POST /v1/instances/<uuid>/restart  restart one (202; 404 if not supervised)
    POST /v1/reconcile                 run a supervisor pass now (202), e.g. right after a
                                       procedure assigned an instance here
    GET  /v1/restore-data              what this headnode holds (per service and instance)
    POST /v1/restore-data/sync         sync now; body {"services": [...], "reseed": false}
                                       (optional); streams NDJSON events, the last a
                                       SyncSummary (HTTP/1.0: ends when the connection closes)
    GET  /metrics                      Prometheus text format
"""

import hmac
import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sdcadm.errors import RequestError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ROUTES = (
    ("GET", re.compile(r"/v1/ping"), "ping"),
    ("GET", re.compile(r"/v1/status"), "status"),
    ("GET", re.compile(r"/v1/instances"), "instances"),
    ("POST", re.compile(rf"/v1/instances/(?P<uuid>{_UUID})/restart"), "restart"),
    ("POST", re.compile(r"/v1/reconcile"), "reconcile"),
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

    def log_message(self, fmt, *args):
        log.debug("api: " + fmt, *args, extra={"event": "http", "client": self.client_address[0]})

    def _dispatch(self):
        path = self.path.split("?", 1)[0]
        try:
            self._drain()
            if needs_auth(path) and not authorized(self.headers.get("Authorization"),
                                                   self.server.token):
                raise HttpError(401, "unauthorized",
                                "missing or wrong bearer token: send 'Authorization: Bearer "
                                "<token>' with the contents of the agent's token file",
                                {"WWW-Authenticate": 'Bearer realm="sdcadm-agent"'})
            name, params = route(self.command, path)
            getattr(self, f"_{name}")(**params)
        except (HttpError, RequestError) as e:   # RequestError: refused by a layer below
            self._json(e.status, {"error": e.error, "message": e.message}, e.headers)
        except Exception:
            log.exception("api: %s %s failed", self.command, path, extra={"event": "http-error"})
            self._json(500, {"error": "internal", "message": "internal error; see the agent log"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    def _drain(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "bad-request", "Content-Length is not a number") from None
        if length > MAX_BODY:
            raise HttpError(413, "too-large", f"request body over {MAX_BODY} bytes")
        self.body = self.rfile.read(length) if length > 0 else b""

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

    def _reconcile(self):
        self.server.agent.reconcile_now()
        self._json(202, {"reconcile": "requested"})

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

    def __init__(self, address, agent, token):
        self.agent, self.token = agent, token
        super().__init__(address, Handler)


def make_server(listen, port, agent, token):
    """Bind the API (raises OSError if the address is taken); serve with serve_forever()."""
    return ApiServer((listen, port), agent, token)

"""health.probe against real sockets on loopback: 2xx, another status, a
refused connection, and a connection that is never made, which a probe with
a connect timeout gives up (its SYN dropped: a listener whose accept queue is
full, as an address nobody holds yet drops it)."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sdcadm.health import HttpProber, probe, probe_many


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        code = 200 if self.path.startswith("/ping") else 503
        body = f"{self.path}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def full_queue():
    """A listener that never accepts, its accept queue (backlog 0) full: the
    kernel drops every further SYN, so a connect hangs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    first = socket.create_connection(("127.0.0.1", port), 5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        first.close()
        srv.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("connect_timeout", [None, 0.5])
def test_answers_are_told_apart_with_or_without_a_connect_timeout(server, connect_timeout):
    assert probe(f"{server}/ping?x=1", 5, connect_timeout) is None
    assert probe(f"{server}/data", 5, connect_timeout).startswith("HTTP 503")
    refused = probe(f"http://127.0.0.1:{free_port()}/ping", 5, connect_timeout)
    assert refused.startswith("cannot reach") and "refused" in refused


def test_a_connection_never_made_is_given_up_at_the_connect_timeout(full_queue):
    said = probe(f"{full_queue}/ping", timeout=30, connect_timeout=0.2)
    assert said == f"cannot reach {full_queue}/ping: no connection within 0.2s"
    many = HttpProber().probe_many([f"{full_queue}/ping"], timeout=30, connect_timeout=0.2)
    assert many == {f"{full_queue}/ping": said}


@pytest.mark.parametrize("url", ["https://127.0.0.1:1/ping", "http:///ping", "http://[::1/x"])
def test_a_url_it_cannot_probe_is_a_reason_not_an_exception(url):
    assert probe(url, 1, 0.1).startswith("cannot reach")


def test_probe_many_without_a_connect_timeout_is_as_before(server):
    urls = [f"{server}/ping", f"{server}/data"]
    got = probe_many(urls, timeout=5)
    assert got[urls[0]] is None and got[urls[1]].startswith("HTTP 503")

"""Images over the network (agent/image_fetch.py): which peers are asked, and
what a fetch keeps, against real HTTP servers standing in for peer agents
(one honest, others lying, silent about the image, or sending too much)."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sdcadm.agent.image_fetch import PeerImages, peers
from sdcadm.errors import ImageError
from sdcadm.model import Image, Server

ME = "11111111-1111-4111-8111-111111111111"
TOKEN = "t0ken"
BODY = b"an image file\n" * 1000
IMAGE = Image("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "sapi", "1.0.0",
              hashlib.sha256(BODY).hexdigest(), len(BODY))
NOW = 1000.0


def server(n, headnode=False, port=1, beat=NOW, uuid=None):
    return Server(uuid or f"{n:08d}-0000-4000-8000-000000000000", f"s{n}", "127.0.0.1",
                  headnode=headnode, agent_port=port, last_heartbeat=beat)


def test_peers_are_running_servers_with_an_agent_headnodes_first():
    found = peers([server(1), server(2, headnode=True), server(3, port=0),
                   server(4, beat=NOW - 100), server(5, uuid=ME), server(0)],
                  ME, NOW, 15.0)
    assert [s.hostname for s in found] == ["s2", "s0", "s1"]


class Peer:
    """A stand-in peer agent answering GET /v1/images/<uuid>/file with ``body``
    (or ``status``), checking the bearer token as agents do."""

    def __init__(self, body=BODY, status=200, length=None):
        outer = self
        self.asked = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.asked += 1
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                self.send_response(status)
                if length != "none":  # "none": no length, the body ends at the close
                    self.send_header("Content-Length", str(length if length is not None
                                                           else len(body)))
                self.end_headers()
                if status == 200:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Store:
    def __init__(self, servers):
        self.servers = servers

    def list_servers(self):
        return self.servers

    def now(self):
        return NOW


class Handle:
    def __init__(self, store):
        self.store = store

    def get(self):
        return self.store


@pytest.fixture
def fleet():
    made = []

    def make(*behaviours):
        peers_ = [Peer(**b) for b in behaviours]
        made.extend(peers_)
        servers = [server(n, headnode=True, port=p.port) for n, p in enumerate(peers_)]
        return peers_, PeerImages(ME, Handle(Store(servers)), TOKEN, 15.0, max_bytes=len(BODY) * 2)

    yield make
    for p in made:
        p.close()


def test_a_fetch_skips_lying_and_empty_peers_and_keeps_the_good_copy(fleet, tmp_path):
    (liar, empty, good), fetcher = fleet(dict(body=b"x" * len(BODY)), dict(status=404), {})
    path = fetcher.fetch(IMAGE, tmp_path)
    assert path == tmp_path / f"{IMAGE.uuid}.file" and path.read_bytes() == BODY
    assert (tmp_path / f"{IMAGE.uuid}.json").exists()
    assert (liar.asked, empty.asked, good.asked) == (1, 1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{IMAGE.uuid}.file",
                                                          f"{IMAGE.uuid}.json"]


@pytest.mark.parametrize("behaviour, said", [
    (dict(body=b"tampered" + BODY[8:]), "sha256"),
    (dict(body=BODY * 3), "over the limit"),                   # says so up front
    (dict(body=BODY * 3, length="none"), "more than"),         # says nothing, sends too much
    (dict(status=404), "HTTP 404"),
])
def test_no_good_copy_anywhere_is_refused_and_leaves_nothing(fleet, tmp_path, behaviour, said):
    _, fetcher = fleet(behaviour)
    with pytest.raises(ImageError, match=said) as e:
        fetcher.fetch(IMAGE, tmp_path)
    assert "sdcadm image import" in e.value.hint
    assert list(tmp_path.iterdir()) == []


def test_no_peer_running_says_so(tmp_path):
    fetcher = PeerImages(ME, Handle(Store([server(1, beat=0.0)])), TOKEN, 15.0, 1 << 20)
    with pytest.raises(ImageError, match="no other server is running"):
        fetcher.fetch(IMAGE, tmp_path)

"""The agent's HTTP layer against hostile and broken clients, over real
sockets (a real ApiServer in a thread; behind it a small fake agent). Every
answer is checked to be the documented JSON, every log line to be JSON."""

import io
import json
import logging
import socket
import threading

import pytest

from sdcadm.agent import api
from sdcadm.agent.log import JsonFormatter

TOKEN = "s3cret"


class FakeAgent:
    """Just what the routes call; ``gate`` holds /v1/ping until the test opens it."""

    hostname, me = "hn0", "11111111-1111-4111-8111-111111111111"

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.pinged = threading.Semaphore(0)
        self.syncs = []
        self.staged = []
        self.restore_data = self

    def stage(self, instances):
        self.staged.append(instances)

    def ping(self):
        self.pinged.release()
        self.gate.wait(30)
        return {"ok": True}

    def known_services(self):
        return ["sapi"]

    def is_headnode(self):
        return True

    def sync_now(self, services, reseed, emit):
        self.syncs.append(services)


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("11111111-1111-4111-8111-111111111111"))
    logger = logging.getLogger("sdcadm")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield lambda: stream.getvalue().splitlines()
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture
def server(monkeypatch, log_lines):
    monkeypatch.setattr(api.Handler, "timeout", 1.0)
    agent = FakeAgent()
    srv = api.ApiServer(("127.0.0.1", 0), agent, TOKEN, max_connections=4)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    agent.gate.set()
    srv.shutdown()
    srv.server_close()
    thread.join(10)
    for line in log_lines():
        json.loads(line)  # the log stays JSON lines, whatever the clients did


def connect(srv):
    sock = socket.create_connection(srv.server_address, timeout=10)
    return sock


def answer(sock):
    """(status, JSON body) of the answer on ``sock`` (read to the end)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def request(srv, raw):
    with connect(srv) as sock:
        sock.sendall(raw)
        return answer(sock)


def auth():
    return f"Authorization: Bearer {TOKEN}\r\n".encode()


def test_a_body_that_never_comes_without_the_token_is_refused_at_once(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v1/restore-data/sync HTTP/1.0\r\nContent-Length: 100000\r\n\r\n")
        status, doc = answer(sock)      # not after a body: none is coming
    assert status == 401 and doc["error"] == "unauthorized"
    assert server.RequestHandlerClass.timeout == 1.0


def test_a_body_that_never_comes_frees_its_thread_after_the_timeout(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v1/restore-data/sync HTTP/1.0\r\n" + auth() +
                     b"Content-Length: 100\r\n\r\n{")
        assert sock.recv(65536) == b""   # the agent gave up on it and closed
    assert server.agent.syncs == []
    assert request(server, b"GET /v1/ping HTTP/1.0\r\n" + auth() + b"\r\n")[0] == 200


def test_connections_beyond_the_bound_are_answered_503_at_once(server):
    server.agent.gate.clear()
    held = [connect(server) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(b"GET /v1/ping HTTP/1.0\r\n" + auth() + b"\r\n")
        for _ in held:
            assert server.agent.pinged.acquire(timeout=10), "a held request never arrived"
        status, doc = request(server, b"GET /v1/ping HTTP/1.0\r\n" + auth() + b"\r\n")
        assert status == 503 and doc["error"] == "busy"
    finally:
        server.agent.gate.set()
        for sock in held:
            assert answer(sock)[0] == 200
            sock.close()
    assert request(server, b"GET /v1/ping HTTP/1.0\r\n" + auth() + b"\r\n")[0] == 200


def test_a_chunked_body_is_refused_and_nothing_runs(server):
    body = b"zz\r\nnot json at all\r\n0\r\n\r\n"
    status, doc = request(server, b"POST /v1/restore-data/sync HTTP/1.1\r\n" + auth() +
                          b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert status == 411 and doc["error"] == "length-required"
    assert server.agent.syncs == []


@pytest.mark.parametrize("length, status", [("-5", 400), ("ten", 400), (str(2 << 20), 413)])
def test_a_bad_content_length_is_refused(server, length, status):
    got, doc = request(server, b"POST /v1/restore-data/sync HTTP/1.0\r\n" + auth() +
                       f"Content-Length: {length}\r\n\r\n".encode())
    assert got == status and set(doc) == {"error", "message"}
    assert server.agent.syncs == []


def test_a_body_nested_too_deeply_is_a_400_not_a_traceback(server, log_lines):
    body = b"[" * 100_000 + b"]" * 100_000
    status, doc = request(server, b"POST /v1/restore-data/sync HTTP/1.0\r\n" + auth() +
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert status == 400 and "nested too deeply" in doc["message"]
    assert server.agent.syncs == []
    assert not [line for line in log_lines() if '"exc"' in line]


def test_a_malformed_request_line_is_answered_in_json(server):
    status, doc = request(server, b"NONSENSE\r\n\r\n")
    assert status == 400 and doc["error"] == "bad-request"


def test_clients_that_hang_up_leave_json_lines_and_no_tracebacks(server, log_lines):
    server.agent.gate.clear()
    for _ in range(8):
        sock = connect(server)
        sock.sendall(b"GET /v1/ping HTTP/1.0\r\n" + auth() + b"\r\n")
        assert server.agent.pinged.acquire(timeout=10)
        # Hang up hard (RST): the answer will have nowhere to go.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        server.agent.gate.set()
        server.agent.gate.clear()
    server.agent.gate.set()
    assert request(server, b"GET /v1/ping HTTP/1.0\r\n" + auth() + b"\r\n")[0] == 200
    lines = [json.loads(line) for line in log_lines()]
    assert not [r for r in lines if "exc" in r], "a hang-up is not an error with a traceback"


# -- POST /v1/instances/stage: records a restore will move here --------------------------

def staged_record(**changes):
    return {"uuid": "00000000-0000-4000-8000-000000000001", "alias": "sapi0", "service": "sapi",
            "server_uuid": FakeAgent.me, "image": "33333333-3333-4333-8333-333333333333",
            "admin_ip": "127.0.0.15", "port": 4380, "generation": 1, "delegate_dataset": True,
            "state": "provisioning", "params": {}, **changes}


def post_stage(srv, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request(srv, b"POST /v1/instances/stage HTTP/1.0\r\n" + auth() +
                   f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)


def test_stage_takes_records_meant_for_this_server(server):
    status, doc = post_stage(server, {"instances": [staged_record()]})
    assert status == 202 and doc == {"staging": [staged_record()["uuid"]]}
    [[inst]] = server.agent.staged
    assert (inst.alias, inst.server_uuid) == ("sapi0", FakeAgent.me)


@pytest.mark.parametrize("body, says", [
    (b"not json", "not JSON"),
    ({"instances": []}, "1 to 1000"),
    ({"instances": [staged_record()] * 1001}, "1 to 1000"),
    ([staged_record()], "expected"),
    ({"instances": [staged_record()], "start": True}, "expected"),
    ({"instances": [staged_record(alias=7)]}, "instances[0] is not an instance record"),
    ({"instances": [staged_record(uuid="../../etc")]}, "instances[0] is not an instance record"),
    ({"instances": [staged_record(), staged_record(server_uuid="22222222-2222-4222-8222-"
                                                                "222222222222")]},
     "not this one"),
])
def test_a_bad_stage_request_is_refused_whole_and_stages_nothing(server, body, says):
    status, doc = post_stage(server, body)
    assert status == 400 and says in doc["message"], doc
    assert server.agent.staged == []

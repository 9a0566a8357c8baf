"""`instance restart`: its pure decisions, and the whole procedure against a fake agent
and a fake instance (tiny real HTTP servers) with a real temporary sqlite store."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sdcadm.config import load_config
from sdcadm.errors import ConfigError, NotFound, SdcadmError, Unreachable
from sdcadm.model import Instance, Server
from sdcadm.procedures import ProcedureContext, ProcedureFailed, run_procedures
from sdcadm.procedures.console import QuietConsole
from sdcadm.procedures.restart import (
    RestartInstances,
    resolve,
    wait_restarted,
    why_not_restartable,
)
from tests.conftest import FakeClock as StoreClock
from tests.conftest import heartbeat_at, store_at

HN0, HN1 = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
SAPI0, VMAPI0 = "10000000-0000-4000-8000-000000000001", "10000000-0000-4000-8000-000000000002"
IMAGE = "20000000-0000-4000-8000-000000000001"
TOKEN = "secret-token"


def inst(alias, uuid, server=HN0, port=1):
    return Instance(uuid=uuid, alias=alias, service=alias.rstrip("0123456789"), server_uuid=server,
                    image=IMAGE, admin_ip="127.0.0.1", port=port)


# -- pure ----------------------------------------------------------------------------------------

def test_resolve_by_alias_or_uuid_in_order_without_duplicates():
    insts = [inst("sapi0", SAPI0), inst("vmapi0", VMAPI0)]
    assert [i.alias for i in resolve(["vmapi0", SAPI0, "vmapi0"], insts)] == ["vmapi0", "sapi0"]


def test_resolve_unknown_lists_known():
    with pytest.raises(NotFound) as e:
        resolve(["sapi0", "nope", "zzz"], [inst("sapi0", SAPI0), inst("vmapi0", VMAPI0)])
    assert str(e.value.message) == "unknown instance 'nope', 'zzz'"
    assert e.value.hint == "known instances: sapi0, vmapi0"


def test_why_not_restartable():
    now = 1000.0
    up = Server(uuid=HN0, hostname="hn0", admin_ip="127.0.0.1", agent_port=5309,
                last_heartbeat=now - 1)
    i = inst("sapi0", SAPI0)
    assert why_not_restartable(i, up, now, 15) is None
    assert "not in the DC store" in why_not_restartable(i, None, now, 15)
    silent = Server(uuid=HN0, hostname="hn0", admin_ip="127.0.0.1", agent_port=5309,
                    last_heartbeat=now - 100)
    assert why_not_restartable(i, silent, now, 15) == (
        "its server hn0 is unreachable (last heartbeat 100s ago)")
    fenced = Server(uuid=HN0, hostname="hn0", admin_ip="127.0.0.1", agent_port=5309,
                    last_heartbeat=now, fenced=True)
    assert "fenced" in why_not_restartable(i, fenced, now, 15)
    no_agent = Server(uuid=HN0, hostname="hn0", admin_ip="127.0.0.1", last_heartbeat=now)
    assert "no agent port" in why_not_restartable(i, no_agent, now, 15)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, dt):
        self.t += dt


def test_wait_restarted_measures_the_gap():
    clock = FakeClock()
    answers = iter([(True, 1), (False, None), (False, None), (True, 2)])
    got = wait_restarted(lambda: next(answers), 1, timeout=10, interval=0.1, clock=clock,
                         sleep=clock.sleep)
    assert got["new_pid"] == 2 and got["failed_probes"] == 2 and got["probes"] == 4
    assert got["downtime_s"] == pytest.approx(0.3)


def test_wait_restarted_without_failed_probe_reports_no_downtime():
    clock = FakeClock()
    answers = iter([(True, 1), (True, 2)])
    got = wait_restarted(lambda: next(answers), 1, 10, 0.1, clock, clock.sleep)
    assert got["downtime_s"] == 0.0 and got["new_pid"] == 2


def test_wait_restarted_times_out_clearly():
    clock = FakeClock()
    with pytest.raises(SdcadmError, match="no new process answered within 1s .still the old"):
        wait_restarted(lambda: (True, 1), 1, 1, 0.1, clock, clock.sleep)


# -- the procedure against fakes ------------------------------------------------------------------

class World:
    """A fake agent and a fake instance whose pid changes after a restart."""

    def __init__(self):
        self.pid, self.down_probes, self.restarts, self.stuck = 100, 0, [], False
        self.agent = self._serve(self._agent_handler())
        self.instance = self._serve(self._instance_handler())

    def _serve(self, handler):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        return server

    def _agent_handler(self):
        world = self

        class Agent(BaseHTTPRequestHandler):
            def _reply(self, code, doc):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self):
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._reply(401, {"error": "unauthorized", "message": "wrong token"})
                    return False
                return True

            def do_GET(self):
                if self._authorized():
                    self._reply(200, {"ok": True})

            def do_POST(self):
                if not self._authorized():
                    return
                m = re.fullmatch(r"/v1/instances/(.+)/restart", self.path)
                if not m or m.group(1) != SAPI0:
                    self._reply(404, {"error": "not-found", "message": "not supervised"})
                    return
                world.restarts.append(m.group(1))
                world.down_probes = 0 if world.stuck else 2
                self._reply(202, {"uuid": m.group(1)})

            def log_message(self, *args):
                pass

        return Agent

    def _instance_handler(self):
        world = self

        class Ping(BaseHTTPRequestHandler):
            def do_GET(self):
                if world.down_probes:
                    world.down_probes -= 1
                    if world.down_probes == 0:
                        world.pid += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"pid": world.pid}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Ping

    def close(self):
        for server in (self.agent, self.instance):
            server.shutdown()
            server.server_close()


@pytest.fixture
def world(tmp_path):
    w = World()
    store_path = tmp_path / "dc.sqlite"
    clock = StoreClock(time.time())
    store = store_at(store_path, clock=clock, create=True)
    agent_ip, agent_port = w.agent.server_address
    store.put_server(Server(uuid=HN0, hostname="hn0", admin_ip=agent_ip, agent_port=agent_port))
    store.put_server(Server(uuid=HN1, hostname="hn1", admin_ip="127.0.0.1", agent_port=1))
    store.heartbeat(HN0)
    heartbeat_at(store, clock, HN1, clock() - 100)
    store.create_instance(inst("sapi0", SAPI0, HN0, w.instance.server_address[1]))
    store.create_instance(inst("vmapi0", VMAPI0, HN1, 1))
    (tmp_path / "token").write_text(TOKEN + "\n")
    cfg = tmp_path / "sdcadm.yaml"
    cfg.write_text(f"store:\n  path: {store_path}\nlog_dir: {tmp_path / 'logs'}\n"
                   f"agent:\n  token_file: {tmp_path / 'token'}\n  heartbeat_timeout: 15\n")
    ctx = ProcedureContext.for_config(load_config(cfg, environ={}), store)
    yield w, ctx, tmp_path
    store.close()
    w.close()


def test_restart_runs_and_measures(world):
    w, ctx, _ = world
    result = run_procedures([RestartInstances(["sapi0"], probe_interval=0.01)], ctx, yes=True,
                            console=QuietConsole())
    assert result.state == "succeeded" and w.restarts == [SAPI0]
    got = ctx.store.get_task(result.task).steps[0]["result"]
    assert (got["old_pid"], got["new_pid"], got["failed_probes"]) == (100, 101, 2)
    assert got["downtime_s"] > 0 and got["server"] == "hn0"


def test_rerun_after_success_of_a_step_verifies_instead_of_restarting(world):
    w, ctx, _ = world
    proc = RestartInstances(["sapi0"], probe_interval=0.01)
    run_procedures([proc], ctx, yes=True, console=QuietConsole())
    # Pretend the run was killed before the task was marked succeeded.
    task = ctx.store.list_tasks()[0]
    task.state = "running"
    ctx.store.put_task(task)
    result = run_procedures([RestartInstances(["sapi0"], probe_interval=0.01)], ctx, yes=True,
                            console=QuietConsole())
    assert result.resumed and w.restarts == [SAPI0]  # not restarted twice
    assert ctx.store.get_task(result.task).steps[0]["verified"] is True


def test_unreachable_server_is_refused_before_anything(world):
    w, ctx, _ = world
    with pytest.raises(Unreachable) as e:
        run_procedures([RestartInstances(["sapi0", "vmapi0"])], ctx, yes=True,
                       console=QuietConsole())
    # 100 s before the test began, as the procedure's own clock tells it then
    ago = re.search(r"vmapi0: its server hn1 is unreachable \(last heartbeat (\d+)s ago\)",
                    str(e.value))
    assert ago and 100 <= int(ago.group(1)) < 160
    assert w.restarts == [] and ctx.store.list_tasks() == []
    assert ctx.store.get_lock("dc") is None


def test_unknown_alias_is_refused(world):
    _, ctx, _ = world
    with pytest.raises(NotFound, match="unknown instance 'nope'"):
        run_procedures([RestartInstances(["nope"])], ctx, yes=True, console=QuietConsole())


def test_wrong_token_fails_the_step_with_a_hint(world):
    w, ctx, tmp_path = world
    # prepare pings the agent: a wrong token is found before anything changes
    (tmp_path / "token").write_text("wrong\n")
    with pytest.raises(Unreachable, match="does not answer: .*HTTP 401"):
        run_procedures([RestartInstances(["sapi0"])], ctx, yes=True, console=QuietConsole())
    assert w.restarts == []


def test_missing_token_file_is_a_config_error(world):
    _, ctx, tmp_path = world
    (tmp_path / "token").unlink()
    with pytest.raises(ConfigError, match="agent.token_file"):
        run_procedures([RestartInstances(["sapi0"])], ctx, yes=True, console=QuietConsole())


def test_timeout_fails_the_task(world):
    w, ctx, _ = world
    w.stuck = True  # the agent accepts, the old process keeps answering
    proc = RestartInstances(["sapi0"], timeout=0.3, probe_interval=0.01)
    with pytest.raises(ProcedureFailed,
                       match=r"no new process answered within 0.3s \(still the old process\)"):
        run_procedures([proc], ctx, yes=True, console=QuietConsole())
    assert ctx.store.list_tasks()[0].state == "failed"


def test_a_truncated_answer_is_unreachable_not_a_crash():
    """An agent dying mid-reply sends a short body: that is 'no answer'."""
    import socket
    import threading

    import pytest

    from sdcadm.errors import Unreachable
    from sdcadm.health import probe
    from sdcadm.procedures.agent_client import AgentClient

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def serve():
        for _ in range(2):
            conn, _ = srv.accept()
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 116\r\n\r\n{\"ok\"")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(Unreachable, match="IncompleteRead"):
            AgentClient(f"http://127.0.0.1:{port}", "token", timeout=2).ping()
        assert "IncompleteRead" in probe(f"http://127.0.0.1:{port}/ping", timeout=2)
    finally:
        t.join(5)
        srv.close()

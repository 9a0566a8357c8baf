"""`restore-data ls`, `service sync-restore-data` exit codes and progress, and
the agent's request checks, over a real temporary store and plain fakes."""

import io
import json

import pytest
from click.testing import CliRunner

from sdcadm.cli.main import cli
from sdcadm.cli.output import format_bytes
from sdcadm.cli.progress import HeadnodeProgress
from sdcadm.cli.restore_data import ls_rows
from sdcadm.cli.service import check_synced
from sdcadm.errors import (ReportedFailure, ReportedUnreachable, RequestError, StoreUnreachable,
                           ValidationError)
from sdcadm.model import RestoreStatus, Server
from sdcadm.progress import Progress
from sdcadm.restore_data.api import parse_sync_request
from sdcadm.restore_data.client import HeadnodeSync
from sdcadm.restore_data.events import ServiceResult, SyncSummary
from tests.conftest import isolate_cli, store_at

NOW = 1_700_000_000.0
HN0, HN1, HN2 = (f"00000000-0000-4000-8000-00000000000{i}" for i in range(3))
SAPI0, IMGAPI0 = "10000000-0000-4000-8000-000000000001", "10000000-0000-4000-8000-000000000002"


@pytest.fixture
def dc(tmp_path, monkeypatch):
    path = tmp_path / "dc.sqlite"
    store = store_at(path, create=True)
    for uuid, name in ((HN0, "hn0"), (HN1, "hn1"), (HN2, "hn2")):
        store.put_server(Server(uuid, name, "127.0.0.1", headnode=True))
    for receiver in (HN1, HN2):
        store.put_restore_status(RestoreStatus(
            receiver, "sapi", SAPI0, "sapi0", HN0, "20231114T221320Z", None, 1536, 0.5,
            NOW - 75, NOW - 5, "unreachable" if receiver == HN2 else "ok",
            "source server hn0 is unreachable" if receiver == HN2 else None))
    store.put_restore_status(RestoreStatus(HN1, "imgapi", IMGAPI0, "imgapi0", HN0, None, None,
                                           0, 0.1, None, NOW - 5, "failed", "disk full"))
    store.close()
    config = tmp_path / "sdcadm.yaml"
    config.write_text(f"store:\n  path: {path}\n")
    isolate_cli(monkeypatch, config, NOW)
    return tmp_path


def sdcadm(*args):
    return CliRunner().invoke(cli, list(args))


def test_status_rows_round_trip_through_the_store(tmp_path):
    store = store_at(tmp_path / "dc.sqlite", create=True)
    row = RestoreStatus(HN1, "sapi", SAPI0, "sapi0", HN0, "s", "123", 10, 1.5, 5.0, 6.0, "ok")
    store.put_restore_status(row)
    assert store.list_restore_status() == [row]
    row.status, row.error = "diverged", "no common snapshot"
    store.put_restore_status(row)
    assert store.list_restore_status(HN1) == [row] and store.list_restore_status(HN0) == []
    store.delete_restore_status(HN1, SAPI0)
    assert store.list_restore_status() == []
    with pytest.raises(ValidationError, match="status must be one of"):
        store.put_restore_status(RestoreStatus(HN1, "sapi", SAPI0, status="splendid"))
    store.close()


def test_ls_table(dc):
    result = sdcadm("restore-data", "ls")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "HEADNODE    SERVICE    INSTANCE    SOURCE    SNAPSHOT          AGE    SIZE    STATUS\n"
        "hn1         imgapi     imgapi0     hn0       -                 never  0       failed\n"
        "hn1         sapi       sapi0       hn0       20231114T221320Z  1m15s  1.5K    ok\n"
        "hn2         sapi       sapi0       hn0       20231114T221320Z  1m15s  1.5K    unreachable\n")


def test_ls_json_and_long(dc):
    rows = json.loads(sdcadm("restore-data", "ls", "-j").stdout)
    assert len(rows) == 3 and rows[1]["headnode"] == "hn1" and rows[1]["age"] == 75.0
    assert rows[1]["stale"] is False and rows[0]["stale"] is True
    assert rows[2]["error"] == "source server hn0 is unreachable"
    out = sdcadm("restore-data", "ls", "-H", "-o", "headnode,status,error", "-s", "-status").stdout
    assert out.splitlines()[0] == "hn2\tunreachable\tsource server hn0 is unreachable"


def test_ls_rows_and_bytes():
    assert format_bytes(0) == "0" and format_bytes(1536) == "1.5K"
    assert format_bytes(5 << 30) == "5.0G" and format_bytes(None) is None
    assert ls_rows([], [], NOW, 60) == []


def _sync(hostname, reachable=True, error=None, **statuses):
    r = HeadnodeSync(hostname, HN1, "http://x", reachable=reachable, error=error)
    r.services = {k: ServiceResult(k, v, None if v == "ok" else "why")
                  for k, v in statuses.items()}
    r.summary = SyncSummary(HN1, hostname, True) if reachable and not error else None
    return r


def _exit_code(results):
    """The exit code main() gives for these results."""
    try:
        check_synced(results)
    except (ReportedFailure, ReportedUnreachable) as e:
        assert e.reported
        return e.exit_code
    return 0


def test_exit_codes():
    assert _exit_code([_sync("hn1", sapi="ok"), _sync("hn2")]) == 0
    assert _exit_code([_sync("hn0", reachable=False, error="connection refused"),
                       _sync("hn1", sapi="unreachable")]) == 3
    assert _exit_code([_sync("hn1", sapi="failed"), _sync("hn0", reachable=False)]) == 1
    assert _exit_code([_sync("hn1", sapi="busy")]) == 1
    assert _exit_code([_sync("hn1", error="HTTP 409: hn1 is not a headnode")]) == 1
    stream_ended = _sync("hn1", sapi="ok")
    stream_ended.summary = None
    assert _exit_code([stream_ended]) == 1
    assert "without a summary" in stream_ended.problems[0][1]


def test_results_as_json_keep_the_event_fields():
    doc = _sync("hn1", sapi="failed").to_dict()
    assert doc["services"]["sapi"] == {"event": "ServiceResult", "service": "sapi",
                                       "status": "failed", "error": "why", "duration": 0.0,
                                       "instances": (), "vanished": 0, "warning": None}
    assert doc["summary"]["event"] == "SyncSummary" and doc["ok"] is False


def test_progress_lines_when_not_a_terminal():
    out = io.StringIO()
    display = HeadnodeProgress(["hn1", "hn2"], stream=out)
    display.update("hn1", Progress("restore-data/sapi", "sapi: sapi0 from hn0", 0, 1))
    display.update("hn1", Progress("restore-data/sapi", "throttled", 5, None))
    display.update("hn1", ServiceResult("sapi", "ok"))
    display.update("hn2", SyncSummary(HN2, "hn2", False, {"sapi": "failed"}))
    assert out.getvalue() == (
        "[hn1] sapi: sapi0 from hn0 [....................] 0/1\n"
        "[hn1] sapi: ok\n"
        "[hn2] done: sapi failed\n")


class _Runner:
    def __init__(self, headnode=True, services=("sapi", "imgapi"), fail=False):
        self.headnode, self.services, self.fail = headnode, services, fail

    def known_services(self):
        if self.fail:
            raise StoreUnreachable("gone")
        return sorted(self.services)

    def is_headnode(self):
        return self.headnode


class _Agent:
    hostname = "hn1"

    def __init__(self, **kw):
        self.restore_data = _Runner(**kw)


@pytest.mark.parametrize("body,agent,status,error,text", [
    (b"{nope", _Agent(), 400, "bad-request", "not JSON"),
    (b"[]", _Agent(), 400, "bad-request", "is not of type 'object'"),
    (b'{"services": "sapi"}', _Agent(), 400, "bad-request", "at services"),
    (b'{"reseed": "yes"}', _Agent(), 400, "bad-request", "at reseed"),
    (b'{"extra": 1}', _Agent(), 400, "bad-request", "'extra' was unexpected"),
    (b'{"services": ["sapi", "nosuch"]}', _Agent(), 400, "unknown-service",
     "unknown service 'nosuch'; known services: imgapi, sapi"),
    (b"{}", _Agent(headnode=False), 409, "not-a-headnode", "hn1 is not a headnode"),
    (b'{"services": ["sapi"]}', _Agent(fail=True), 503, "store-unreachable", "gone"),
])
def test_bad_sync_requests(body, agent, status, error, text):
    with pytest.raises(RequestError) as exc:
        parse_sync_request(body, agent)
    assert (exc.value.status, exc.value.error) == (status, error)
    assert text in str(exc.value)


def test_good_sync_requests():
    assert parse_sync_request(b"", _Agent()) == (None, False)
    assert parse_sync_request(b'{"services": ["sapi"], "reseed": true}', _Agent()) == (["sapi"], True)
    assert parse_sync_request(b'{"services": []}', _Agent()) == (None, False)

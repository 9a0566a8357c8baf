"""`sdcadm task ls|get` against a real temporary sqlite store."""

import json
import os

import pytest
from click.testing import CliRunner

from sdcadm.cli.main import cli
from sdcadm.model import Task
from tests.conftest import store_at

T1 = "aaaa1111-0000-4000-8000-000000000001"
T2 = "aaaa2222-0000-4000-8000-000000000002"
NOW = 1_700_000_000.0


@pytest.fixture
def dc(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("SDCADM_"):
            monkeypatch.delenv(name)
    path = tmp_path / "dc.sqlite"
    store = store_at(path, create=True)
    store.put_task(Task(uuid=T1, name="instance-restart sapi0", state="succeeded", created=NOW,
                        started=NOW + 1, finished=NOW + 3.5,
                        steps=[{"name": "restart sapi0", "procedure": "instance-restart sapi0",
                                "state": "succeeded", "elapsed_s": 2.5,
                                "result": {"downtime_s": 0.2, "new_pid": 7},
                                "log": "/var/log/sdcadm/x.log"}]))
    store.put_task(Task(uuid=T2, name="instance-restart vmapi0", state="failed", created=NOW + 10,
                        started=NOW + 10, finished=NOW + 11,
                        error="step 'restart vmapi0' failed: boom",
                        steps=[{"name": "restart vmapi0", "procedure": "instance-restart vmapi0",
                                "state": "failed", "error": "boom"}]))
    store.close()
    cfg = tmp_path / "sdcadm.yaml"
    cfg.write_text(f"store:\n  path: {path}\n")
    monkeypatch.setenv("SDCADM_CONFIG", str(cfg))
    return tmp_path


def sdcadm(*args):
    return CliRunner().invoke(cli, list(args))


def test_task_ls_newest_first(dc):
    result = sdcadm("task", "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["UUID", "NAME", "STATE", "CREATED", "ELAPSED", "STEPS"]
    assert lines[1].split() == [T2, "instance-restart", "vmapi0", "failed", "2023-11-14T22:13:30Z",
                                "1.0s", "0/1"]
    assert lines[2].split()[3:] == ["succeeded", "2023-11-14T22:13:20Z", "2.5s", "1/1"]


def test_task_ls_json_and_fields(dc):
    data = json.loads(sdcadm("task", "ls", "-j").stdout)
    assert [t["uuid"] for t in data] == [T2, T1]
    assert data[1]["elapsed"] == 2.5 and data[1]["steps"][0]["result"]["new_pid"] == 7
    limited = sdcadm("task", "ls", "-H", "-o", "uuid,state", "--limit", "1")
    assert limited.stdout == f"{T2}\tfailed\n"


def test_task_get_by_prefix_human_and_json(dc):
    result = sdcadm("task", "get", "aaaa1")
    assert result.exit_code == 0, result.output
    assert f"uuid:     {T1}" in result.stdout and "state:    succeeded" in result.stdout
    assert "log:      /var/log/sdcadm/x.log" in result.stdout
    assert "downtime_s=0.2 new_pid=7" in result.stdout
    doc = json.loads(sdcadm("task", "get", T2, "-j").stdout)
    assert doc["error"] == "step 'restart vmapi0' failed: boom"
    assert sdcadm("task", "get", T2, "-H", "-o", "name,state,error").stdout == (
        "restart vmapi0\tfailed\tboom\n")


def test_task_get_errors(dc):
    missing = sdcadm("task", "get", "bbbb")
    assert missing.exit_code == 1 and "no task with UUID starting with 'bbbb'" in missing.stderr
    ambiguous = sdcadm("task", "get", "aaaa")
    assert ambiguous.exit_code == 1 and "start of 2 task UUIDs" in ambiguous.stderr
    short = sdcadm("task", "get", "aa")
    assert short.exit_code == 2


@pytest.mark.parametrize("limit", ["100000000000000000000000", "0", "-1", "ten"])
def test_task_ls_limit_out_of_range_is_a_usage_error(dc, limit):
    result = sdcadm("task", "ls", "--limit", limit)
    assert result.exit_code == 2, result.output
    assert "--limit" in result.output and "Traceback" not in result.output

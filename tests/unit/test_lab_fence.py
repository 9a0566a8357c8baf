"""The lab's fence agent reads its lab without the JSON Schema (its run time
is in the restore's RTO): a lab file that is wrong must still be refused with
a clear error, and nothing killed."""

import json

import pytest

from sdcadm.errors import LabError
from sdcadm.lab import fence
from sdcadm.lab.state import DEFAULT_PORTS, STATE_FILE, load_state

GOOD = {"version": 1, "net": "127.99.0.0/24", "ports": dict(DEFAULT_PORTS), "store": "etcd", "backend": "dir",
        "heartbeat_interval": 1.0, "created": 0.0,
        "servers": [{"hostname": "hn0", "uuid": "00000000-0000-4000-8000-000000000000",
                     "admin_ip": "127.99.0.1", "headnode": True}]}


def lab(tmp_path, doc):
    (tmp_path / STATE_FILE).write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return tmp_path


def test_a_good_lab_reads_the_same_with_and_without_the_schema(tmp_path):
    d = lab(tmp_path, {**GOOD, "dir": str(tmp_path.resolve())})
    assert load_state(d, schema=False) == load_state(d)


@pytest.mark.parametrize("doc, says", [
    ("{not json", "unreadable"),
    ("[1, 2]", "not a lab state"),
    ({"servers": []}, "not a lab state"),                         # dir and net missing
    ({**GOOD, "surprise": 1}, "not a lab state"),                  # a key it does not know
    ({**GOOD, "servers": ["hn0"]}, "not a lab state"),
    ({**GOOD, "servers": [{"hostname": "hn0"}]}, "hostname and a uuid"),
    ({**GOOD, "dir": "/elsewhere"}, "describes a lab at /elsewhere"),
])
def test_a_bad_lab_file_is_refused_by_the_fence_agent_and_nothing_is_killed(
        tmp_path, monkeypatch, capsys, doc, says):
    if isinstance(doc, dict) and "dir" not in doc and "net" in doc:
        doc = {**doc, "dir": str(tmp_path.resolve())}
    d = lab(tmp_path, doc)
    with pytest.raises(LabError, match=says):
        load_state(d, schema=False)
    killed = []
    monkeypatch.setattr(fence.procs, "send", lambda pid, sig: killed.append(pid))
    monkeypatch.setattr(fence.procs, "kill_group", lambda pid, sig: killed.append(pid))
    assert fence.main(["--dir", str(d), "hn0"]) == 1
    assert killed == [] and says in capsys.readouterr().err

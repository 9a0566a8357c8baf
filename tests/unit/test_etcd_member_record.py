"""The etcd member a headnode made by headnode-setup runs: `store start-member`
records it, `store recover` there reads the record when the configuration
has no store.member section (a tampered record is refused, naming the file),
and `store stop-member` stops only an etcd on the data directory named, with
SIGKILL for one that ignores SIGTERM."""

import json
import subprocess
import sys

import pytest

from sdcadm.config import config_from
from sdcadm.errors import ConfigError, ValidationError
from sdcadm.store.etcd_member import MEMBER_RECORD, member_record, read_record, stop_member, \
    write_record

SDCADM = "/opt/sdcadm/bin/sdcadm"


def record(tmp_path):
    return member_record(SDCADM, "cn0", tmp_path / "var/etcd", "http://10.0.0.9:2380",
                         "http://10.0.0.9:2379", "hn0=http://10.0.0.1:2380,cn0=http://10.0.0.9:2380",
                         tmp_path / "var/run/etcd.pid", tmp_path / "var/log/etcd.log")


def config(tmp_path, member=None):
    store = {"backend": "etcd", "etcd_endpoints": ["10.0.0.1:2379"]}
    if member:
        store["member"] = member
    return config_from({"root": str(tmp_path), "hostname": "cn0", "store": store}, "test")


def test_the_record_says_how_to_start_and_stop_the_member_again(tmp_path):
    doc = record(tmp_path)
    assert doc["start_command"][:3] == [SDCADM, "store", "start-member"]
    assert doc["start_command"][doc["start_command"].index("--data-dir") + 1] == doc["data_dir"]
    assert doc["stop_command"] == [SDCADM, "store", "stop-member", "--pid-file",
                                   str(tmp_path / "var/run/etcd.pid"), "--data-dir",
                                   str(tmp_path / "var/etcd")]
    path = tmp_path / MEMBER_RECORD.lstrip("/")
    write_record(path, doc)
    assert read_record(path) == doc
    assert read_record(tmp_path / "none.json") is None


def test_recover_reads_the_record_when_the_config_has_no_member(tmp_path):
    from sdcadm.procedures.store_recover import member_of

    with pytest.raises(ConfigError, match="store.member.peer_url is not set") as missing:
        member_of(config(tmp_path))
    assert "etcd-member.json, which is missing" in missing.value.hint
    path = tmp_path / MEMBER_RECORD.lstrip("/")
    write_record(path, record(tmp_path))
    got = member_of(config(tmp_path))
    assert (got["name"], got["peer_url"], got["source"]) == ("cn0", "http://10.0.0.9:2380",
                                                             str(path))
    # a configured member wins over the record
    mine = member_of(config(tmp_path, {"peer_url": "http://10.0.0.5:2380",
                                       "data_dir": "/var/lib/etcd"}))
    assert mine["peer_url"] == "http://10.0.0.5:2380"
    assert mine["data_dir"] == str(tmp_path / "var/lib/etcd")


@pytest.mark.parametrize("damage, problem", [
    (lambda d: "not json {", "not JSON"),
    (lambda d: json.dumps(dict(d, start_command="rm -rf /")), "start_command"),
    (lambda d: json.dumps(dict(d, stop_command=[])), "stop_command"),
    (lambda d: json.dumps(dict(d, data_dir="var/etcd")), "data_dir"),
    (lambda d: json.dumps(dict(d, peer_url="http://x:1/../../y")), "peer_url"),
    (lambda d: json.dumps(dict(d, extra=1)), "extra"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "name"}), "name"),
    (lambda d: json.dumps(dict(d, name="x" * 70000)), "larger than"),
])
def test_a_tampered_record_is_refused_naming_the_file(tmp_path, damage, problem):
    from sdcadm.procedures.store_recover import member_of

    path = tmp_path / MEMBER_RECORD.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text(damage(record(tmp_path)))
    with pytest.raises(ValidationError, match=problem) as refused:
        member_of(config(tmp_path))
    assert str(path) in str(refused.value)


def _process(tmp_path, data_dir, ignore_term=False):
    """A stand-in member: a process whose argv names ``data_dir``, its pid
    in a pid file; it says "ready" once its signal handling is set."""
    code = ("import signal, sys, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + "print('ready', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    pid_file = tmp_path / "etcd.pid"
    pid_file.write_text(f"{proc.pid}\n")
    return proc, pid_file


@pytest.mark.parametrize("ignore_term", [False, True])
def test_stop_member_stops_the_member_on_its_data_directory(tmp_path, ignore_term):
    data_dir = tmp_path / "etcd"
    proc, pid_file = _process(tmp_path, data_dir, ignore_term)
    try:
        assert stop_member(pid_file, data_dir, timeout=0.5) is True
        assert proc.wait(timeout=10) == (-9 if ignore_term else -15)
        assert stop_member(pid_file, data_dir) is False   # nothing left to stop
    finally:
        proc.kill()
        proc.wait()


def test_stop_member_never_kills_a_process_on_another_data_directory(tmp_path):
    proc, pid_file = _process(tmp_path, tmp_path / "other")
    try:
        assert stop_member(pid_file, tmp_path / "etcd", timeout=0.5) is False
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()

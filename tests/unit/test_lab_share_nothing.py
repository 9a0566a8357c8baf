"""The share-nothing lab's pure parts: the store it picks, what each server's
configuration names, the etcd member's command line, the sshd's per-server
roots. (The lab itself: tests/integration/test_lab_share_nothing.py.)"""

import pytest

from sdcadm.errors import LabError
from sdcadm.lab import ctl, etcd
from sdcadm.lab.sshd import render_sshd_config
from sdcadm.lab.state import LabState

U = "11111111-1111-4111-8111-11111111111{}"


def lab(tmp_path, store="etcd", heads=3, computes=1):
    servers = [{"hostname": f"hn{i}", "uuid": U.format(i), "admin_ip": f"127.9.9.{i + 1}",
                "headnode": True} for i in range(heads)]
    servers += [{"hostname": f"cn{i}", "uuid": U.format(heads + i),
                 "admin_ip": f"127.9.9.{heads + i + 1}", "headnode": False}
                for i in range(computes)]
    return LabState(dir=str(tmp_path), net="127.9.9.0/24", servers=servers, store=store)


def test_sqlite_is_refused_for_more_than_one_server(monkeypatch):
    with pytest.raises(LabError, match="cannot keep its store in sqlite") as e:
        ctl.choose_store("sqlite", 2)
    assert "--store etcd" in e.value.hint
    assert ctl.choose_store("sqlite", 1) == "sqlite"


def test_default_store_is_etcd_when_installed_else_sqlite_for_one_server(monkeypatch):
    monkeypatch.setattr(etcd, "etcd_program", lambda: "/usr/bin/etcd")
    assert ctl.choose_store(None, 5) == "etcd"
    monkeypatch.setattr(etcd, "etcd_program", lambda: None)
    notes = []
    assert ctl.choose_store(None, 1, observer=notes.append) == "sqlite"
    assert "etcd is not installed" in notes[0].message
    with pytest.raises(LabError, match="etcd is not installed") as e:
        ctl.choose_store(None, 2)
    assert "apt-get install etcd-server" in e.value.hint
    with pytest.raises(LabError, match="--store etcd: etcd is not installed"):
        ctl.choose_store("etcd", 1)


def test_each_server_lists_every_member_its_own_first(tmp_path):
    state = lab(tmp_path)
    assert state.store_config("hn1")["etcd_endpoints"] == [
        "127.9.9.2:2379", "127.9.9.1:2379", "127.9.9.3:2379"]
    assert state.store_config("cn0")["etcd_endpoints"] == [
        "127.9.9.1:2379", "127.9.9.2:2379", "127.9.9.3:2379"]
    assert "path" not in state.store_config("hn0")


def test_sqlite_store_lies_in_the_one_servers_root(tmp_path):
    state = lab(tmp_path, store="sqlite", heads=1, computes=0)
    assert state.store_config("hn0") == {
        "backend": "sqlite", "path": str(tmp_path / "hn0" / "var" / "sdcadm" / "dc.sqlite")}


def test_server_config_names_only_its_own_root(tmp_path):
    state = lab(tmp_path)
    doc = ctl.server_config(state, state.server("hn1"))
    root = str(tmp_path / "hn1") + "/"
    paths = [doc["root"] + "/", doc["log_dir"], doc["restore_data_dir"], doc["image_source"],
             doc["restore_data"]["key_file"], doc["agent"]["token_file"],
             doc["agent"]["cache_file"], doc["ssh"]["identity"], doc["ssh"]["known_hosts"]]
    assert all(p.startswith(root) for p in paths), paths
    # A source server's files as its sshd shows them: relative to its root.
    assert doc["restore_data"]["source_root_template"] == "."


def test_member_command_line(tmp_path):
    state = lab(tmp_path)
    argv = etcd.member_argv(state, "hn1", program="/usr/bin/etcd")
    opt = dict(zip(argv[1::2], argv[2::2]))
    assert opt["--name"] == "hn1"
    assert opt["--data-dir"] == str(tmp_path / "hn1" / "var" / "etcd")
    assert opt["--listen-client-urls"] == "http://127.9.9.2:2379"
    assert opt["--listen-peer-urls"] == "http://127.9.9.2:2380"
    assert opt["--initial-cluster"] == ("hn0=http://127.9.9.1:2380,hn1=http://127.9.9.2:2380,"
                                        "hn2=http://127.9.9.3:2380")
    assert opt["--initial-cluster-token"] == etcd.cluster_token(state)
    with pytest.raises(LabError, match="compute node"):
        etcd.member_argv(state, "cn0")


def test_ports_of_a_lab_made_before_etcd_default(tmp_path):
    state = lab(tmp_path)
    state.ports = {"agent": 1, "ssh": 2, "instance": 3}
    assert state.port("etcd_client") == 2379 and state.port("etcd_peer") == 2380


def test_sshd_runs_a_login_in_the_root_of_the_address(tmp_path):
    text = render_sshd_config(["127.9.9.1", "127.9.9.2"], 2222, host_key="h", pid_file="p",
                              authorized_keys="a", user="root",
                              roots={"127.9.9.2": "/lab/hn1", "127.9.9.1": "/lab dir/hn0"})
    tail = text.split("SetEnv SHLVL=1\n", 1)[1].splitlines()
    assert tail == [
        "Match LocalAddress 127.9.9.1",
        "    ForceCommand cd '/lab dir/hn0' && eval \"$SSH_ORIGINAL_COMMAND\"",
        "Match LocalAddress 127.9.9.2",
        "    ForceCommand cd /lab/hn1 && eval \"$SSH_ORIGINAL_COMMAND\""]
    with pytest.raises(LabError, match="quote"):
        render_sshd_config(["127.9.9.1"], 22, host_key="h", pid_file="p", authorized_keys="a",
                           user="root", roots={"127.9.9.1": "/lab\"/hn0"})


def test_powered_off_is_where_kill_moves_the_root(tmp_path):
    state = lab(tmp_path)
    (tmp_path / "hn0").mkdir()
    assert not state.powered_off("hn0")
    state.powered_off_root("hn0").parent.mkdir()
    (tmp_path / "hn0").rename(state.powered_off_root("hn0"))
    assert state.powered_off("hn0")
    ctl._power_on(state, "hn0")
    assert (tmp_path / "hn0").is_dir() and not state.powered_off("hn0")


def test_lab_up_store_option(tmp_path):
    """--store is checked before anything is made: a bad value is a usage
    error, sqlite for several servers a clear error; the directory stays empty."""
    from click.testing import CliRunner

    from sdcadm.cli.main import cli

    directory = tmp_path / "dc"
    runner = CliRunner()
    bad = runner.invoke(cli, ["lab", "up", "--dir", str(directory), "--store", "zk"])
    assert bad.exit_code == 2 and "'zk' is not one of 'etcd', 'sqlite'" in bad.output
    refused = runner.invoke(cli, ["lab", "up", "--dir", str(directory), "--store", "sqlite",
                                  "--net", "127.9.9.0/24"])
    assert refused.exit_code == 1
    assert "cannot keep its store in sqlite" in refused.output and "--store etcd" in refused.output
    assert not directory.exists()
    helped = runner.invoke(cli, ["lab", "up", "--help"])
    assert "--store [etcd|sqlite]" in helped.output


def test_sqlite_shared_by_counts_other_servers_that_heartbeated():
    from sdcadm.config import config_from
    from sdcadm.model import Server
    from sdcadm.store import sqlite_shared_by

    me, other, record = (Server(uuid=U.format(i), hostname=f"hn{i}", admin_ip=f"127.9.9.{i}",
                                last_heartbeat=hb) for i, hb in ((1, 5.0), (2, 7.0), (3, 0.0)))
    sqlite = config_from({"server_uuid": me.uuid, "store": {"backend": "sqlite"}}, "t")
    assert sqlite_shared_by(sqlite, [me, other, record]) == [other]
    assert sqlite_shared_by(sqlite, [me, record]) == []
    etcd_config = config_from({"server_uuid": me.uuid, "store": {"backend": "etcd", "etcd_endpoints": ["127.9.9.1:2379"]}}, "t")
    assert sqlite_shared_by(etcd_config, [me, other]) == []

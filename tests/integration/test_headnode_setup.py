"""`sdcadm server headnode-setup` on a real lab: the bundle goes over the lab's
sshd (host keys checked), cn0's usbkey is seeded, cn0's etcd member joins the
store's cluster (started over SSH, its data in cn0's root), cn0 shows flag H,
restore data arrives on it, recovery addresses are reserved; bad input is
refused with the reason and changes nothing. (`server delete` removing a
member: tests/integration/test_drill.py, whose heal deletes hn0.)"""

import json
import sys

import pytest

from sdcadm.config import load_config
from sdcadm.lab import etcd
from sdcadm.lab.state import load_state
from sdcadm.procedures import store_member
from sdcadm.procedures.planning.member_plan import MemberJoin
from sdcadm.procedures.store_member import MemberFailed
from sdcadm.store.etcd_client import EtcdClient
from sdcadm.store.etcd_member import MEMBER_RECORD, read_record
from sdcadm.model import ADMIN_NETWORK
from sdcadm.usbkey.bundle import scan
from tests.conftest import env_of, lab_factory, lab_store_config, needs_sshd, run, wait_for

pytestmark = [pytest.mark.integration, needs_sshd]


def sdcadm(directory, *argv):
    return run("sdcadm", *argv, env=env_of(directory, "hn0"), check=False, timeout=400)


def servers(directory):
    out = run("sdcadm", "server", "ls", "-j", env=env_of(directory, "hn0")).stdout
    return {s["hostname"]: s for s in json.loads(out)}


def dc_facts(directory):
    from sdcadm.store import open_store

    with open_store(lab_store_config(directory)) as store:
        return ({s.hostname: (s.setup, s.headnode, s.generation) for s in store.list_servers()},
                store.get_network(ADMIN_NETWORK).reservations,
                store.list_restore_status())


def test_headnode_setup_of_a_compute_node(tmp_path):
    with lab_factory(tmp_path) as up:
        check(up("--headnodes", "3", "--computenodes", "2", "--unregistered", "1",
                 "--services", "sapi,assets", "--heartbeat-interval", "0.5"))


def members(lab):
    from sdcadm.store.etcd_maintenance import cluster_members

    return sorted(m["name"] for m in cluster_members([lab.etcd_endpoint("hn0")]))


def check(directory):
    lab = load_state(directory)
    before = dc_facts(directory)
    assert members(lab) == ["hn0", "hn1", "hn2"]

    # -- refused, with the reason, nothing changed ------------------------------------
    for argv, reason in ((["nosuch"], "no server named 'nosuch'"),
                         (["hn0"], "hn0 is already a headnode"),
                         (["cn1"], "cn1 is not set up (sdcadm server setup cn1 first)"),
                         # one bad server refuses the whole command: cn0 is left alone
                         (["cn0", "cn1"], "cn1 is not set up")):
        refused = sdcadm(directory, "server", "headnode-setup", *argv, "-y")
        assert refused.returncode == 1 and reason in refused.stderr, (argv, refused.stderr)
    run("sdcadm", "lab", "kill", "--dir", str(directory), "cn1")
    wait_for(lambda: servers(directory)["cn1"]["status"] == "unreachable", 30,
             "cn1 to be unreachable")
    refused = sdcadm(directory, "server", "headnode-setup", "cn1", "-y")
    assert refused.returncode == 1 and "cn1 is unreachable" in refused.stderr, refused.stderr
    assert dc_facts(directory)[:2] == before[:2]
    assert not (lab.server_root("cn0") / "usbkey").exists()

    # -- the plan, then the real thing ------------------------------------------------------
    dry = sdcadm(directory, "server", "headnode-setup", "cn0", "-n")
    assert dry.returncode == 0, dry.stderr
    assert "make cn0" in dry.stdout
    # `lab up` made hn1 and hn2 headnodes with this command: the recovery
    # addresses of sapi and assets exist already, none is added
    assert sorted(before[1].values()) == ["recovery:assets", "recovery:sapi"]
    assert "recovery admin address" not in dry.stdout
    assert "the DC will have 4 headnodes" in dry.stdout
    assert "cn0's etcd member: add it to the store's cluster (http://" in dry.stdout
    assert dc_facts(directory)[:2] == before[:2]

    # A member of the cluster down: etcd would refuse a new member, so the
    # command is refused before anything changes; etcd's own refusal, asked
    # directly, is said as clearly.
    member_ctl = [sys.executable, "-m", "sdcadm.lab.etcd", "--dir", str(directory)]
    run(*member_ctl, "stop", "hn2")
    refused = sdcadm(directory, "server", "headnode-setup", "cn0", "-y")
    assert refused.returncode == 1, refused.stdout
    assert "the etcd member hn2 does not answer" in refused.stderr, refused.stderr
    assert "sdcadm server delete HOST" in refused.stderr
    config = load_config(lab.config_path("hn0"), environ={})
    join = MemberJoin("cn0", f"http://{lab.server('cn0')['admin_ip']}:{lab.port('etcd_peer')}",
                      "unused", None)
    with pytest.raises(MemberFailed, match="refused cn0's member: etcdserver: unhealthy cluster"):
        store_member.add(config, join, print, wait=0)
    run(*member_ctl, "start", "hn2")
    wait_for(lambda: etcd.healthy(lab, "hn2"), 30, "hn2's member to answer again")
    assert members(lab) == ["hn0", "hn1", "hn2"] and dc_facts(directory)[:2] == before[:2]

    # A failure half-way (cn0 does not know hn0's host key: its first pull
    # fails) leaves cn0 a headnode and the task failed; once fixed, the same
    # command resumes that task and finishes it.
    known = lab.ssh_client_dir("cn0") / "known_hosts"
    saved = known.read_text()
    known.write_text("")
    failed = sdcadm(directory, "server", "headnode-setup", "cn0", "-y")
    assert failed.returncode != 0, failed.stdout
    assert "first restore-data sync on cn0 failed" in failed.stderr, failed.stderr
    assert "run the same command again" in failed.stderr
    assert servers(directory)["cn0"]["flags"] == "SH---"
    known.write_text(saved)

    done = sdcadm(directory, "server", "headnode-setup", "cn0", "-y", "-j")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "succeeded" and result["resumed"] is True
    listed = servers(directory)
    assert listed["cn0"]["flags"] == "SH---" and listed["hn0"]["flags"].startswith("SHP")
    assert listed["cn1"]["flags"] == "-----"  # untouched by the refusals

    # cn0's member: started on cn0 (its data in cn0's root), healthy, in the cluster
    assert members(lab) == ["cn0", "hn0", "hn1", "hn2"]
    assert etcd.healthy(lab, "cn0") and etcd.member_pid(lab, "cn0")
    assert (lab.etcd_dir("cn0") / "member").is_dir()
    # a client configured with hn0 only learns cn0 from the member list
    client = EtcdClient([lab.etcd_endpoint("hn0")], timeout=5.0)
    client.get("/sdcadm/nothing")
    assert f"http://{lab.etcd_endpoint('cn0')}" in client.endpoints

    # cn0's configuration has no store.member section: what `store start-member`
    # recorded there is what `store recover` on cn0 would stop and start; both
    # commands work, run on cn0 as they are written
    recorded = read_record(lab.server_root("cn0") / MEMBER_RECORD.lstrip("/"))
    assert recorded["name"] == "cn0" and recorded["data_dir"] == str(lab.etcd_dir("cn0"))
    on_cn0 = env_of(directory, "cn0")
    run(*recorded["stop_command"], env=on_cn0)
    assert etcd.member_pid(lab, "cn0") is None and not etcd.healthy(lab, "cn0")
    run(*recorded["start_command"], env=on_cn0)
    wait_for(lambda: etcd.healthy(lab, "cn0"), 30, "cn0's member to answer again")
    assert members(lab) == ["cn0", "hn0", "hn1", "hn2"]
    planned = run("sdcadm", "store", "recover", "-n", env=on_cn0, check=False)
    assert planned.returncode == 1 and "quorum" in planned.stderr, planned.stderr  # not a
    # missing member configuration: the store has its quorum, and that refuses it

    # cn0's usbkey is hn0's, file for file
    assert scan(lab.server_root("cn0") / "usbkey")[0] == scan(lab.server_root("hn0") / "usbkey")[0]
    # restore data arrived on cn0: a good copy of each of hn0's single instances
    servers_now, reservations, statuses = dc_facts(directory)
    cn0 = lab.server("cn0")["uuid"]
    good = {s.alias for s in statuses if s.receiver == cn0 and s.status == "ok"}
    assert good == {"sapi0", "assets0"}
    assert (lab.server_root("cn0") / "var" / "sdcadm" / "svc-restore-data" / "svc-sapi").is_dir()
    assert sorted(reservations.values()) == ["recovery:assets", "recovery:sapi"]

    # every headnode's usbkey matches hn0's but cn0's, edited here: its drift
    # is listed file by file (one run: the headnodes are asked at once)
    catalog = lab.server_root("cn0") / "usbkey" / "catalog" / "core-services.yaml"
    saved = catalog.read_bytes()
    catalog.write_bytes(saved + b"# edited by hand\n")
    (lab.server_root("cn0") / "usbkey" / "images" / "stray.json").write_text("{}")
    drifted = sdcadm(directory, "usbkey", "status", "-j")
    assert drifted.returncode == 1, drifted.stdout
    rows = {r["headnode"]: r for r in json.loads(drifted.stdout)["headnodes"]}
    assert {h: r["state"] for h, r in rows.items()} == {"hn1": "ok", "hn2": "ok", "cn0": "drift"}
    assert rows["cn0"]["drift"] == [{"file": "catalog/core-services.yaml", "change": "changed"},
                                    {"file": "images/stray.json", "change": "extra"}]
    catalog.write_bytes(saved)
    (lab.server_root("cn0") / "usbkey" / "images" / "stray.json").unlink()

    # again: cn0 is a headnode now; nothing changes
    again = sdcadm(directory, "server", "headnode-setup", "cn0", "-y")
    assert again.returncode == 1 and "cn0 is already a headnode" in again.stderr
    assert dc_facts(directory)[:2] == (servers_now, reservations)

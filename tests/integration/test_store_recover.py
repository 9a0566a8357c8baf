"""The store as restore data, `store status` and `store recover`, against real
etcd: a member of our own for the snapshot source and the refusals, and a
3-headnode lab that loses two headnodes (`lab drill --lose hn0,hn1`)."""

import json
import os
import shutil
import subprocess

import pytest

from sdcadm.config import config_from
from sdcadm.procedures.planning.common import NotViable
from sdcadm.restore_data.layout import restore_layout
from sdcadm.restore_data.store_snapshot import (MANIFEST, StoreSnapshotter, read_store_manifest,
                                                store_dir)
from tests.conftest import (env_of, free_port, lab_factory, needs_sshd, random_address,
                            random_net, run)
from tests.etcd_server import ETCD, NO_ETCD, EtcdServer

pytestmark = [pytest.mark.integration, pytest.mark.etcd,
              pytest.mark.skipif(ETCD is None, reason=NO_ETCD),
              pytest.mark.skipif(shutil.which("etcdctl") is None,
                                 reason="etcdctl not installed (apt-get install etcd-client; "
                                        "`make deps` does it as root)")]

KEY = b"s" * 32


@pytest.fixture
def member(tmp_path):
    address = random_address()
    server = EtcdServer(tmp_path / "etcd", address, free_port(address), free_port(address))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def config_for(tmp_path, endpoints):
    key = tmp_path / "key"
    key.write_bytes(KEY)
    os.chmod(key, 0o600)
    return config_from({
        "server_uuid": "11111111-1111-4111-8111-111111111111", "hostname": "hn2",
        "restore_data_dir": str(tmp_path / "rd"), "restore_data": {"key_file": str(key)},
        "store": {"backend": "etcd", "etcd_endpoints": endpoints, "etcd_prefix": "/t/",
                  "member": {"peer_url": "http://127.0.0.1:9", "data_dir": str(tmp_path / "d"),
                             "start_command": ["true"], "stop_command": ["true"]}}}, "test")


def put(member, n):
    from sdcadm.store.etcd_client import EtcdClient, put as put_op

    client = EtcdClient([member.endpoint], 5.0)
    for i in range(n):
        client.txn([], [put_op(f"/t/k{i}", "v" * 100)])


def etcdctl_revision(path):
    out = subprocess.run(["etcdctl", "snapshot", "status", str(path), "-w", "json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["revision"]


def test_each_sync_keeps_a_checked_snapshot_and_only_the_newest(tmp_path, member):
    config = config_for(tmp_path, [member.endpoint])
    layout = restore_layout(config)
    put(member, 5)
    first = StoreSnapshotter(config, layout).take(dc_revision=1)
    assert first.status == "ok", first.error
    doc = read_store_manifest(layout)
    path = store_dir(layout) / doc["file"]
    assert doc["revision"] == first.revision == etcdctl_revision(path)
    assert doc["bytes"] == path.stat().st_size and doc["cluster_id"] and doc["dc_revision"] == 1
    put(member, 3)
    second = StoreSnapshotter(config, layout).take()
    assert second.status == "ok" and second.revision == first.revision + 3
    assert sorted(p.name for p in store_dir(layout).iterdir()) == sorted([MANIFEST, second.file])


def test_a_failed_snapshot_keeps_the_last_good_one(tmp_path, member):
    config = config_for(tmp_path, [member.endpoint])
    layout = restore_layout(config)
    put(member, 2)
    assert StoreSnapshotter(config, layout).take().status == "ok"
    before = {p.name: p.read_bytes() for p in store_dir(layout).iterdir()}
    dead = f"{random_address()}:{free_port('127.0.0.1')}"
    failed = StoreSnapshotter(config_for(tmp_path, [dead]), layout).take()
    assert failed.status == "failed" and "no etcd member gave a snapshot" in failed.error
    assert {p.name: p.read_bytes() for p in store_dir(layout).iterdir()} == before


def test_recover_is_refused_while_the_store_has_a_quorum(tmp_path, member):
    from sdcadm.procedures.store_recover import StoreRecover

    config = config_for(tmp_path, [member.endpoint])
    assert StoreSnapshotter(config, restore_layout(config)).take().status == "ok"
    with pytest.raises(NotViable, match="still has a quorum"):
        StoreRecover(config).prepare()


def test_recover_refuses_a_tampered_snapshot_even_forced(tmp_path, member):
    from sdcadm.procedures.store_recover import StoreRecover

    config = config_for(tmp_path, [member.endpoint])
    layout = restore_layout(config)
    put(member, 2)
    assert StoreSnapshotter(config, layout).take().status == "ok"
    path = store_dir(layout) / read_store_manifest(layout)["file"]
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(NotViable, match="does not match the manifest"):
        StoreRecover(config, force=True).prepare()
    assert (tmp_path / "d").exists() is False      # the member's data dir was never touched


def test_recover_refuses_a_snapshot_of_another_cluster(tmp_path, member):
    """A snapshot signed with this DC's key but of another etcd cluster than
    this headnode's member (e.g. one taken before an earlier recovery)."""
    from sdcadm.fsutil import canonical_json
    from sdcadm.procedures.store_recover import StoreRecover
    from sdcadm.restore_data.store_snapshot import seal_store_manifest

    config = config_for(tmp_path, [member.endpoint])
    layout = restore_layout(config)
    assert StoreSnapshotter(config, layout).take().status == "ok"
    doc = read_store_manifest(layout)
    other = "1" if doc["cluster_id"] != "1" else "2"
    doc = seal_store_manifest(dict(doc, cluster_id=other), KEY)
    (store_dir(layout) / MANIFEST).write_text(canonical_json(doc))
    with pytest.raises(NotViable, match=f"snapshot of etcd cluster {other}, not of this "
                                        "headnode's cluster"):
        StoreRecover(config, force=True).prepare()


def test_recover_from_a_snapshot_without_its_manifest_is_refused(tmp_path, member):
    from sdcadm.procedures.store_recover import StoreRecover

    config = config_for(tmp_path, [member.endpoint])
    layout = restore_layout(config)
    assert StoreSnapshotter(config, layout).take().status == "ok"
    loose = tmp_path / "loose"
    loose.mkdir()
    snap = store_dir(layout) / read_store_manifest(layout)["file"]
    shutil.copy(snap, loose / "copy.db")
    with pytest.raises(NotViable, match="no manifest.json next to it"):
        StoreRecover(config, from_snapshot=str(loose / "copy.db"), force=True).prepare()


def test_recover_refuses_a_snapshot_older_than_the_limit(tmp_path, member):
    from sdcadm.procedures.store_recover import StoreRecover

    config = config_for(tmp_path, [member.endpoint])
    layout = restore_layout(config)
    assert StoreSnapshotter(config, layout, clock=lambda: 1000.0).take().status == "ok"
    member.stop()                                   # the quorum is gone
    with pytest.raises(NotViable, match="older than the limit"):
        StoreRecover(config).prepare()
    with pytest.raises(NotViable, match="older than the limit"):
        StoreRecover(config, max_age=60).prepare()


@pytest.fixture
def lab3(tmp_path):
    directory = tmp_path / "dc"
    yield directory
    from sdcadm.lab import procs

    run("sdcadm", "lab", "down", "--dir", str(directory), check=False)
    assert procs.lab_processes(directory) == [], "lab down left processes behind"


@needs_sshd
@pytest.mark.slow
def test_drill_losing_two_headnodes_recovers_the_store_on_the_third(lab3):
    done = run("sdcadm", "lab", "drill", "-j", "--headnodes", "3", "--computenodes", "0",
               "--services", "sapi", "--lose", "hn0,hn1", "--dir", str(lab3),
               "--net", random_net(), "--timeout", "90")
    result = json.loads(done.stdout)
    print(f"drill --lose hn0,hn1: store recovered in {result['store_recovery_s']}s at revision "
          f"{result['store_recovered_revision']}, {result['store_revision_lost']} write(s) lost; "
          f"RTO {result['rto_s']}s; steps {result['store_recovery_steps']}")
    assert result["ok"] is True, result["problems"]
    assert result["lost"] == ["hn0", "hn1"] and result["restored_on"] == "hn2"
    assert result["dead_disk_gone"] and result["dead_member_gone"]
    assert result["store_recovery_s"] > 0 and result["store_recovered_revision"] > 0
    assert isinstance(result["store_revision_lost"], int) and result["store_revision_lost"] >= 0
    assert result["services_restored"] == 1
    assert result["canaries_verified"] == result["canaries_written_before_sync"] > 0
    assert result["fencing_checked"] is False and "old cluster" in result["fencing"]["skipped"]

    # hn2 now runs the store alone, as its operator sees it.
    status = run("sdcadm", "store", "status", "-j", env=env_of(lab3, "hn2"))
    doc = json.loads(status.stdout)
    assert doc["quorum"] is True and doc["leader"] == "hn2"
    assert [m["name"] for m in doc["members"]] == ["hn2"]
    assert doc["revision"] >= result["store_recovered_revision"]
    mine = next(s for s in doc["snapshots"] if s["headnode"] == "hn2")
    assert mine["ok"] is True
    # The survivor's next sync snapshots the new cluster.
    synced = run("sdcadm", "service", "sync-restore-data", env=env_of(lab3, "hn2"), check=False)
    assert synced.returncode == 3 and "hn2: store snapshot ok" in synced.stderr  # hn0, hn1 off
    doc = json.loads(run("sdcadm", "store", "status", "-j", env=env_of(lab3, "hn2")).stdout)
    mine = next(s for s in doc["snapshots"] if s["headnode"] == "hn2")
    assert mine["cluster_id"] == doc["cluster_id"] and mine["revision"] >= \
        result["store_recovered_revision"]
    # A recovered store is refused a second recovery while it has its quorum...
    again = run("sdcadm", "store", "recover", "-y", env=env_of(lab3, "hn2"), check=False)
    assert again.returncode == 1 and "still has a quorum" in again.stderr
    # ... unless forced: the command itself, end to end, from hn2's newest snapshot.
    forced = json.loads(run("sdcadm", "store", "recover", "-y", "--force", "-j",
                            env=env_of(lab3, "hn2")).stdout)
    assert forced["state"] == "succeeded" and forced["snapshot"]["headnode"] == "hn2"
    assert forced["result"]["members"] == 1
    assert forced["result"]["revision_now"] >= forced["result"]["revision"] == mine["revision"]
    assert os.path.isdir(forced["old_data_dir"])                 # kept, never deleted
    import yaml

    config = yaml.safe_load((lab3 / "hn2" / "etc" / "sdcadm.yaml").read_text())
    assert config["store"]["etcd_endpoints"] == [forced["member"]["client_url"].split("//")[1]]
    assert json.loads(run("sdcadm", "store", "status", "-j",
                          env=env_of(lab3, "hn2")).stdout)["quorum"] is True
    # The lost headnodes' members belong to the old cluster: never started again.
    back = run("sdcadm", "lab", "start", "--dir", str(lab3), "hn0", check=False)
    assert back.returncode != 0 and "old cluster" in back.stderr


@needs_sshd
@pytest.mark.slow
def test_status_and_recover_read_the_other_headnodes_snapshots_over_ssh(tmp_path):
    """Every headnode's snapshot is seen by `store status`; with none of its
    own, `store recover` fetches a peer's over SSH and checks it (a dry run:
    the fetched copy is removed, nothing else changes). Then, on the same lab
    (the smallest that shows it), the operator guide's lost-quorum runbook:
    hn0 and hn1 lost, the store and sapi rebuilt on hn2."""
    from tests.integration.test_runbooks import check_lost_quorum_runbook

    with lab_factory(tmp_path) as up:
        lab = up("--headnodes", "3", "--computenodes", "0", "--services", "sapi")
        check_peer_snapshots(lab, tmp_path)
        check_lost_quorum_runbook(lab)


def check_peer_snapshots(lab, tmp_path):
    run("sdcadm", "service", "sync-restore-data", env=env_of(lab, "hn2"))
    doc = json.loads(run("sdcadm", "store", "status", "-j", env=env_of(lab, "hn2")).stdout)
    assert doc["quorum"] is True and len(doc["members"]) == 3
    assert sorted(s["headnode"] for s in doc["snapshots"] if s["ok"]) == ["hn0", "hn1", "hn2"], \
        doc["snapshots"]
    assert {s["cluster_id"] for s in doc["snapshots"]} == {doc["cluster_id"]}

    # hn2 as if it had lost its own snapshot: its agent frozen (so that no sync
    # makes a new one meanwhile), its store/ moved away; only the peers' are left.
    import signal

    from sdcadm.lab import ctl
    from sdcadm.lab.state import load_state

    agent = ctl.agent_pid(load_state(lab), "hn2")
    own = lab / "hn2" / "var" / "sdcadm" / "svc-restore-data" / "store"
    os.killpg(agent, signal.SIGSTOP)
    try:
        os.rename(own, tmp_path / "hn2-store")
        done = run("sdcadm", "store", "recover", "-n", "--force", "-j", env=env_of(lab, "hn2"))
        plan = json.loads(done.stdout)
        assert plan["state"] == "dry-run"
        assert plan["snapshot"]["headnode"] in ("hn0", "hn1")
        assert plan["refused"][0]["headnode"] == "hn2"
        assert "no snapshot" in plan["refused"][0]["reason"]
        assert [p.name for p in own.iterdir()] == []      # the fetched copy is gone
    finally:
        os.killpg(agent, signal.SIGCONT)
    assert json.loads(run("sdcadm", "store", "status", "-j",
                          env=env_of(lab, "hn2")).stdout)["quorum"] is True

"""The runbooks of docs/operator-guide.md, run from the document itself
(tests/runbooks.py reads them) against real labs, each command in a shell
with the environment of its server; the outcome checked from outside: the
servers' flags (`server ls -j`), the etcd cluster's own member list, the
instances answering at their addresses, a canary written into sapi's data
before the runbook read back after it, `sdcadm status`' exit code.

Labs are shared to keep the suite's time: one lab goes through building a
DC, secondary headnodes, HA, reading status and decommissioning a headnode,
in that order; another loses a headnode and heals. The lost-quorum runbook
runs on the lab of tests/integration/test_store_recover.py that shows it
(``check_lost_quorum_runbook``)."""

import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from sdcadm.lab import etcd
from sdcadm.lab.state import load_state
from sdcadm.store.etcd_maintenance import cluster_members
from tests.conftest import BIN, env_of, lab_factory, needs_sshd, run, wait_for
from tests.etcd_server import ETCD, NO_ETCD
from tests.runbooks import guide_runbooks

# Labs of several servers keep their store on etcd.
pytestmark = [pytest.mark.integration, pytest.mark.etcd, pytest.mark.slow, needs_sshd,
              pytest.mark.skipif(ETCD is None, reason=NO_ETCD)]

HA = ("binder", "manatee", "moray")


def run_block(directory, block, timeout=300):
    """Each command of ``block``, in order, in a shell on its server (its
    environment: `eval "$(sdcadm lab env SERVER)"`, no terminal); an
    AssertionError naming the command and its output when one fails."""
    env = env_of(directory, block.on)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    for command in block.commands:
        started = time.monotonic()
        done = subprocess.run(["bash", "-c", command], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        print(f"{time.monotonic() - started:6.2f}s {block.on}$ {command}")
        if done.returncode != 0:
            raise AssertionError(
                f"runbook {block.runbook} (docs/operator-guide.md line {block.line}) on "
                f"{block.on}: `{command}` exited {done.returncode}\nstdout:\n{done.stdout}\n"
                f"stderr:\n{done.stderr}")


def blocks_of(name, count):
    """The runbook's blocks; as many as the test does something between."""
    found = guide_runbooks()[name]
    assert len(found) == count, (
        f"runbook {name} has {len(found)} block(s) in docs/operator-guide.md; this test "
        f"expects {count} (what the operator does between them is done here)")
    return found


def servers(directory, host):
    out = run("sdcadm", "server", "ls", "-j", env=env_of(directory, host)).stdout
    return {s["hostname"]: s for s in json.loads(out)}


def instances(directory, host):
    return json.loads(run("sdcadm", "insts", "-j", env=env_of(directory, host)).stdout)


def members(directory, host):
    """The etcd cluster's members, as etcd itself lists them."""
    return sorted(m["name"] for m in
                  cluster_members([load_state(directory).etcd_endpoint(host)]))


def answers(url):
    return requests.get(f"{url}/ping", timeout=3).status_code == 200


def placement(directory, host, services=None):
    """{service: sorted hostnames} of every instance (of ``services``), each
    one answering at its address."""
    where = {}
    for inst in instances(directory, host):
        if services and inst["service"] not in services:
            continue
        wait_for(lambda: answers(inst["url"]), 30, f"{inst['alias']} answering at {inst['url']}")
        where.setdefault(inst["service"], []).append(inst["hostname"])
    return {service: sorted(hosts) for service, hosts in where.items()}


def sapi_url(directory, host):
    return next(i["url"] for i in instances(directory, host) if i["service"] == "sapi")


def write_canary(directory, host):
    key, body = f"runbook-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex.encode()
    put = requests.put(f"{sapi_url(directory, host)}/data/{key}", data=body, timeout=5)
    assert put.status_code == 201, put.text
    return key, body


def read_canary(directory, host, canary):
    key, body = canary
    got = requests.get(f"{sapi_url(directory, host)}/data/{key}", timeout=5)
    assert got.status_code == 200 and got.content == body, (got.status_code, got.content)


def status_ok(directory, host):
    done = run("sdcadm", "status", "-j", env=env_of(directory, host), check=False)
    return done.returncode == 0 and json.loads(done.stdout)["ok"] is True


def test_build_headnodes_ha_status_and_decommission(tmp_path):
    """One DC grown the way the guide says: a new server set up, a
    secondary headnode, HA peers, status read, then hn0 decommissioned."""
    with lab_factory(tmp_path) as up:
        lab = up("--headnodes", "2", "--computenodes", "2", "--unregistered", "1",
                 "--services", "sapi," + ",".join(HA), "--heartbeat-interval", "0.5")

        # Building a DC: cn1's agent registered it; the runbook sets it up.
        assert servers(lab, "hn0")["cn1"]["flags"] == "-----"
        [build] = blocks_of("build", 1)
        run_block(lab, build)
        assert servers(lab, "hn0")["cn1"]["flags"] == "S----"

        # Setting up secondary headnodes: cn0 a headnode, its etcd member in the cluster.
        [headnodes] = blocks_of("headnodes", 1)
        run_block(lab, headnodes)
        assert servers(lab, "hn0")["cn0"]["flags"] == "SH---"
        assert members(lab, "hn0") == ["cn0", "hn0", "hn1"]

        # Making services HA: three peers of each on the three headnodes, answering.
        [ha] = blocks_of("ha", 1)
        run_block(lab, ha)
        where = placement(lab, "hn0")
        assert {s: where[s] for s in HA} == {s: ["cn0", "hn0", "hn1"] for s in HA}, where

        # Reading status: its fix applied, it exits 0.
        [status] = blocks_of("status", 1)
        run_block(lab, status)
        assert status_ok(lab, "hn1")

        # Decommissioning hn0: what it ran goes to cn1 (sapi with its data),
        # hn0 is powered off, then deleted with its etcd member.
        canary = write_canary(lab, "hn1")
        moved, deleted = blocks_of("decommission", 2)
        run_block(lab, moved)
        assert not [i for i in instances(lab, "hn1") if i["hostname"] == "hn0"]
        run("sdcadm", "lab", "power-off", "--dir", str(lab), "hn0")
        wait_for(lambda: servers(lab, "hn1")["hn0"]["status"] == "unreachable", 30,
                 "hn0 read unreachable once powered off")
        run_block(lab, deleted)
        listed = servers(lab, "hn1")
        assert sorted(listed) == ["cn0", "cn1", "hn1"]
        assert all(s["flags"].startswith("SH") for s in listed.values()), listed
        assert members(lab, "hn1") == ["cn0", "cn1", "hn1"]
        where = placement(lab, "hn1")
        assert where == {"sapi": ["cn1"], **{s: ["cn0", "cn1", "hn1"] for s in HA}}, where
        read_canary(lab, "hn1", canary)
        assert status_ok(lab, "hn1")


def test_lost_headnode_restored_then_healed(tmp_path):
    with lab_factory(tmp_path) as up:
        lab = up("--headnodes", "3", "--computenodes", "1",
                 "--services", "sapi," + ",".join(HA), "--heartbeat-interval", "0.5")
        canary = write_canary(lab, "hn1")
        run("sdcadm", "service", "sync-restore-data", env=env_of(lab, "hn1"))
        run("sdcadm", "lab", "kill", "--dir", str(lab), "hn0")     # power and disk gone

        restore, heal = blocks_of("lost-headnode", 2)
        run_block(lab, restore)
        assert servers(lab, "hn1")["hn0"]["flags"].endswith("F")
        assert placement(lab, "hn1", ["sapi"]) == {"sapi": ["hn1"]}
        read_canary(lab, "hn1", canary)

        run_block(lab, heal)
        listed = servers(lab, "hn1")
        assert sorted(listed) == ["cn0", "hn1", "hn2"] and listed["cn0"]["flags"] == "SH---"
        assert members(lab, "hn1") == ["cn0", "hn1", "hn2"]
        where = placement(lab, "hn1")
        assert where == {"sapi": ["hn1"], **{s: ["cn0", "hn1", "hn2"] for s in HA}}, where
        read_canary(lab, "hn1", canary)
        assert status_ok(lab, "hn2")


def check_lost_quorum_runbook(lab):
    """The lost-quorum runbook on a running lab of three headnodes (hn0..hn2)
    running sapi: hn0 and hn1 lost, the runbook run on hn2. Called by
    tests/integration/test_store_recover.py, whose lab it is."""
    canary = write_canary(lab, "hn2")
    run("sdcadm", "service", "sync-restore-data", env=env_of(lab, "hn2"))
    for host in ("hn0", "hn1"):
        run("sdcadm", "lab", "kill", "--dir", str(lab), host)
    state = load_state(lab)
    # hn2's member notices it lost its quorum after an election timeout.
    wait_for(lambda: not etcd.healthy(state, "hn2"), 30, "hn2's member losing its quorum")

    [recover] = blocks_of("lost-quorum", 1)
    run_block(lab, recover)
    assert etcd.healthy(state, "hn2") and members(lab, "hn2") == ["hn2"]
    assert sorted(servers(lab, "hn2")) == ["hn2"]
    assert placement(lab, "hn2") == {"sapi": ["hn2"]}
    read_canary(lab, "hn2", canary)

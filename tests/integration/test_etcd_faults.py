"""Faults of the store's own machinery, on the share-nothing lab (3 headnodes,
one etcd member each): a member killed in the middle of a migrate, an agent
killed while it holds its heartbeat lease, two operators at once. Each
promise is checked from outside: processes, the workloads' own answers, the
CLI's exit status."""

import json
import os
import signal

import pytest
import requests

from sdcadm.lab import etcd as lab_etcd
from sdcadm.lab import procs
from sdcadm.lab.state import load_state
from tests.conftest import needs_sshd, wait_for
from tests.integration.test_restore_migrate import (  # noqa: F401 (new_lab: a fixture)
    Cli, check_canaries, new_lab, write_canaries)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.etcd, needs_sshd]


def leader(lab):
    """The hostname of the etcd member that leads the lab's cluster now."""
    state = load_state(lab.dir)
    ids = {}
    for server in state.headnodes:
        try:
            doc = requests.post(f"http://{state.etcd_endpoint(server['hostname'])}"
                                "/v3/maintenance/status", json={}, timeout=2).json()
        except (requests.RequestException, ValueError):
            continue
        ids[doc["header"]["member_id"]] = (server["hostname"], doc.get("leader"))
    leaders = {lead for _, lead in ids.values()}
    assert len(leaders) == 1, f"members disagree on the leader: {ids}"
    return ids[leaders.pop()][0]


def kill_member(lab, hostname):
    state = load_state(lab.dir)
    pid = lab_etcd.member_pid(state, hostname)
    assert pid, f"{hostname}'s etcd member is not running"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: lab_etcd.member_pid(state, hostname) is None, 10,
             f"{hostname}'s etcd member gone")


def sapi(lab):
    found = [i for i in lab.insts().values() if i["service"] == "sapi"]
    assert len(found) == 1, found
    return found[0]


def test_a_member_killed_mid_migrate_the_migrate_completes_and_loses_nothing(new_lab):
    lab = new_lab(headnodes=3)
    canaries = write_canaries(lab, "before")
    cli = Cli(("service", "migrate", "hn0", "hn1", "sapi", "-y", "-j"), lab.env("hn1"))
    cli.wait_line(r"sapi0: syncing its dataset")
    victim = leader(lab)  # the worst one: every write waits for a new election
    kill_member(lab, victim)
    rc, out, err = cli.finish()
    assert rc == 0, err
    moved = sapi(lab)
    assert moved["hostname"] == "hn1" and moved["state"] == "running"
    check_canaries(lab, canaries)  # by service: sapi's from its new instance
    print(f"killed {victim}'s member (the leader) mid-migrate:", json.loads(out).get("ok", out[:200]))


def test_an_agent_killed_with_its_lease_makes_its_server_unreachable_and_nothing_else(new_lab):
    lab = new_lab(headnodes=3)
    before = {a: (i["hostname"], i["generation"]) for a, i in lab.insts().items()}
    state = load_state(lab.dir)
    pid = procs.read_pid(state.agent_pidfile("hn2"))
    assert pid and procs.alive(pid)
    os.kill(pid, signal.SIGKILL)
    statuses = []

    def hn2_unreachable():
        now = {h: s["status"] for h, s in lab.servers().items()}
        statuses.append(now)
        return now["hn2"] == "unreachable"

    wait_for(hn2_unreachable, 30, "hn2 unreachable once its heartbeat lease ran out",
             interval=0.2)
    # Nothing else: every other server ran throughout, and no instance moved.
    assert all(s[h] == "running" for s in statuses for h in ("hn0", "hn1")), statuses
    after = {a: (i["hostname"], i["generation"]) for a, i in lab.insts().items()}
    assert after == before
    assert lab.servers()["hn2"]["status"] == "unreachable"


def test_two_operators_at_once_never_both_act(new_lab):
    """Two headnodes migrate the same instance to two places at the same time:
    the DC lock lets one act; the other is refused (it does not wait:
    --lock-timeout 0) or, if it ran after, finds nothing left to move."""
    lab = new_lab(headnodes=3)
    canaries = write_canaries(lab, "before")
    clis = {target: Cli(("service", "migrate", "hn0", target, "sapi", "-y", "-j",
                         "--lock-timeout", "0"), lab.env(target))
            for target in ("hn1", "hn2")}
    results = {target: cli.finish() for target, cli in clis.items()}
    acted = [t for t, (rc, _, _) in results.items() if rc == 0]
    assert len(acted) == 1, {t: (rc, err[-400:]) for t, (rc, _, err) in results.items()}
    other = next(t for t in results if t not in acted)
    _, _, err = results[other]
    assert "lock" in err or "sapi" in err, err
    moved = sapi(lab)
    assert moved["hostname"] == acted[0] and moved["state"] == "running"
    check_canaries(lab, canaries)

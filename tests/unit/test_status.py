"""`sdcadm status` decided from plain facts (sdcadm.status.dc_status)."""

from dataclasses import replace

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.model import Instance, Network, RestoreStatus, Server, Task
from sdcadm.status import StatusFacts, copy_state, dc_status

NOW = 10_000.0
HN = [f"0000000{n}-0000-4000-8000-000000000000" for n in range(3)]
CN = "0000000c-0000-4000-8000-000000000000"


def server(n, uuid, headnode=True, **kw):
    return Server(uuid=uuid, hostname=n, admin_ip="10.0.0.1", headnode=headnode,
                  last_heartbeat=NOW - 1, **kw)


def inst(alias, service, server_uuid, n):
    return Instance(uuid=f"1000000{n}-0000-4000-8000-000000000000", alias=alias,
                    service=service, server_uuid=server_uuid, image="i", admin_ip="10.0.0.9")


@pytest.fixture
def facts():
    servers = [server("hn0", HN[0]), server("hn1", HN[1]), server("hn2", HN[2]),
               server("cn0", CN, headnode=False)]
    instances = [inst(f"binder{k}", "binder", HN[k], k) for k in range(3)]
    instances.append(inst("sapi0", "sapi", HN[0], 5))
    copies = [RestoreStatus(receiver=h, service="sapi", instance=instances[3].uuid,
                            alias="sapi0", last_success=NOW - 30, last_attempt=NOW - 30)
              for h in HN[1:]]
    return StatusFacts(
        servers=servers, instances=instances, specs=load_catalog().services,
        restore_status=copies, network=Network(name="admin", cidr="10.0.0.0/24"),
        tasks=[], health={i.uuid: None for i in instances}, now=NOW, heartbeat_timeout=15,
        rpo_target=600, store_backend="etcd")


def problems(report, section):
    return [p["problem"] for p in report["sections"][section]["problems"]]


def test_a_healthy_dc_is_ok(facts):
    report = dc_status(facts)
    assert report["ok"], [p for s in report["sections"].values() for p in s["problems"]]
    copies = report["sections"]["restore_data"]["copies"]
    assert [(c["headnode"], c["state"]) for c in copies] == [("hn1", "OK"), ("hn2", "OK")]


def test_each_problem_is_named_with_its_fix(facts):
    facts = replace(
        facts,
        servers=[server("hn0", HN[0]), server("hn1", HN[1]),
                 replace(server("hn2", HN[2]), last_heartbeat=NOW - 100),
                 server("cn0", CN, headnode=False, fenced=True)],
        instances=facts.instances[1:],  # binder0 gone: two HA peers left
        restore_status=[replace(facts.restore_status[0], last_success=NOW - 700),
                        replace(facts.restore_status[1], status="failed",
                                error="rsync exited 12")],
        health={facts.instances[3].uuid: "connection refused"},
        tasks=[Task(uuid="t2", name="service-restore", state="failed",
                    steps=[{"name": "fence hn0", "state": "failed"}], error="fence failed"),
               Task(uuid="t1", name="service-restore", state="succeeded"),
               Task(uuid="t0", name="service-migrate", state="failed", error="old")],
        store_backend="sqlite")
    report = dc_status(facts)
    assert not report["ok"]
    assert any("HA service binder runs on 2 distinct headnode(s)" in p
               for p in problems(report, "setup"))
    assert any("one sqlite file for 4 servers" in p for p in problems(report, "setup"))
    assert problems(report, "servers") == ["cn0 is fenced: it runs nothing",
                                           "hn2 is unreachable (last heartbeat 100s ago)"]
    assert problems(report, "restore_data") == [
        "sapi0 (sapi) on hn1: STALE (last good copy 700s old (target 600s))",
        "sapi0 (sapi) on hn2: FAILED (rsync exited 12)"]
    assert problems(report, "instances") == ["sapi0 (sapi) is not healthy: connection refused"]
    # Only the latest run of each procedure counts: migrate's old failure too,
    # since nothing ran it again.
    assert problems(report, "tasks") == [
        "the last service-migrate failed: old",
        "the last service-restore failed at step 'fence hn0': fence failed"]
    for section in report["sections"].values():
        assert all(p["fix"] for p in section["problems"])


def test_a_missing_copy_and_few_headnodes(facts):
    facts = replace(facts, servers=facts.servers[:2], restore_status=[],
                    instances=[facts.instances[3]])
    report = dc_status(facts)
    assert problems(report, "restore_data") == ["sapi0 (sapi) on hn1: MISSING (no copy yet)"]
    assert problems(report, "setup")[0].startswith("2 headnode(s) (hn0, hn1)")


def test_a_full_admin_network_is_a_problem(facts):
    full = Network(name="admin", cidr="10.0.0.0/30", allocations={"10.0.0.1": "x",
                                                                    "10.0.0.2": "y"})
    report = dc_status(replace(facts, network=full))
    assert problems(report, "admin_network") == [
        "0 free admin address(es) in 10.0.0.0/30, fewer than the 1 a restore of every "
        "single-instance service may need"]
    assert problems(dc_status(replace(facts, network=None)), "admin_network")


@pytest.mark.parametrize("row, want", [
    (None, ("MISSING", None)),
    (RestoreStatus(receiver="r", service="s", instance="i", last_success=None,
                   status="ok"), ("MISSING", None)),
    (RestoreStatus(receiver="r", service="s", instance="i", last_success=NOW - 5),
     ("OK", 5.0)),
    (RestoreStatus(receiver="r", service="s", instance="i", last_success=NOW - 601),
     ("STALE", 601.0)),
    (RestoreStatus(receiver="r", service="s", instance="i", last_success=NOW - 5,
                   status="diverged", error="replica diverged"), ("FAILED", 5.0)),
    (RestoreStatus(receiver="r", service="s", instance="i", last_success=NOW - 5,
                   status="unreachable", error="source hn0 is unreachable"), ("OK", 5.0)),
    (RestoreStatus(receiver="r", service="s", instance="i", last_success=NOW - 700,
                   status="unreachable", error="source hn0 is unreachable"), ("STALE", 700.0)),
])
def test_copy_state(row, want):
    assert copy_state(row, NOW, 600)[:2] == want


def member(name, ip, reachable=True):
    return {"name": name, "peer_urls": [f"http://{ip}:2380"], "reachable": reachable}


def test_the_stores_members_are_one_per_headnode_each_answering(facts):
    heads = [replace(server(f"hn{k}", HN[k]), admin_ip=f"10.0.0.{k + 1}") for k in range(3)]
    facts = replace(facts, servers=heads + [server("cn0", CN, headnode=False)],
                    store_members=[member("hn0", "10.0.0.1"), member("hn1", "10.0.0.2"),
                                   member("hn2", "10.0.0.3")])
    report = dc_status(facts)
    assert report["ok"], problems(report, "setup")
    assert [m["headnode"] for m in report["sections"]["setup"]["store_members"]] == \
        ["hn0", "hn1", "hn2"]

    # hn0's member down, a deleted server's member left behind, hn2 without one
    # (found by its address though renamed: no problem for hn1's "etcd-b")
    facts = replace(facts, store_members=[member("hn0", "10.0.0.1", reachable=False),
                                          member("etcd-b", "10.0.0.2"),
                                          member("old", "10.0.0.77")])
    found = dc_status(facts)
    assert problems(found, "setup") == [
        "the store's etcd member hn0 does not answer: one more loss and the store may lose "
        "its quorum",
        "the store's etcd member old is on no headnode of the DC: it counts against the quorum",
        "headnode hn2 runs no etcd member of the store"]
    fixes = [p["fix"] for p in found["sections"]["setup"]["problems"]]
    assert "sdcadm server delete hn0" in fixes[0] and "etcdctl member remove" in fixes[1]

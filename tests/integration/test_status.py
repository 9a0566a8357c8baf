"""`sdcadm status` on a real lab: exit 0 when the DC is whole, and the
problem named (with its fix) when a headnode is lost: its server
unreachable, its instances unhealthy, and the copies of its services on the
other headnodes going stale."""

import json

import pytest

from tests.conftest import env_of, needs_sshd, run, running_lab, wait_for

pytestmark = [pytest.mark.integration, needs_sshd]


def status(directory, host="hn1", **env):
    result = run("sdcadm", "status", "-j", env=dict(env_of(directory, host), **env), check=False)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert (result.returncode == 0) == report["ok"]
    return report


def problems(report):
    return [p["problem"] for s in report["sections"].values() for p in s["problems"]]


def test_status_is_ok_then_names_a_lost_headnode(tmp_path):
    directory = tmp_path / "dc"
    with running_lab(directory, "--headnodes", "3", "--computenodes", "0", "--services",
                     "sapi,binder", "--heartbeat-interval", "0.4"):
        run("sdcadm", "service", "sync-restore-data", env=env_of(directory, "hn1"))
        report = status(directory)
        assert report["ok"], problems(report)
        copies = report["sections"]["restore_data"]["copies"]
        assert {(c["instance"], c["headnode"], c["state"]) for c in copies} == {
            ("sapi0", "hn1", "OK"), ("sapi0", "hn2", "OK")}
        assert report["sections"]["setup"]["ha_services"]["binder"]["headnodes"] == [
            "hn0", "hn1", "hn2"]
        assert sorted((m["headnode"], m["reachable"])
                      for m in report["sections"]["setup"]["store_members"]) == [
            ("hn0", True), ("hn1", True), ("hn2", True)]

        run("sdcadm", "lab", "kill", "hn0", "--dir", str(directory))
        # The operator's RPO target here is 2 s (restore.max_data_age): the
        # copies of sapi0 go stale within seconds of their source's loss.
        fast = {"SDCADM_RESTORE_MAX_DATA_AGE": "2"}
        # On etcd hn0 reads unreachable once etcd ended its heartbeat lease (a
        # new leader, if hn0's member led, extends every lease by its TTL first).
        def stale_and_gone():
            found = problems(status(directory, **fast))
            return (any("STALE" in p for p in found)
                    and any(p.startswith("hn0 is unreachable") for p in found))

        wait_for(stale_and_gone, 60, "sapi0's copies reported stale and hn0 unreachable")
        found = problems(status(directory, **fast))
        assert any(p.startswith("hn0 is unreachable") for p in found), found
        assert any(p.startswith("sapi0 (sapi) is not healthy") for p in found), found
        assert any(p.startswith("sapi0 (sapi) on hn1: STALE") for p in found), found
        assert any(p.startswith("binder0 (binder) is not healthy") for p in found), found
        assert any(p.startswith("the store's etcd member hn0 does not answer")
                   for p in found), found

"""`sdcadm lab drill` end to end, through the installed command: the whole
disaster-recovery rehearsal on a small lab, twice on the same directory (the
second run rebuilds the lab the first one restored, and passes again)."""

import json

import pytest

from sdcadm.lab import procs
from tests.conftest import needs_sshd, random_net, run

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_sshd]

SERVICES = "sapi,imgapi,vmapi,binder"   # sapi, imgapi, vmapi on hn0; binder HA


def drill(directory, net, *more, computenodes=0):
    # Three headnodes: on etcd the store keeps its quorum with hn0's member lost.
    done = run("sdcadm", "lab", "drill", "-j", "--headnodes", "3",
               "--computenodes", str(computenodes),
               "--services", SERVICES, "--dir", str(directory), "--net", net, "--timeout", "90",
               *more)
    result = json.loads(done.stdout)
    print(f"drill: RTO {result['rto_s']:.2f}s (from the kill {result['rto_from_kill_s']:.2f}s), "
          f"RPO {result['rpo_s']:.2f}s, canaries {result['canaries_verified']}/"
          f"{result['canaries_written_before_sync']}, lost after the last sync "
          f"{result['canaries_lost_after_last_sync']}/{result['canaries_written_after_sync']}")
    return result


def check(result):
    assert result["ok"] is True, result["problems"]
    assert result["problems"] == []
    assert result["services_restored"] == 3
    assert sorted(r["service"] for r in result["services"].values()) == ["imgapi", "sapi", "vmapi"]
    assert isinstance(result["rto_s"], float) and result["rto_s"] > 0
    assert isinstance(result["rpo_s"], float) and result["rpo_s"] >= 0
    assert result["canaries_written_before_sync"] > 0
    assert result["canaries_verified"] == result["canaries_written_before_sync"]
    lost = result["canaries_lost_after_last_sync"]
    assert isinstance(lost, int) and 0 <= lost <= result["canaries_written_after_sync"]
    assert result["fencing_verified"] is True
    assert result["fencing"]["flag_f"] and result["fencing"]["runs_none_of_moved"]
    assert (result["dead"], result["restored_on"]) == ("hn0", "hn1")
    assert result["store_backend"] == "etcd"
    assert result["dead_member_gone"] is True and result["dead_disk_gone"] is True


def test_drill_passes_and_runs_again_on_the_same_lab(tmp_path):
    directory, net = tmp_path / "drill", random_net()
    try:
        first = drill(directory, net)
        check(first)
        servers = json.loads((directory / "lab.json").read_text())["servers"]

        # Again, healing afterwards (with a compute node to make a headnode).
        second = drill(directory, net, "--heal", computenodes=1)
        check(second)
        # The restored lab was rebuilt (new servers), not drilled again as it was.
        rebuilt = json.loads((directory / "lab.json").read_text())["servers"]
        assert {s["uuid"] for s in rebuilt}.isdisjoint({s["uuid"] for s in servers})
        check_heal(second["heal"])
    finally:
        run("sdcadm", "lab", "down", "--dir", str(directory), check=False)
        assert procs.lab_processes(directory) == [], "the drill left processes behind"


def check_heal(heal):
    """Back to three headnodes: hn0 deleted with its etcd member, cn0 a
    headnode running binder's third peer, `sdcadm status` exit 0."""
    print("heal: " + ", ".join(f"{s['step']} {s['s']:.1f}s" for s in heal["steps"]))
    assert heal["problems"] == [] and all(s["ok"] for s in heal["steps"]), heal["steps"]
    assert [s["step"] for s in heal["steps"]][1:4] == [
        "sdcadm server delete hn0 --force", "sdcadm server headnode-setup cn0",
        "sdcadm post-setup ha-binder"]
    assert heal["ha"] == {"binder": ["cn0", "hn1", "hn2"]}
    assert heal["members"] == ["cn0", "hn1", "hn2"]
    assert heal["status_ok"] is True


def test_drill_on_etcd_refuses_two_headnodes(tmp_path):
    """Losing one member of two loses the store's quorum: refused before
    anything is built."""
    done = run("sdcadm", "lab", "drill", "--headnodes", "2", "--dir", str(tmp_path / "d"),
               "--net", random_net(), check=False)
    assert done.returncode == 1 and "at least 3 headnodes" in done.stderr
    assert "--headnodes 3" in done.stderr
    assert not (tmp_path / "d").exists()

"""Pure replication decisions (sdcadm.datasets.plan) on plain data."""

import pytest

from sdcadm.datasets import plan
from sdcadm.transport.zfs import Snapshot
from sdcadm.errors import ReplicaDiverged

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def snap(name, guid, txg, creation=None, userrefs=0, dataset="zones/u/data"):
    return Snapshot(name=f"{dataset}@{name}", guid=str(guid), createtxg=txg,
                    creation=creation if creation is not None else T0 + txg, userrefs=userrefs)


# -- names ---------------------------------------------------------------------

def test_copy_and_snapshot_names():
    assert plan.timestamp(T0) == "20260101T000000Z"
    assert plan.copy_name(T0) == "20260101T000000Z"
    assert plan.copy_name(T0, ["20260101T000000Z"]) == "20260101T000000Z-2"
    assert plan.copy_name(T0, ["20260101T000000Z", "20260101T000000Z-2"]) == "20260101T000000Z-3"
    assert plan.sync_snapshot_name(T0 + 61) == "sdcadm-sync-20260101T000101Z"
    assert plan.sync_snapshot_name(T0, ["sdcadm-sync-20260101T000000Z", "other"]) == \
        "sdcadm-sync-20260101T000000Z-2"


def test_names_sort_in_time_order():
    names = [plan.copy_name(T0), plan.copy_name(T0, [plan.copy_name(T0)]), plan.copy_name(T0 + 1)]
    assert sorted(names) == names


def test_stamp_time_round_trips_and_rejects_others():
    assert plan.stamp_time("20260101T000000Z") == T0
    assert plan.stamp_time("20260101T000000Z-7") == T0
    for bad in (".tmp-20260101T000000Z", "current", "20260101", "../x", ""):
        assert plan.stamp_time(bad) is None


def test_is_sync_snapshot():
    assert plan.is_sync_snapshot("sdcadm-sync-20260101T000000Z")
    assert plan.is_sync_snapshot("sdcadm-sync-20260101T000000Z-2")
    assert not plan.is_sync_snapshot("sdcadm-sync-yesterday")
    assert not plan.is_sync_snapshot("manual")


def test_hold_tag_and_property():
    uuid = "a1b2c3d4-0000-4000-8000-000000000001"
    assert plan.hold_tag(uuid) == f"sdcadm-{uuid}"
    assert plan.hold_property(uuid) == f"sdcadm:hold:{uuid}"
    for bad in ("", "a b", "../x", "-x", "x;y"):
        with pytest.raises(ValueError):
            plan.hold_tag(bad)


def test_safe_component():
    assert plan.safe_component("20260101T000000Z") == "20260101T000000Z"
    for bad in ("..", ".", "a/b", "", ".tmp-x", "a\0b", None):
        with pytest.raises(ValueError):
            plan.safe_component(bad)


# -- newest common snapshot ------------------------------------------------------

def test_newest_common_by_guid_not_name():
    source = [snap("a", 1, 10), snap("b", 2, 20), snap("c", 3, 30)]
    replica = [snap("renamed-a", 1, 5, dataset="pool/r"), snap("renamed-b", 2, 6, dataset="pool/r")]
    src, rep = plan.newest_common(source, replica)
    assert src.name == "zones/u/data@b" and rep.name == "pool/r@renamed-b"


def test_newest_common_none():
    assert plan.newest_common([snap("a", 1, 1)], [snap("a", 9, 1)]) is None
    assert plan.newest_common([], []) is None


def test_same_name_different_guid_is_not_common():
    source = [snap("x", 1, 1)]
    replica = [snap("x", 2, 1)]
    assert plan.newest_common(source, replica) is None


# -- what to send ----------------------------------------------------------------

def test_plan_full_when_no_replica_or_reseed():
    source = [snap("a", 1, 1)]
    assert plan.plan_zfs_sync(source, None) == plan.SyncPlan(full=True, reason="no replica yet")
    assert plan.plan_zfs_sync(source, [snap("a", 1, 1)], reseed=True).full
    assert plan.plan_zfs_sync(source, []).full


def test_plan_incremental_from_newest_common():
    source = [snap("a", 1, 1), snap("b", 2, 2), snap("c", 3, 3)]
    replica = [snap("a", 1, 100, dataset="r"), snap("b", 2, 200, dataset="r")]
    p = plan.plan_zfs_sync(source, replica)
    assert not p.full and p.base == "zones/u/data@b" and p.base_guid == "2"


def test_plan_no_common_snapshot_is_diverged_with_reseed_hint():
    source = [snap("new", 7, 50)]
    replica = [snap("old", 1, 1, dataset="r")]
    with pytest.raises(ReplicaDiverged) as e:
        plan.plan_zfs_sync(source, replica)
    assert "no common snapshot" in str(e.value) and "--reseed" in str(e.value)


def test_plan_replica_newer_than_common_is_diverged():
    source = [snap("a", 1, 1), snap("x", 5, 9)]
    replica = [snap("a", 1, 1, dataset="r"), snap("b", 2, 2, dataset="r")]  # b: gone from the source
    with pytest.raises(ReplicaDiverged, match="newer than the newest common.*b"):
        plan.plan_zfs_sync(source, replica)
    assert plan.plan_zfs_sync(source, replica, reseed=True).full


# -- source snapshots to destroy -------------------------------------------------

def sync_snap(minute, guid, userrefs=0):
    name = plan.sync_snapshot_name(T0 + 60 * minute)
    return Snapshot(f"zones/u/data@{name}", str(guid), createtxg=minute + 1,
                    creation=T0 + 60 * minute, userrefs=userrefs)


def test_destroy_unheld_except_newest():
    snaps = [sync_snap(0, 1), sync_snap(1, 2, userrefs=1), sync_snap(2, 3), sync_snap(3, 4)]
    doomed = plan.source_snapshots_to_destroy(snaps)
    assert [s.guid for s in doomed] == ["1", "3"]


def test_destroy_never_touches_other_snapshots():
    manual = Snapshot("zones/u/data@before-upgrade", "9", createtxg=0, creation=T0, userrefs=0)
    snaps = [manual, sync_snap(1, 2), sync_snap(2, 3)]
    assert [s.guid for s in plan.source_snapshots_to_destroy(snaps)] == ["2"]


def test_destroy_grace_spares_recent_unheld_snapshots():
    # another receiver may have just made snapshot 2 and not hold it yet
    snaps = [sync_snap(0, 1), sync_snap(10, 2), sync_snap(11, 3, userrefs=1)]
    doomed = plan.source_snapshots_to_destroy(snaps, grace=120)
    assert [s.guid for s in doomed] == ["1"]


def test_destroy_nothing_when_single_or_none():
    assert plan.source_snapshots_to_destroy([]) == []
    assert plan.source_snapshots_to_destroy([sync_snap(0, 1)]) == []


def test_several_receivers_keep_their_bases():
    # A holds 1 (its base), B holds 2; A's new 3 is held by A: nothing of a base goes
    snaps = [sync_snap(0, 1, userrefs=1), sync_snap(1, 2, userrefs=1), sync_snap(2, 3, userrefs=1)]
    assert plan.source_snapshots_to_destroy(snaps) == []


def test_holds_to_release():
    snaps = [sync_snap(0, 1, userrefs=2), sync_snap(1, 2), sync_snap(2, 3, userrefs=1)]
    keep = snaps[2].name
    assert [s.guid for s in plan.holds_to_release(snaps, keep)] == ["1"]


# -- copies to prune -----------------------------------------------------------

def test_prune_keeps_newest():
    names = ["a", "b", "c", "d"]
    assert plan.copies_to_prune(names, 2) == ["a", "b"]
    assert plan.copies_to_prune(names, 10) == []
    assert plan.copies_to_prune(names, 0) == ["a", "b", "c"]  # the newest always stays
    assert plan.copies_to_prune([], 3) == []


def test_prune_protects():
    assert plan.copies_to_prune(["a", "b", "c", "d"], 1, protect={"b"}) == ["a", "c"]

"""The decisions of `service restore` and `service migrate`, made by pure
planners over plain data: every test states the facts and asserts the exact
decision (no store, no agent, no clock)."""

from dataclasses import replace

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.errors import NotFound
from sdcadm.model import Instance, Server
from sdcadm.procedures.planning import (
    CopyFacts,
    InstanceMove,
    InstanceToRestore,
    MigrateFacts,
    NotViable,
    RestoreFacts,
    RestoreRequest,
    addresses_to_take_over,
    check_migrate_servers,
    check_restorable_servers,
    check_restore_host,
    copy_problem,
    dead_after,
    heartbeat_silent,
    ip_owned_by,
    is_dead,
    level_targets,
    migrate_method,
    migrate_summary,
    migrated_instance,
    new_uuid_for,
    next_free_alias,
    plan_migrate,
    plan_migration,
    plan_restore,
    plan_restore_run,
    restore_levels,
    restore_scope,
    restore_summary,
    restored_params,
    restored_result,
    select_services,
)

IMG = "99999999-9999-4999-8999-999999999999"
NOW = 1000.0
TIMEOUT = 10.0   # heartbeat timeout: dead past NOW - dead_after(10) = NOW - 17.25
HN0 = Server("00000000-0000-4000-8000-000000000000", "hn0", "127.0.0.1", headnode=True,
             last_heartbeat=NOW - 100, agent_port=5309)          # silent past the margin
HN1 = Server("11111111-1111-4111-8111-111111111111", "hn1", "127.0.0.2", headnode=True,
             last_heartbeat=NOW - 1, agent_port=5309)            # this server, running
HN2 = Server("22222222-2222-4222-8222-222222222222", "hn2", "127.0.0.3", headnode=True,
             last_heartbeat=NOW - 2, agent_port=5309)            # running
CN0 = Server("33333333-3333-4333-8333-333333333333", "cn0", "127.0.0.4",
             last_heartbeat=NOW - 1, agent_port=5309)            # a compute node, running
CAT = load_catalog()
STATEFUL = {"sapi", "imgapi", "amonredis", "mahi", "binder", "manatee", "moray"}


def inst(n, service, server, alias=None, **kw):
    kw.setdefault("delegate_dataset", service in STATEFUL)
    return Instance(f"aaaaaaaa-aaaa-4aaa-8aaa-{n:012d}", alias or f"{service}0", service,
                    server.uuid, IMG, f"127.0.1.{n}", port=8080, **kw)


def copy(as_of=NOW - 42, snapshot="sync-1", has_dataset=True, status="ok", **kw):
    return CopyFacts(as_of=as_of, status=status, snapshot=snapshot if has_dataset else None,
                     has_dataset=has_dataset, **kw)


def facts(instances, servers=(HN0, HN1, HN2), me=HN1, now=NOW):
    return RestoreFacts(me, list(servers), list(instances), now, TIMEOUT)


def request(*services, all_services=False, dead=()):
    return RestoreRequest(tuple(services), all_services, tuple(dead))


def plan_for(instances, req, copies=None, servers=(HN0, HN1, HN2)):
    """Both rounds of restore planning, with a good copy of everything by default."""
    scope = restore_scope(CAT, req, facts(instances, servers))
    if copies is None:
        copies = {i.instance.uuid: copy(has_dataset=i.instance.delegate_dataset)
                  for i in scope.items}
    return plan_restore_run(CAT, scope, copies, HN1, NOW)


# -- shared decisions -------------------------------------------------------------------------

def test_next_free_alias():
    assert next_free_alias("vmapi", {"vmapi0"}) == "vmapi1"
    assert next_free_alias("vmapi", {"vmapi1"}) == "vmapi0"
    assert next_free_alias("vmapi", {"vmapi0", "vmapi1", "vmapi10"}) == "vmapi2"
    assert next_free_alias("moray", {"morayx0", "moray"}) == "moray0"


def test_is_dead_needs_margin_or_fence():
    hn = replace(HN1, last_heartbeat=100.0)
    margin = dead_after(1.0)
    assert not is_dead(hn, now=100 + margin - 0.01, heartbeat_timeout=1.0)
    assert is_dead(hn, now=100 + margin + 0.01, heartbeat_timeout=1.0)
    assert is_dead(replace(hn, fenced=True), now=100, heartbeat_timeout=1.0)


def test_the_dead_margin_covers_lease_notice_and_kill_times_the_safety_factor():
    assert dead_after(10.0, notice=1.0, kill_grace=0.5, safety=2.0) == 23.0
    # the numbers docs/recovery.md gives: lab (lease 3 s, reconcile 0.5 s;
    # restore assumes 1 s), production defaults (15 s, 1 s)
    assert dead_after(3.0, notice=0.5) == 6.0
    assert dead_after(3.0) == 6.75
    assert dead_after(15.0, notice=1.0) == 24.75
    # never shorter than the lease plus the time to notice and kill
    for lease in (0.1, 1.0, 15.0, 600.0):
        assert dead_after(lease, 1.0, 0.5) >= lease + 1.0 + 0.5
    # the notice of the restoring side's agent configuration is used
    hn = replace(HN1, last_heartbeat=100.0)
    assert is_dead(hn, now=100 + dead_after(2.5, 0.5) + 0.01, heartbeat_timeout=2.5, notice=0.5)
    assert not is_dead(hn, now=100 + dead_after(2.5, 1.0) - 0.01, heartbeat_timeout=2.5)


def test_heartbeat_silent_has_no_margin():
    assert not heartbeat_silent(replace(HN0, last_heartbeat=NOW - TIMEOUT), NOW, TIMEOUT)
    assert heartbeat_silent(replace(HN0, last_heartbeat=NOW - TIMEOUT - 0.1), NOW, TIMEOUT)


def test_select_services():
    assert select_services(CAT, ["vmapi", "sapi"], False, []) == ["sapi", "vmapi"]
    assert select_services(CAT, [], True, {"vmapi", "binder"}) == ["binder", "vmapi"]
    with pytest.raises(NotViable, match="--all"):
        select_services(CAT, [], False, [])
    with pytest.raises(NotViable, match="not both"):
        select_services(CAT, ["sapi"], True, [])
    with pytest.raises(NotFound):
        select_services(CAT, ["nosuch"], False, [])


def test_named_services_need_not_be_present():
    assert select_services(CAT, ["sapi"], False, set()) == ["sapi"]


def test_ip_owned_by_finds_the_lowest_address_of_its_owner():
    allocations = {"10.0.0.9": "x", "10.0.0.12": "x", "10.0.0.5": "y"}
    assert ip_owned_by(allocations, "x") == "10.0.0.12"     # the lowest as text, as sorted
    assert ip_owned_by(allocations, "x", besides="10.0.0.12") == "10.0.0.9"
    assert ip_owned_by(allocations, "z") is None
    assert ip_owned_by({}, "x") is None


# -- restore: where it runs, which servers --------------------------------------------------

def test_restore_runs_on_a_headnode_only():
    check_restore_host(HN1)
    with pytest.raises(NotViable, match="cn0 is not a headnode: restore runs on a headnode"):
        check_restore_host(CN0)


def test_restorable_servers():
    servers = [replace(HN0, last_heartbeat=100), HN1]
    with pytest.raises(NotViable, match="no server is dead"):
        check_restorable_servers([], [HN1], now=NOW, heartbeat_timeout=TIMEOUT)
    assert check_restorable_servers(["hn1"], servers, now=NOW, heartbeat_timeout=TIMEOUT) == [HN1]
    with pytest.raises(NotFound, match="no server 'hn9'"):
        check_restorable_servers(["hn9"], servers, now=NOW, heartbeat_timeout=TIMEOUT)
    fenced = [replace(servers[0], fenced=True), HN1]
    assert check_restorable_servers([], fenced, now=NOW, heartbeat_timeout=TIMEOUT) == [fenced[0]]


def test_no_dead_server_lists_the_running_ones_and_suggests_dead():
    with pytest.raises(NotViable) as e:
        check_restorable_servers([], [HN1, HN2], now=NOW, heartbeat_timeout=TIMEOUT)
    assert e.value.message == ("no server is dead: every server's heartbeat is recent "
                               "(hn1, hn2 running)")
    assert "--dead SERVER" in e.value.hint


@pytest.mark.parametrize("silence", [25, 100, 100_000])   # within the margin, past it, long gone
def test_a_merely_silent_server_is_listed_and_refused_without_dead(silence):
    late = replace(HN0, last_heartbeat=NOW - silence)
    with pytest.raises(NotViable) as e:
        check_restorable_servers([], [late, HN1, replace(HN2, fenced=True)], now=NOW,
                                 heartbeat_timeout=TIMEOUT)
    assert e.value.message.startswith(
        f"not restoring from a server that is only silent: hn0 (no heartbeat for {silence}s). "
        "Silence is no proof that nothing runs there")
    assert "--dead hn0" in e.value.hint and "wait" in e.value.hint


def test_a_fenced_server_is_dead_whatever_its_heartbeat():
    fenced = replace(HN0, last_heartbeat=NOW, fenced=True)
    assert check_restorable_servers([], [fenced, HN1], now=NOW, heartbeat_timeout=TIMEOUT) == [fenced]


def test_dead_named_twice_or_by_uuid_counts_once():
    got = check_restorable_servers(["hn0", HN0.uuid, "hn0"], [HN0, HN1], NOW, TIMEOUT)
    assert got == [HN0]


# -- restore: scope ----------------------------------------------------------------------------

def test_plan_restore_skips_ha_and_orders():
    insts = [inst(1, "vmapi", HN0), inst(2, "sapi", HN0), inst(3, "binder", HN0), inst(4, "imgapi", HN1)]
    items = plan_restore(CAT, [HN0], insts, {"vmapi", "sapi", "binder", "imgapi"}, HN1.uuid)
    assert [i.service for i in items] == ["sapi", "vmapi"]
    assert not items[0].reuse_ip
    with pytest.raises(NotViable, match="surviving headnode"):
        plan_restore(CAT, [HN0], insts, {"sapi"}, HN0.uuid)


def test_dead_given_fences_and_keeps_the_old_addresses():
    insts = [inst(1, "sapi", HN0), inst(2, "vmapi", HN0)]
    scope = restore_scope(CAT, request(all_services=True, dead=["hn0"]), facts(insts))
    assert scope.dead == [HN0] and scope.to_fence == [HN0]
    assert [(i.instance.alias, i.reuse_ip) for i in scope.items] == [("sapi0", True),
                                                                    ("vmapi0", True)]


def test_dead_given_for_a_live_server_is_taken_at_its_word():
    scope = restore_scope(CAT, request("sapi", dead=["hn2"]), facts([inst(1, "sapi", HN2)]))
    assert scope.to_fence == [HN2] and [i.reuse_ip for i in scope.items] == [True]


def test_silent_unfenced_server_is_never_restored_from_without_dead():
    with pytest.raises(NotViable, match="only silent: hn0"):
        restore_scope(CAT, request(all_services=True), facts([inst(1, "sapi", HN0)]))


def test_already_fenced_server_keeps_its_addresses_without_dead():
    fenced = replace(HN0, fenced=True)
    scope = restore_scope(CAT, request(all_services=True), facts([inst(1, "sapi", fenced)],
                                                                servers=(fenced, HN1)))
    assert scope.to_fence == [] and [i.reuse_ip for i in scope.items] == [True]


def test_fenced_by_an_earlier_run_is_still_a_fence_step_when_named():
    fenced = replace(HN0, fenced=True)
    scope = restore_scope(CAT, request("sapi", dead=["hn0"]),
                          facts([inst(1, "sapi", fenced)], servers=(fenced, HN1)))
    assert scope.to_fence == [fenced]


def test_restore_refuses_to_run_on_the_dead_server():
    with pytest.raises(NotViable, match="hn1 is this server: restore runs on a surviving headnode"):
        restore_scope(CAT, request("sapi", dead=["hn1"]), facts([]))


def test_ha_services_are_not_restored_even_when_named():
    insts = [inst(1, "binder", HN0), inst(2, "manatee", HN0), inst(3, "sapi", HN0)]
    scope = restore_scope(CAT, request(all_services=True, dead=["hn0"]), facts(insts))
    assert scope.services == ["binder", "manatee", "sapi"]
    assert [i.service for i in scope.items] == ["sapi"]
    named = restore_scope(CAT, request("binder", dead=["hn0"]), facts(insts))
    assert named.items == []


def test_all_means_the_services_of_the_dead_servers_only():
    insts = [inst(1, "sapi", HN0), inst(2, "vmapi", HN2), inst(3, "assets", HN0)]
    scope = restore_scope(CAT, request(all_services=True, dead=["hn0"]), facts(insts))
    assert scope.services == ["sapi", "assets"]
    assert [i.instance.alias for i in scope.items] == ["sapi0", "assets0"]


def test_named_services_restrict_the_instances():
    insts = [inst(1, "sapi", HN0), inst(2, "assets", HN0)]
    scope = restore_scope(CAT, request("assets", dead=["hn0"]), facts(insts))
    assert [i.instance.alias for i in scope.items] == ["assets0"]


def test_unknown_service_is_refused():
    with pytest.raises(NotFound, match="unknown service 'nosuch'"):
        restore_scope(CAT, request("nosuch", dead=["hn0"]), facts([inst(1, "sapi", HN0)]))


def test_all_and_names_together_are_refused():
    with pytest.raises(NotViable, match="not both"):
        restore_scope(CAT, request("sapi", all_services=True, dead=["hn0"]),
                      facts([inst(1, "sapi", HN0)]))


def test_instances_an_earlier_run_moved_here_are_resumed_not_moved_again():
    moved = inst(1, "sapi", HN1, params={"restored_from": HN0.uuid}, generation=2)
    other = inst(2, "assets", HN1, params={"restored_from": HN2.uuid})
    scope = restore_scope(CAT, request(all_services=True, dead=["hn0"]),
                          facts([moved, other, inst(3, "vmapi", HN0)]))
    assert scope.services == ["sapi", "vmapi"]      # sapi counts: it is being restored
    assert scope.resumed == [moved] and [i.instance.alias for i in scope.items] == ["vmapi0"]


def test_resumed_instances_of_services_not_asked_for_are_left_alone():
    moved = inst(1, "sapi", HN1, params={"restored_from": HN0.uuid})
    scope = restore_scope(CAT, request("vmapi", dead=["hn0"]), facts([moved, inst(2, "vmapi", HN0)]))
    assert scope.resumed == []


# -- restore: the plan -------------------------------------------------------------------------

def test_plan_orders_targets_by_dependency_level_then_alias():
    insts = [inst(1, "imgapi", HN0), inst(2, "sapi", HN0), inst(3, "assets", HN0),
             inst(4, "sapi", HN0, alias="sapi1")]
    plan = plan_for(insts, request(all_services=True, dead=["hn0"]))
    assert plan.levels == [["sapi", "assets"], ["imgapi"]]
    assert [t.instance.alias for t in plan.targets] == ["assets0", "sapi0", "sapi1", "imgapi0"]
    assert plan.nothing_to_do is None and plan.me == HN1 and plan.to_fence == [HN0]
    assert [t.instance.alias for t in level_targets(plan, ["imgapi"])] == ["imgapi0"]


def test_restore_levels_follow_dependencies_among_restored():
    levels = restore_levels(CAT, ["vmapi", "sapi", "imgapi", "napi", "assets"])
    # moray (a dependency of all) is HA and up: sapi, napi, assets start at once
    assert levels == [["sapi", "assets", "napi"], ["imgapi"], ["vmapi"]]
    pos = {n: i for i, lvl in enumerate(levels) for n in lvl}
    for name in pos:
        for dep in CAT.get(name).depends_on:
            if dep in pos:
                assert pos[dep] < pos[name]
    assert restore_levels(CAT, []) == []


def test_services_without_dependencies_among_the_restored_come_up_together():
    assert restore_levels(CAT, ["vmapi", "assets", "amonredis"]) == [["assets", "amonredis",
                                                                      "vmapi"]]


def test_a_target_carries_its_copy_and_dead_server():
    sapi = inst(1, "sapi", HN0)
    good = copy()
    scope = restore_scope(CAT, request("sapi", dead=["hn0"]), facts([sapi]))
    plan = plan_restore_run(CAT, scope, {sapi.uuid: good}, HN1, NOW)
    assert plan.targets == [InstanceToRestore("sapi", sapi, HN0, good, True)]


def test_missing_restore_data_is_refused_listing_every_instance():
    insts = [inst(1, "sapi", HN0), inst(2, "imgapi", HN0), inst(3, "amonredis", HN0),
             inst(4, "assets", HN0), inst(5, "mahi", HN0)]
    copies = {
        insts[0].uuid: copy(as_of=None, status="failed", error="rsync died"),
        insts[1].uuid: copy(has_dataset=False),
        insts[2].uuid: CopyFacts(problem="vm-x.json is missing"),
        insts[3].uuid: copy(has_dataset=False),     # no delegate dataset: none needed
        # mahi: nothing at all
    }
    with pytest.raises(NotViable) as e:
        plan_for(insts, request(all_services=True, dead=["hn0"]), copies)
    assert e.value.message == (
        "cannot restore from this headnode's restore data:\n"
        "  - sapi0: this headnode never completed a sync of it (failed: rsync died)\n"
        "  - amonredis0: vm-x.json is missing\n"
        "  - imgapi0: no copy of its delegate dataset here\n"
        f"  - mahi0: this headnode has no restore data of instance {insts[4].uuid}")
    assert "sdcadm restore-data verify" in e.value.hint


def test_copy_problem():
    sapi = inst(1, "sapi", HN0)
    assert copy_problem(sapi, copy()) is None
    assert copy_problem(inst(2, "assets", HN0), copy(has_dataset=False)) is None
    assert copy_problem(sapi, copy(has_dataset=False)) == "no copy of its delegate dataset here"


def test_nothing_to_do_once_everything_is_restored_and_fenced():
    fenced = replace(HN0, fenced=True)
    plan = plan_for([inst(1, "binder", fenced)], request(all_services=True, dead=["hn0"]),
                    servers=(fenced, HN1))
    assert plan.nothing_to_do == "no instance of binder to restore from hn0"
    assert plan.targets == [] and plan.levels == []


def test_nothing_to_do_names_any_service_when_none_was_there():
    fenced = replace(HN0, fenced=True)
    plan = plan_for([], request(all_services=True), servers=(fenced, HN1))
    assert plan.nothing_to_do == "no instance of any service to restore from hn0"


def test_an_unfenced_server_named_dead_is_still_fenced_with_nothing_to_move():
    plan = plan_for([], request(all_services=True, dead=["hn0"]))
    assert plan.nothing_to_do is None and plan.to_fence == [HN0] and plan.targets == []


def test_resumed_instances_are_targets_already_moved():
    moved = inst(1, "sapi", HN1, params={"restored_from": HN0.uuid})
    fenced = replace(HN0, fenced=True)
    plan = plan_for([moved], request(all_services=True), servers=(fenced, HN1))
    assert plan.targets == [InstanceToRestore("sapi", moved, fenced, None, False, moved=True)]
    assert plan.levels == [["sapi"]] and plan.nothing_to_do is None


# -- restore: what the operator is shown ------------------------------------------------------

def test_summary_of_a_restore_with_fencing():
    insts = [inst(1, "sapi", HN0), inst(2, "assets", HN0)]
    plan = plan_for(insts, request(all_services=True, dead=["hn0"]))
    assert restore_summary(plan) == [
        "restore assets0 (assets) from hn0 onto hn1: no delegate dataset, keeping IP 127.0.1.2 "
        "(hn0 is fenced)",
        "restore sapi0 (sapi) from hn0 onto hn1: dataset copy sync-1 as of 42s ago, "
        "keeping IP 127.0.1.1 (hn0 is fenced)",
    ]


def test_summary_of_a_resumed_restore():
    fenced = replace(HN0, fenced=True)
    moved = inst(1, "sapi", HN1, params={"restored_from": HN0.uuid})
    plan = plan_for([moved], request("sapi", dead=["hn0"]), servers=(fenced, HN1))
    assert restore_summary(plan) == [
        "finish restoring sapi0 (sapi) on hn1: wait until healthy"]


def test_summary_ages_are_as_of_planning_not_of_reading():
    plan = plan_for([inst(1, "sapi", HN0)], request("sapi", dead=["hn0"]))
    later = replace(plan, now=NOW + 60)
    assert "as of 102s ago" in restore_summary(later)[0]


# -- restore: the steps' decisions -----------------------------------------------------------

def test_restored_params_seed_from_the_copy_and_drop_desired_state():
    old = inst(1, "sapi", HN0, params={"desired_state": "stopped", "env": {"A": "1"}})
    assert restored_params(old) == {
        "env": {"A": "1"}, "seed_from": {"instance": old.uuid, "service": "sapi"},
        "restored_from": HN0.uuid}
    assert old.params == {"desired_state": "stopped", "env": {"A": "1"}}   # not changed


def test_recovery_address_is_the_one_an_earlier_run_allocated():
    old = inst(1, "sapi", HN0)
    allocations = {old.admin_ip: old.uuid, "127.0.1.50": old.uuid, "127.0.1.60": "someone"}
    assert ip_owned_by(allocations, old.uuid, besides=old.admin_ip) == "127.0.1.50"
    assert ip_owned_by({old.admin_ip: old.uuid}, old.uuid, besides=old.admin_ip) is None


def test_addresses_to_take_over_are_those_kept_and_not_yet_moved():
    plan = plan_for([inst(1, "sapi", HN0), inst(2, "assets", HN0),
                     inst(3, "vmapi", HN1, params={"restored_from": HN0.uuid})],
                    request(all_services=True, dead=["hn0"]))
    assert addresses_to_take_over(plan, HN0.uuid) == ["http://127.0.1.2:8080/ping",
                                                      "http://127.0.1.1:8080/ping"]
    assert addresses_to_take_over(plan, HN2.uuid) == []


def test_restored_result_measures_rto_and_rpo():
    sapi = inst(1, "sapi", HN0)
    target = InstanceToRestore("sapi", sapi, HN0, copy(as_of=NOW - 42), True)
    assert restored_result(target, sapi, 1.23456, 2.5, NOW) == {
        "service": "sapi", "instance": sapi.uuid, "ip": "127.0.1.1", "from": "hn0",
        "level_s": 1.235, "rto_s": 2.5, "rpo_s": 42.0, "data_as_of": NOW - 42,
        "snapshot": "sync-1"}
    resumed = replace(target, copy=None, moved=True)
    got = restored_result(resumed, sapi, 1, 2, NOW)
    assert (got["rpo_s"], got["data_as_of"], got["snapshot"]) == (None, None, None)


# -- migrate -----------------------------------------------------------------------------------

def mfacts(instances, src=HN0, dst=HN2):
    return MigrateFacts(replace(src, last_heartbeat=NOW - 1), dst, list(instances), NOW, TIMEOUT)


def test_plan_migrate_orders_skips_and_aliases():
    src = [inst(1, "vmapi", HN0), inst(2, "sapi", HN0), inst(3, "binder", HN0),
           inst(4, "nat", HN0), inst(5, "manatee", HN0)]
    dst = [inst(6, "binder", HN1, "binder1")]
    items = plan_migrate(CAT, src, dst, src + dst, ["binder", "manatee", "sapi", "vmapi", "nat"])
    got = [(i.service, i.new_alias, i.skip_reason is not None) for i in items]
    assert got == [("binder", None, True), ("manatee", "manatee1", False), ("sapi", "sapi1", False),
                   ("vmapi", "vmapi1", False), ("nat", None, True)]
    assert items[2].stateful and not items[3].stateful


def test_migrate_refuses_the_same_server():
    with pytest.raises(NotViable, match="source and destination are the same server"):
        check_migrate_servers(HN1, HN1, NOW, TIMEOUT)


@pytest.mark.parametrize("src, dst, message", [
    (HN0, HN2, "the source hn0 is not running"),                        # silent
    (replace(HN2, fenced=True), HN1, "the source hn2 is not running"),  # fenced
    (HN1, HN0, "the destination hn0 is not running"),
    (HN1, CN0, "the destination cn0 is not a headnode"),
])
def test_migrate_needs_both_servers_up_and_a_headnode_to_receive(src, dst, message):
    with pytest.raises(NotViable, match=message):
        check_migrate_servers(src, dst, NOW, TIMEOUT)


def test_migrate_from_a_compute_node_is_fine():
    check_migrate_servers(CN0, HN1, NOW, TIMEOUT)


def test_stateless_and_stateful_moves():
    sapi, vmapi = inst(1, "sapi", HN0), inst(2, "vmapi", HN0)
    plan = plan_migration(CAT, [], True, mfacts([sapi, vmapi]))
    assert plan.moves == [
        InstanceMove("sapi", sapi, "sapi1", new_uuid_for(sapi.uuid, HN2.uuid), True, True),
        InstanceMove("vmapi", vmapi, "vmapi1", new_uuid_for(vmapi.uuid, HN2.uuid), False, True)]
    assert plan.skipped == [] and plan.nothing_to_do is None


@pytest.mark.parametrize("service, kind, stop_first, stateful", [
    ("ufds", "singleton, stateless", True, False),
    ("vmapi", "singleton, stateless", True, False),
    ("sapi", "singleton, stateful", True, True),
    ("imgapi", "singleton, stateful", True, True),
    ("binder", "HA (stateful: its peers hold the data)", False, False),
    ("moray", "HA", False, False),
    ("assets", "not a singleton, stateless", False, False),
    ("adminui", "not a singleton, stateless", False, False),
])
def test_migrate_method_per_kind(service, kind, stop_first, stateful):
    """Singletons stop first (never two at once), stateful ones with the final
    sync between stop and start; HA and non-singleton stateless services keep
    make-before-break."""
    spec = CAT.get(service)
    assert migrate_method(spec) == (stop_first, stateful), kind
    plan = plan_migration(CAT, [service], False, mfacts([inst(1, service, HN0)]))
    (move,) = plan.moves
    assert (move.stop_first, move.stateful) == (stop_first, stateful)


def test_a_stateful_service_that_is_neither_singleton_nor_ha_stops_first():
    spec = replace(CAT.get("sapi"), singleton=False)
    assert migrate_method(spec) == (True, True)
    every = {name: migrate_method(CAT.get(name)) for name in CAT.names()}
    assert {n for n, (stop, _) in every.items() if stop} == {
        n for n in CAT.names() if CAT.get(n).singleton}


def test_new_alias_is_the_next_free_one_in_the_whole_dc():
    insts = [inst(1, "sapi", HN0), inst(2, "sapi", HN1, alias="sapi1"),
             inst(3, "sapi", HN0, alias="sapi3")]
    plan = plan_migration(CAT, ["sapi"], False, mfacts(insts))
    assert [(m.old.alias, m.new_alias) for m in plan.moves] == [("sapi0", "sapi2"),
                                                                ("sapi3", "sapi4")]


def test_ha_service_is_not_doubled_on_a_destination_that_has_a_peer():
    insts = [inst(1, "binder", HN0), inst(2, "binder", HN2, alias="binder1")]
    plan = plan_migration(CAT, ["binder"], False, mfacts(insts))
    assert plan.moves == []
    assert plan.skipped == [
        "binder0: binder is HA and already has an instance on the destination; it is left in "
        "place (remove it with care, or add a peer elsewhere)"]
    assert plan.nothing_to_do == "nothing to migrate from hn0: " + plan.skipped[0]


def test_ha_service_moves_without_copying_data_to_a_destination_without_a_peer():
    binder = inst(1, "binder", HN0)
    plan = plan_migration(CAT, ["binder"], False, mfacts([binder]))
    assert [(m.new_alias, m.stateful) for m in plan.moves] == [("binder1", False)]


def test_an_ha_instance_made_by_an_interrupted_run_is_not_a_peer():
    binder = inst(1, "binder", HN0)
    made = replace(inst(2, "binder", HN2, alias="binder7"), uuid=new_uuid_for(binder.uuid, HN2.uuid))
    plan = plan_migration(CAT, ["binder"], False, mfacts([binder, made]))
    assert [(m.new_uuid, m.new_alias) for m in plan.moves] == [(made.uuid, "binder7")]


def test_resumed_migration_keeps_the_alias_it_gave():
    sapi = inst(1, "sapi", HN0)
    made = replace(inst(2, "sapi", HN2, alias="sapi5"), uuid=new_uuid_for(sapi.uuid, HN2.uuid))
    plan = plan_migration(CAT, ["sapi"], False, mfacts([sapi, made]))
    assert [(m.new_alias, m.new_uuid) for m in plan.moves] == [("sapi5", made.uuid)]


def test_nat_is_never_migrated():
    plan = plan_migration(CAT, [], True, mfacts([inst(1, "nat", HN0)]))
    assert plan.moves == []
    assert plan.nothing_to_do == ("nothing to migrate from hn0: nat0: nat is not migrated "
                                  "(catalog migrate policy: skip)")


def test_nothing_on_the_source_is_nothing_to_do():
    plan = plan_migration(CAT, [], True, mfacts([inst(1, "sapi", HN2)]))
    assert (plan.moves, plan.skipped, plan.nothing_to_do) == ([], [], "nothing to migrate from hn0")
    named = plan_migration(CAT, ["vmapi"], False, mfacts([inst(1, "sapi", HN0)]))
    assert named.nothing_to_do == "nothing to migrate from hn0"


def test_migrate_refuses_an_unknown_service():
    with pytest.raises(NotFound, match="unknown service 'nosuch'"):
        plan_migration(CAT, ["nosuch"], False, mfacts([inst(1, "sapi", HN0)]))


def test_migrate_moves_in_startup_order():
    insts = [inst(1, "vmapi", HN0), inst(2, "imgapi", HN0), inst(3, "sapi", HN0),
             inst(4, "assets", HN0)]
    plan = plan_migration(CAT, [], True, mfacts(insts))
    assert [m.service for m in plan.moves] == ["sapi", "assets", "imgapi", "vmapi"]


def test_new_uuid_is_stable_per_destination():
    old = inst(1, "sapi", HN0).uuid
    assert new_uuid_for(old, HN2.uuid) == new_uuid_for(old, HN2.uuid)
    assert new_uuid_for(old, HN2.uuid) != new_uuid_for(old, HN1.uuid)


def test_migrate_summary():
    insts = [inst(1, "sapi", HN0), inst(2, "vmapi", HN0), inst(3, "nat", HN0)]
    plan = plan_migration(CAT, [], True, mfacts(insts))
    assert migrate_summary(plan) == [
        "migrate sapi0 (sapi) from hn0 to hn2 as sapi1: sync its dataset, stop it, final sync, "
        "start the copy (down meanwhile)",
        "migrate vmapi0 (vmapi) from hn0 to hn2 as vmapi1: stop it, then start the new one "
        "(singleton: down meanwhile)",
        "downtime: sapi, vmapi will not answer from the stop of the old instance until the new "
        "one answers (never two at once)",
        "skip nat0: nat is not migrated (catalog migrate policy: skip)"]
    ha = plan_migration(CAT, [], True, mfacts([inst(1, "binder", HN0), inst(2, "assets", HN0)]))
    assert migrate_summary(ha) == [
        "migrate binder0 (binder) from hn0 to hn2 as binder1: start the new one, then destroy "
        "the old one (no downtime)",
        "migrate assets0 (assets) from hn0 to hn2 as assets1: start the new one, then destroy "
        "the old one (no downtime)"]


def test_migrated_instance_of_a_stateful_service_is_seeded_from_the_copy():
    old = inst(1, "sapi", HN0, params={"desired_state": "stopped", "seed_from": {"x": 1},
                                       "restored_from": HN1.uuid, "env": {"A": "1"}})
    move = InstanceMove("sapi", old, "sapi1", "bbbbbbbb-bbbb-4bbb-8bbb-000000000001", True)
    new = migrated_instance(move, old, HN2.uuid, "127.0.1.99")
    assert new == Instance(move.new_uuid, "sapi1", "sapi", HN2.uuid, IMG, "127.0.1.99", port=8080,
                           delegate_dataset=True,
                           params={"env": {"A": "1"},
                                   "seed_from": {"instance": old.uuid, "service": "sapi"}})


def test_migrated_instance_of_a_stateless_service_starts_fresh():
    old = inst(1, "vmapi", HN0, params={"env": {"A": "1"}, "desired_state": "stopped"})
    move = InstanceMove("vmapi", old, "vmapi1", "bbbbbbbb-bbbb-4bbb-8bbb-000000000002", False)
    new = migrated_instance(move, old, HN2.uuid, "127.0.1.98")
    assert (new.params, new.server_uuid, new.state, new.generation) == (
        {"env": {"A": "1"}}, HN2.uuid, "provisioning", 1)
    # The old one is gone already (a resumed run): the new one is built from the plan.
    assert migrated_instance(move, None, HN2.uuid, "127.0.1.98").params == {}


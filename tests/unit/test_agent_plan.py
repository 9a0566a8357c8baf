from dataclasses import replace

from sdcadm.agent.plan import (
    Depose,
    Destroy,
    LocalInstance,
    Provision,
    RecordGeneration,
    SetState,
    Start,
    Stop,
    StopAll,
    concurrent_steps,
    plan,
    runtime_key,
    staging,
    state_updates,
)
from sdcadm.model import Instance

ME = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"
IMG = "33333333-3333-3333-3333-333333333333"


def inst(n=1, server=ME, generation=1, state="running", **kw):
    return Instance(uuid=f"00000000-0000-0000-0000-{n:012d}", alias=f"sapi{n}", service="sapi",
                    server_uuid=server, image=IMG, admin_ip=f"127.99.99.{10 + n}", port=8080,
                    generation=generation, state=state, **kw)


def here(i, **kw):
    defaults = dict(uuid=i.uuid, generation=i.generation, spec=runtime_key(i), alive=True,
                    child=True, state="running")
    return LocalInstance(**{**defaults, **kw})


def test_a_new_instance_is_provisioned_then_started():
    i = inst()
    assert plan([i], {}, ME, now=0) == [Provision(i), Start(i)]


def test_a_running_child_needs_nothing():
    i = inst()
    assert plan([i], {i.uuid: here(i)}, ME, now=0) == []


def test_a_dead_instance_is_started_once_its_backoff_has_passed():
    i = inst()
    local = {i.uuid: here(i, alive=False, child=False, state="failed", not_before=10.0)}
    assert plan([i], local, ME, now=9.9) == []
    assert plan([i], local, ME, now=10.0) == [Start(i)]


def test_a_previous_agents_process_is_replaced():
    i = inst()
    local = {i.uuid: here(i, child=False)}
    assert plan([i], local, ME, now=0) == [Start(i, replace_stale=True)]


def test_nothing_starts_without_confirmed_ownership():
    a, b, c = inst(1), inst(2), inst(3)
    local = {b.uuid: here(b, alive=False, child=False, state="stopped"),
             c.uuid: here(c, child=False)}
    assert plan([a, b, c], local, ME, now=0, may_start=False) == []


def test_deposing_and_destroying_happen_even_without_ownership():
    gone, moved = inst(1), inst(2)
    local = {gone.uuid: here(gone), moved.uuid: here(moved)}
    elsewhere = {gone.uuid: None, moved.uuid: inst(2, server=OTHER, generation=2)}
    assert plan([], local, ME, now=0, elsewhere=elsewhere, may_start=False) == [
        Destroy(gone.uuid), Depose(moved.uuid, OTHER, 2)]


def test_unknown_whereabouts_leave_a_local_instance_alone():
    # The store could not be asked (unreachable): never destroy on a guess.
    i = inst()
    assert plan([], {i.uuid: here(i)}, ME, now=0) == []
    assert plan([], {i.uuid: here(i)}, ME, now=0, elsewhere={}) == []


def test_a_record_listed_for_another_server_is_not_run():
    i = inst(server=OTHER)
    assert plan([i], {}, ME, now=0) == []


def test_a_new_image_or_address_reprovisions():
    old = inst()
    for changed in (replace(old, image="44444444-4444-4444-4444-444444444444", generation=2),
                    replace(old, admin_ip="127.99.99.99", generation=2),
                    replace(old, params={"x": 1}, generation=2),
                    replace(old, delegate_dataset=True, generation=2)):
        assert plan([changed], {old.uuid: here(old)}, ME, now=0) == [Provision(changed),
                                                                     Start(changed)]


def test_a_failed_provisioning_is_retried_after_backoff():
    i = inst(state="failed")
    local = {i.uuid: LocalInstance(uuid=i.uuid, spec=None, state="failed", not_before=5.0)}
    assert plan([i], local, ME, now=1) == []
    assert plan([i], local, ME, now=5) == [Provision(i), Start(i)]


def test_a_newer_generation_on_this_server_keeps_running():
    old = inst(generation=1)
    new = replace(old, generation=3)
    assert plan([new], {old.uuid: here(old)}, ME, now=0) == [RecordGeneration(new)]
    dead = {old.uuid: here(old, alive=False, child=False, state="failed")}
    assert plan([new], dead, ME, now=0) == [Start(new), RecordGeneration(new)]


def test_removals_come_before_starts():
    gone, new = inst(1), inst(2)
    actions = plan([new], {gone.uuid: here(gone)}, ME, now=0, elsewhere={gone.uuid: None})
    assert actions == [Destroy(gone.uuid), Provision(new), Start(new)]


def test_state_updates_write_only_differences_for_owned_instances():
    a, b, c = inst(1, state="provisioning"), inst(2, state="running"), inst(3, server=OTHER)
    local = {a.uuid: here(a), b.uuid: here(b), c.uuid: here(c, state="failed")}
    assert state_updates([a, b, c], local, ME) == [SetState(a, "running")]
    assert state_updates([inst(4)], {}, ME) == []


def test_runtime_key_accepts_a_dict():
    i = inst(params={"b": 1, "a": 2})
    assert runtime_key(i.to_dict()) == runtime_key(i)


def test_instances_to_provision_or_start_in_a_row_make_one_concurrent_step():
    a, b, c, d, e = inst(1), inst(2), inst(3), inst(4), inst(5)
    stop_all = StopAll((c,), "fenced")
    actions = [stop_all, Provision(a), Start(a), Provision(b), Start(b), Provision(c),
               Start(d), RecordGeneration(d), Stop(inst(6)), Provision(e), Start(e)]
    assert concurrent_steps(actions) == [
        [[stop_all]],
        # staged ahead (d): recorded and started beside those provisioned now
        [[Provision(a), Start(a)], [Provision(b), Start(b)], [Provision(c)],
         [Start(d), RecordGeneration(d)]],
        [[Stop(inst(6))]],                        # a stop: a step of its own, a run ends
        [[Provision(e), Start(e)]],
    ]
    assert concurrent_steps([]) == []
    # nothing is lost or reordered within an instance
    flat = [x for step in concurrent_steps(actions) for unit in step for x in unit]
    assert sorted(map(repr, flat)) == sorted(map(repr, actions))


# -- staging: provisioned ahead of a restore's move, started only once moved --

def staged(i, until=100.0, **kw):
    return here(i, alive=False, child=False, state="provisioning", staged_until=until, **kw)


def test_staging_provisions_only_what_is_meant_here_and_not_held_yet():
    a, b, c = inst(1), inst(2), inst(3, server=OTHER)
    assert staging([a, b, c], {b.uuid: here(b)}, ME) == [Provision(a)]
    assert staging([], {}, ME) == []


def test_a_staged_instance_still_placed_elsewhere_is_left_alone_until_its_wait_ends():
    i = inst(1)
    there = replace(i, server_uuid=OTHER)
    local = {i.uuid: staged(i, until=100.0)}
    # not asked about (the supervisor reads nothing for it while it waits) ...
    assert plan([], local, ME, now=50.0) == []
    # ... and even when known to be elsewhere: not deposed, not started
    assert plan([], local, ME, now=50.0, elsewhere={i.uuid: there}) == []
    # the move never came: it never ran here, so it goes
    assert plan([], local, ME, now=100.0, elsewhere={i.uuid: there}) == [Destroy(i.uuid)]
    assert plan([], local, ME, now=50.0, elsewhere={i.uuid: None}) == [Destroy(i.uuid)]


def test_a_staged_instance_moved_here_is_started_without_provisioning_again():
    i = inst(1)
    moved = replace(i, generation=2, state="provisioning")
    assert plan([moved], {i.uuid: staged(i)}, ME, now=0) == [Start(moved), RecordGeneration(moved)]
    # unless the move changed what it runs (another address): provisioned again
    other_ip = replace(moved, admin_ip="127.99.99.99")
    assert plan([other_ip], {i.uuid: staged(i)}, ME, now=0) == [Provision(other_ip), Start(other_ip)]
    # and never before ownership is confirmed
    assert plan([moved], {i.uuid: staged(i)}, ME, now=0, may_start=False) == [RecordGeneration(moved)]


def test_an_instance_that_ran_here_is_deposed_not_destroyed_when_moved_away():
    i = inst(1)
    there = replace(i, server_uuid=OTHER, generation=2)
    ran = here(i, staged_until=None)
    assert plan([], {i.uuid: ran}, ME, now=0, elsewhere={i.uuid: there}) == [
        Depose(i.uuid, OTHER, 2)]
    # a staged record whose process is alive (it ran) is never destroyed for being staged
    alive = here(i, staged_until=1.0)
    assert plan([], {i.uuid: alive}, ME, now=50.0, elsewhere={i.uuid: there}) == [
        Depose(i.uuid, OTHER, 2)]

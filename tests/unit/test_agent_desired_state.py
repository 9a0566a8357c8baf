"""The store can ask for an instance to be stopped (params.desired_state)
without deposing it: migrate stops the source before its final sync."""

from sdcadm.agent.plan import Provision, RecordGeneration, Start, Stop, StopAll, plan, runtime_key
from tests.unit.test_agent_plan import ME, here, inst


def stopped(_unused, **kw):
    return inst(params={"desired_state": "stopped"}, **kw)


def test_desired_state_is_not_part_of_the_runtime():
    assert runtime_key(stopped(None)) == runtime_key(inst())


def test_a_running_instance_wanted_stopped_is_stopped():
    i = stopped(None)
    assert plan([i], {i.uuid: here(inst())}, ME, now=0) == [Stop(i)]


def test_stop_is_allowed_without_confirmed_ownership():
    i = stopped(None)
    assert plan([i], {i.uuid: here(inst())}, ME, now=0, may_start=False) == [Stop(i)]


def test_a_stopped_instance_stays_stopped():
    i = stopped(None)
    local = {i.uuid: here(inst(), alive=False, child=False, state="stopped")}
    assert plan([i], local, ME, now=100) == []


def test_new_instance_wanted_stopped_is_provisioned_not_started():
    i = stopped(None)
    assert plan([i], {}, ME, now=0) == [Provision(i)]


def test_newer_generation_wanted_stopped_records_then_stops():
    i = stopped(None, generation=2)
    assert plan([i], {i.uuid: here(inst())}, ME, now=0) == [RecordGeneration(i), Stop(i)]


def test_wanted_running_again_starts():
    i = inst(generation=3)
    local = {i.uuid: here(i, alive=False, child=False, state="stopped")}
    assert plan([i], local, ME, now=0) == [Start(i)]


def test_a_fenced_server_stops_everything_it_runs_and_starts_nothing():
    a, b = inst(1), inst(2)
    local = {a.uuid: here(a), b.uuid: here(b, alive=False, child=False, state="stopped")}
    assert plan([a, b], local, ME, now=0, may_start=False, fenced=True) == [StopAll((a,), "fenced")]
    assert plan([inst(3)], {}, ME, now=0, may_start=False, fenced=True) == []


def test_a_lost_lease_stops_singletons_only():
    sapi, binder = inst(1), inst(2)
    binder = binder.__class__(**{**binder.to_dict(), "service": "binder", "alias": "binder0"})
    local = {sapi.uuid: here(sapi), binder.uuid: here(binder)}
    got = plan([sapi, binder], local, ME, now=0, may_start=False, lease_lost=True,
               singletons={"sapi"})
    assert got == [StopAll((sapi,), "lease-lost")]


def test_a_lost_lease_stops_every_singleton_in_one_parallel_action():
    a, b, c = inst(1), inst(2), inst(3)
    local = {i.uuid: here(i) for i in (a, b, c)}
    got = plan([a, b, c], local, ME, now=0, may_start=False, lease_lost=True,
               singletons={"sapi"})
    assert got == [StopAll((a, b, c), "lease-lost")]


def test_the_parallel_stop_comes_before_anything_else():
    a, b = inst(1), inst(2)
    local = {a.uuid: here(a), b.uuid: here(b)}
    gone = inst(9)
    local[gone.uuid] = here(gone)
    got = plan([a, b], local, ME, now=0, may_start=False, lease_lost=True,
               elsewhere={gone.uuid: None}, singletons={"sapi"})
    assert got[0] == StopAll((a, b), "lease-lost") and len(got) == 2


def test_no_singleton_starts_while_the_lease_is_not_held():
    i, other = inst(1), inst(2)
    other = other.__class__(**{**other.to_dict(), "service": "binder", "alias": "binder0"})
    local = {x.uuid: here(x, alive=False, child=False, state="stopped") for x in (i, other)}
    got = plan([i, other], local, ME, now=0, may_start=True, lease_held=False,
               singletons={"sapi"})
    assert got == [Start(other)]


def test_lease_back_starts_the_stopped_singleton_again():
    i = inst()
    local = {i.uuid: here(i, alive=False, child=False, state="stopped")}
    assert plan([i], local, ME, now=0, may_start=True, singletons={"sapi"}) == [Start(i)]

"""The store contract: what every backend promises (``sdcadm/store/base.py``).

Each test runs on every backend of ``STORE_BACKENDS`` (tests/conftest.py),
against a real, new store; time is the ``clock`` fixture the store was opened
with, so expiries are tested without sleeping (a lock that must run out is
ended by ``expire_lock``: on sqlite the clock moves, on etcd the lease ends as
etcd ends it at its TTL). Backend details are tested one module per backend:
sqlite (files, WAL, migrations) beside this file, etcd (failover, leases that
run out in real time) in tests/integration/test_store_etcd.py.
"""

import threading

import pytest

from sdcadm.errors import (Conflict, LockHeld, LockLost, NotFound, StoreError, UsageError,
                           ValidationError)
from sdcadm.model import Image, Instance, Network, RestoreStatus, Server, Service, Task
from sdcadm.store import store_for
from tests.conftest import expire_lock, store_config

S1 = "11111111-1111-4111-8111-111111111111"
S2 = "22222222-2222-4222-8222-222222222222"
S3 = "33333333-3333-4333-8333-333333333333"
I1 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
I2 = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
IMG = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
T1 = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"
T2 = "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"


@pytest.fixture
def dc(store):
    """The store with two headnodes."""
    store.put_server(Server(S1, "hn1", "127.0.0.2", headnode=True))
    store.put_server(Server(S2, "hn0", "127.0.0.3", headnode=True))
    return store


@pytest.fixture
def other(store_backend, tmp_path, clock):
    """A second client of the same store (another process, as far as the store knows)."""
    handles = []

    def open_one():
        handles.append(store_for(store_config(tmp_path, store_backend), clock=clock).open())
        return handles[-1]

    yield open_one
    for h in handles:
        h.close()


def inst(**kw):
    base = dict(uuid=I1, alias="sapi0", service="sapi", server_uuid=S1, image=IMG,
                admin_ip="127.0.0.10", port=80, delegate_dataset=True)
    base.update(kw)
    return Instance(**base)


# -- lifecycle -------------------------------------------------------------------------------

def test_initialize_is_idempotent_and_keeps_the_data(dc, store_backend, tmp_path, clock):
    rev = dc.revision()
    again = store_for(store_config(tmp_path, store_backend), clock=clock).initialize()
    try:
        assert [s.hostname for s in again.list_servers()] == ["hn0", "hn1"]
        assert again.revision() == rev
    finally:
        again.close()


def test_open_refuses_a_store_that_was_never_initialised(store_backend, tmp_path):
    config = store_config(tmp_path / "new", store_backend)
    for _ in range(2):  # and refusing created nothing that a second open would accept
        with pytest.raises(StoreError) as exc:
            store_for(config).open()
        assert exc.value.hint


def test_describe_says_where_the_store_is(store):
    assert store.backend in store.describe()


def test_time_is_the_stores_clock(store, clock):
    assert store.now() == clock()
    clock.advance(5)
    assert store.now() == clock()


# -- servers ---------------------------------------------------------------------------------

def test_servers_are_listed_by_hostname(dc):
    assert [s.hostname for s in dc.list_servers()] == ["hn0", "hn1"]
    assert dc.get_server(S1).hostname == "hn1"
    assert dc.hostnames() == {S1: "hn1", S2: "hn0"}
    with pytest.raises(NotFound):
        dc.get_server(S3)


def test_hostnames_of_instances_names_only_the_servers_instances_are_on(dc):
    assert dc.hostnames(of_instances=True) == {}
    dc.put_image(Image(IMG, "sapi", "1.0.0", "0" * 64))
    dc.create_instance(inst())
    assert dc.hostnames(of_instances=True) == {S1: "hn1"}


def test_heartbeat_is_the_stores_time_and_not_a_model_change(dc, clock):
    rev, gen = dc.revision(), dc.get_server(S1).generation
    dc.heartbeat(S1)
    assert dc.get_server(S1).last_heartbeat == clock()
    clock.advance(7.5)
    dc.heartbeat(S1)
    got = dc.get_server(S1)
    assert got.last_heartbeat == clock() and got.generation == gen
    assert dc.revision() == rev
    with pytest.raises(NotFound):
        dc.heartbeat(S3)


def test_beat_is_a_heartbeat_that_reads_the_server_and_what_it_owns(dc, clock):
    dc.put_image(Image(IMG, "sapi", "1.0.0", "0" * 64))
    dc.create_instance(inst())
    dc.create_instance(inst(uuid=I2, alias="moray0", service="moray", server_uuid=S2,
                            admin_ip="127.0.0.11"))
    rev = dc.revision()
    clock.advance(3.0)
    server, owned = dc.beat(S1)
    assert server.uuid == S1 and server.hostname == "hn1" and not server.fenced
    assert server.last_heartbeat == clock() == dc.get_server(S1).last_heartbeat
    assert [i.uuid for i in owned] == [I1] and owned[0] == dc.get_instance(I1)
    server, owned = dc.beat(S2)
    assert [i.alias for i in owned] == ["moray0"]
    dc.move_instance(I2, 1, server_uuid=S1)
    assert sorted(i.alias for i in dc.beat(S1)[1]) == ["moray0", "sapi0"]
    assert dc.beat(S2)[1] == []
    assert dc.revision() == rev + 1  # the move; beats change no model
    with pytest.raises(NotFound):
        dc.beat(S3)
    assert dc.get_server(S1).generation == 1


def test_assignment_is_what_an_agent_reads_each_pass(dc):
    dc.put_image(Image(IMG, "sapi", "1.0.0", "0" * 64))
    dc.create_instance(inst())
    server, owned, revision = dc.assignment(S1)
    assert server == dc.get_server(S1) and [i.uuid for i in owned] == [I1]
    assert revision == dc.revision()
    # a server its agent has not registered yet: no record, nothing assigned
    assert dc.assignment(S3) == (None, [], dc.revision())


def test_move_instances_moves_all_in_one_commit_or_none(dc):
    dc.create_instance(inst())
    dc.create_instance(inst(uuid=I2, alias="moray0", service="moray", admin_ip="127.0.0.11"))
    rev = dc.revision()
    moved = dc.move_instances([(I1, 1, {"server_uuid": S2, "state": "provisioning"}),
                               (I2, 1, {"server_uuid": S2, "admin_ip": "127.0.0.12"})])
    assert [(i.uuid, i.server_uuid, i.generation) for i in moved] == [(I1, S2, 2), (I2, S2, 2)]
    assert moved == [dc.get_instance(I1), dc.get_instance(I2)]
    assert moved[0].state == "provisioning" and moved[1].admin_ip == "127.0.0.12"
    assert dc.revision() > rev
    rev = dc.revision()
    # I2 is at generation 2, not 1: nothing moves, I1 included, and the error names I2
    with pytest.raises(Conflict, match=I2):
        dc.move_instances([(I1, 2, {"server_uuid": S1}), (I2, 1, {"server_uuid": S1})])
    with pytest.raises(NotFound):
        dc.move_instances([(I1, 2, {"server_uuid": S1}), (T1, 1, {"server_uuid": S1})])
    with pytest.raises(ValueError, match="twice"):
        dc.move_instances([(I1, 2, {"server_uuid": S1}), (I1, 2, {"server_uuid": S1})])
    with pytest.raises(ValidationError):
        dc.move_instances([(I1, 2, {"server_uuid": S1}), (I2, 2, {"admin_ip": None})])
    assert [dc.get_instance(u).server_uuid for u in (I1, I2)] == [S2, S2]
    assert dc.revision() == rev


def test_put_server_keeps_the_heartbeat_and_bumps_the_generation(dc, clock):
    dc.heartbeat(S1)
    before = dc.get_server(S1)
    dc.put_server(Server(S1, "hn1", "127.0.0.9", headnode=True))
    after = dc.get_server(S1)
    assert after.last_heartbeat == clock() and after.admin_ip == "127.0.0.9"
    assert after.generation == before.generation + 1


def test_a_duplicate_hostname_is_a_conflict_and_changes_nothing(dc):
    rev = dc.revision()
    with pytest.raises(Conflict, match="hn0") as exc:
        dc.put_server(Server(S3, "hn0", "127.0.0.4"))
    assert "hostname" in exc.value.hint
    assert dc.revision() == rev and len(dc.list_servers()) == 2


def test_concurrent_servers_with_one_hostname_exactly_one_wins(store, other):
    results = []

    def attempt(n):
        try:
            other().put_server(Server(f"{n:08d}-0000-4000-8000-000000000000", "hn9",
                                      f"127.0.0.{n + 20}"))
            results.append("won")
        except Conflict:
            results.append("lost")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]
    assert [s.hostname for s in store.list_servers()] == ["hn9"]


def test_register_server_creates_only_and_never_overwrites(dc):
    dc.register_server(Server(S3, "cn0", "127.0.0.4", setup=False))
    got = dc.get_server(S3)
    assert (got.hostname, got.setup, got.headnode, got.generation) == ("cn0", False, False, 1)
    dc.put_server(Server(S3, "cn0", "127.0.0.4", setup=True))  # an operator set it up
    rev = dc.revision()
    with pytest.raises(Conflict, match="already registered"):
        dc.register_server(Server(S3, "cn0", "127.0.0.4", setup=False))
    with pytest.raises(Conflict, match="hn0") as exc:
        dc.register_server(Server("44444444-4444-4444-8444-444444444444", "hn0", "127.0.0.5"))
    assert "hostname" in exc.value.hint
    assert dc.revision() == rev and dc.get_server(S3).setup is True
    assert len(dc.list_servers()) == 3


def test_concurrent_registrations_of_one_server_exactly_one_wins(store, other):
    results = []

    def attempt(n):
        try:
            other().register_server(Server(S3, "cn0", "127.0.0.4", setup=False))
            results.append("won")
        except Conflict:
            results.append("lost")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 5 + ["won"]
    assert store.get_server(S3).generation == 1


def test_a_server_record_without_a_hostname_is_refused_before_the_write(dc):
    rev = dc.revision()
    with pytest.raises(ValidationError, match="hostname is required"):
        dc.put_server(Server(S3, "", "127.0.0.4"))
    assert dc.revision() == rev


def test_find_server_by_name_or_uuid(dc):
    assert dc.find_server("hn1").uuid == S1
    assert dc.find_server(S2).hostname == "hn0"
    with pytest.raises(NotFound, match="known servers: hn0, hn1"):
        dc.find_server("hn9")


def test_set_fenced_is_a_compare_and_swap(dc):
    seen = dc.get_server(S1)
    fenced = dc.set_fenced(S1, True, seen.generation)
    assert fenced.fenced and fenced.generation == seen.generation + 1
    assert dc.get_server(S1) == fenced
    rev = dc.revision()
    with pytest.raises(Conflict):  # stale: it changed since `seen`
        dc.set_fenced(S1, False, seen.generation)
    assert dc.get_server(S1).fenced and dc.revision() == rev
    with pytest.raises(NotFound):
        dc.set_fenced(S3, True, 1)
    assert not dc.set_fenced(S1, False, fenced.generation).fenced


def test_delete_server_is_a_compare_and_swap_and_never_orphans_an_instance(dc):
    dc.heartbeat(S1)
    dc.create_instance(inst(server_uuid=S1))
    seen = dc.get_server(S1)
    with pytest.raises(Conflict, match="still owns 1 instance.*sapi0"):
        dc.delete_server(S1, seen.generation)
    assert dc.get_server(S1) == seen
    dc.delete_instance(I1)
    rev = dc.revision()
    with pytest.raises(Conflict):  # stale generation
        dc.delete_server(S1, seen.generation - 1)
    assert dc.revision() == rev
    dc.delete_server(S1, seen.generation)
    with pytest.raises(NotFound):
        dc.get_server(S1)
    assert [s.uuid for s in dc.list_servers()] == [S2]
    with pytest.raises(NotFound):
        dc.delete_server(S1, seen.generation)
    # The hostname is free again, and no heartbeat of the old record lingers.
    dc.put_server(Server(S3, "hn1", "127.0.0.4"))
    assert dc.get_server(S3).last_heartbeat == 0


# -- instances -------------------------------------------------------------------------------

def test_move_instance_is_a_compare_and_swap(dc):
    dc.create_instance(inst())
    moved = dc.move_instance(I1, 1, server_uuid=S2, admin_ip="127.0.0.11")
    assert (moved.server_uuid, moved.generation, moved.admin_ip) == (S2, 2, "127.0.0.11")
    with pytest.raises(Conflict, match="generation 2, not 1"):
        dc.move_instance(I1, 1, server_uuid=S1)
    assert dc.get_instance(I1).server_uuid == S2
    with pytest.raises(ValueError):
        dc.move_instance(I1, 2, generation=9)
    with pytest.raises(NotFound):
        dc.move_instance(I2, 1, server_uuid=S1)


def test_concurrent_moves_exactly_one_wins(dc, other):
    dc.create_instance(inst())
    results = []

    def attempt(target):
        try:
            other().move_instance(I1, 1, server_uuid=target)
            results.append("won")
        except Conflict:
            results.append("lost")

    threads = [threading.Thread(target=attempt, args=(S1 if i % 2 else S2,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]
    assert dc.get_instance(I1).generation == 2


def test_state_write_is_fenced_by_owner_and_generation(dc):
    dc.create_instance(inst())
    assert dc.set_instance_state(I1, "running", S1, 1) is True
    dc.move_instance(I1, 1, server_uuid=S2)
    # the old owner (or an old generation) cannot write any more
    assert dc.set_instance_state(I1, "failed", S1, 1) is False
    assert dc.set_instance_state(I1, "failed", S2, 1) is False
    assert dc.get_instance(I1).state == "running"
    assert dc.set_instance_state(I1, "stopped", S2, 2) is True


def test_states_of_a_pass_are_written_together_each_fenced_on_its_own(dc):
    dc.create_instance(inst())
    dc.create_instance(inst(uuid=I2, alias="moray0", service="moray", admin_ip="127.0.0.11"))
    dc.move_instance(I2, 1, server_uuid=S2)
    rev = dc.revision()
    # I2 is S2's now: S1's write of it is refused, I1's is written
    assert dc.set_instance_states([(I1, "running", S1, 1), (I2, "failed", S1, 1),
                                   (T1, "running", S1, 1)]) == [True, False, False]
    assert dc.get_instance(I1).state == "running" and dc.get_instance(I2).state != "failed"
    assert dc.revision() > rev
    rev = dc.revision()
    assert dc.set_instance_states([(I1, "running", S1, 1)]) == [True]  # unchanged: no write
    assert dc.set_instance_states([]) == []
    assert dc.revision() == rev


def test_duplicate_instance_conflicts(dc):
    dc.create_instance(inst())
    with pytest.raises(Conflict):
        dc.create_instance(inst())
    with pytest.raises(Conflict):  # alias is unique too
        dc.create_instance(inst(uuid=I2))


def test_an_instance_at_generation_zero_is_refused_before_the_write(dc):
    with pytest.raises(ValidationError, match="generation must be"):
        dc.create_instance(inst(generation=0))
    with pytest.raises(NotFound):
        dc.get_instance(I1)


def test_instances_listed_by_service_then_alias_with_filters_and_delete(dc):
    dc.create_instance(inst(alias="vmapi0", service="vmapi", server_uuid=S2))
    dc.create_instance(inst(uuid=I2))
    assert [i.alias for i in dc.list_instances()] == ["sapi0", "vmapi0"]
    assert [i.alias for i in dc.list_instances(server_uuid=S2)] == ["vmapi0"]
    assert [i.alias for i in dc.list_instances(service="sapi")] == ["sapi0"]
    with pytest.raises(Conflict):
        dc.delete_instance(I2, expected_generation=5)
    dc.delete_instance(I2, expected_generation=1)
    with pytest.raises(NotFound):
        dc.get_instance(I2)


def test_instance_columns_are_list_instances_by_column(dc):
    dc.create_instance(inst(alias="vmapi0", service="vmapi", server_uuid=S2))
    dc.create_instance(inst(uuid=I2, params={"a": [1, 2]}, delegate_dataset=True))
    fields = ["alias", "params", "delegate_dataset", "generation", "server_uuid"]
    for filters in ({}, {"server_uuid": S2}, {"service": "sapi"}, {"service": "nope"}):
        insts = dc.list_instances(**filters)
        columns = dc.instance_columns(fields, **filters)
        assert columns == {f: [getattr(i, f) for i in insts] for f in fields}
    assert dc.instance_columns(["params", "params"])["params"] == [{"a": [1, 2]}, {}]


def test_instance_columns_refuse_a_field_that_is_not_one(dc):
    with pytest.raises(UsageError, match="'hostname'"):
        dc.instance_columns(["alias", "hostname"])
    with pytest.raises(UsageError):
        dc.instance_columns(["uuid FROM instances; DROP TABLE instances; --"])
    assert dc.instance_columns(["alias"]) == {"alias": []}


# -- services, images, tasks, revision -----------------------------------------------------

def test_services_images_tasks_and_revision(dc):
    rev = dc.revision()
    dc.put_service(Service("vmapi", IMG))
    dc.put_service(Service("sapi", IMG, {"ha": False}))
    dc.put_image(Image(IMG, "sapi", "1.0.0", "0" * 64, 10))
    dc.put_image(Image(I2, "binder", "2.0.0", "1" * 64))
    assert dc.revision() == rev + 4
    assert [s.name for s in dc.list_services()] == ["sapi", "vmapi"]
    assert dc.get_service("sapi").params == {"ha": False}
    assert [i.name for i in dc.list_images()] == ["binder", "sapi"]
    assert dc.get_image(IMG).size == 10
    for getter, key in ((dc.get_service, "x"), (dc.get_image, I1), (dc.get_task, I1),
                        (dc.get_network, "x")):
        with pytest.raises(NotFound):
            getter(key)


def test_tasks_newest_first(dc):
    dc.put_task(Task(T1, "restore", created=5.0, steps=[{"name": "a", "state": "ok"}]))
    dc.put_task(Task(T2, "migrate", created=6.0))
    assert [t.uuid for t in dc.list_tasks()] == [T2, T1]
    assert [t.uuid for t in dc.list_tasks(limit=1)] == [T2]
    assert dc.get_task(T1).steps == [{"name": "a", "state": "ok"}]
    with pytest.raises(ValidationError, match="state must be"):
        dc.put_task(Task(T1, "restore", state="splendid"))


# -- networks ------------------------------------------------------------------------------

def test_ip_allocation(dc):
    dc.put_network(Network("admin", "127.5.5.0/29", reservations={"127.5.5.1": "gateway"}))
    assert dc.allocate_ip("admin", S1) == "127.5.5.2"
    assert dc.allocate_ip("admin", S2, "127.5.5.6") == "127.5.5.6"
    with pytest.raises(Conflict, match="already taken"):
        dc.allocate_ip("admin", I1, "127.5.5.6")
    with pytest.raises(Conflict, match="not in network"):
        dc.allocate_ip("admin", I1, "10.0.0.1")
    for _ in range(3):
        dc.allocate_ip("admin", I1)
    with pytest.raises(Conflict, match="no free address"):
        dc.allocate_ip("admin", I1)
    dc.release_ip("admin", "127.5.5.6")
    assert dc.allocate_ip("admin", I1) == "127.5.5.6"
    assert dc.get_network("admin").allocations["127.5.5.2"] == S1
    with pytest.raises(NotFound):
        dc.allocate_ip("nope", I1)


def test_a_released_address_is_quarantined_from_other_owners(dc, clock):
    dc.put_network(Network("admin", "127.5.5.0/29", reservations={"127.5.5.1": "gateway"}))
    assert dc.allocate_ip("admin", S1, "127.5.5.2") == "127.5.5.2"
    dc.release_ip("admin", "127.5.5.2", quarantine=600)
    net = dc.get_network("admin")
    assert "127.5.5.2" not in net.allocations
    assert net.quarantine["127.5.5.2"] == {"owner": S1, "until": clock() + 600}
    assert dc.allocate_ip("admin", I1) == "127.5.5.3"   # skipped while quarantined
    with pytest.raises(Conflict, match="quarantined for 600s more"):
        dc.allocate_ip("admin", I2, "127.5.5.2")
    assert dc.allocate_ip("admin", S1, "127.5.5.2") == "127.5.5.2"  # its owner takes it back
    dc.release_ip("admin", "127.5.5.2", quarantine=600)
    clock.advance(601)
    assert dc.allocate_ip("admin", I2, "127.5.5.2") == "127.5.5.2"
    dc.release_ip("admin", "127.5.5.3")                 # no quarantine asked: free at once
    assert dc.allocate_ip("admin", S2) == "127.5.5.3"
    assert dc.get_network("admin").quarantine == {}     # expired entries were dropped


def test_concurrent_allocations_never_hand_out_an_address_twice(dc, other):
    dc.put_network(Network("admin", "127.5.5.0/28"))
    got = []

    def allocate(n):
        got.append(other().allocate_ip("admin", f"{n:08d}-0000-4000-8000-000000000000"))

    threads = [threading.Thread(target=allocate, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8


def test_put_network_is_a_compare_and_swap(dc):
    created = dc.put_network(Network("admin", "127.5.5.0/29"))
    assert created.revision == dc.get_network("admin").revision
    with pytest.raises(Conflict, match="already exists"):  # create refuses to replace
        dc.put_network(Network("admin", "127.6.6.0/29"))
    seen = dc.get_network("admin")
    dc.allocate_ip("admin", S1)  # an allocation is a change of the network too
    stale = Network("admin", "127.5.5.0/29", reservations={"127.5.5.1": "gateway"})
    with pytest.raises(Conflict):
        dc.put_network(stale, expected_revision=seen.revision)
    assert dc.get_network("admin").allocations == {"127.5.5.1": S1}
    now = dc.get_network("admin")
    new = Network("admin", now.cidr, now.allocations, {"127.5.5.7": "broadcast"})
    replaced = dc.put_network(new, expected_revision=now.revision)
    assert replaced.revision > now.revision
    assert dc.get_network("admin") == replaced
    with pytest.raises(NotFound):
        dc.put_network(Network("other", "127.7.7.0/29"), expected_revision=1)


def test_a_network_with_a_bad_cidr_is_refused_before_the_write(dc):
    with pytest.raises(ValidationError, match="cidr"):
        dc.put_network(Network("admin", "300.1.1.0/24"))
    with pytest.raises(NotFound):
        dc.get_network("admin")


# -- the DC lock and its fencing token -----------------------------------------------------

def test_lock_owner_expiry_and_token(store, clock):
    t1 = store.acquire_lock("dc", "alice", 10)
    clock.advance(5)
    assert store.acquire_lock("dc", "alice", 10) == t1  # extends it to now + 10
    clock.advance(5)
    with pytest.raises(LockHeld, match="held by alice") as exc:
        store.acquire_lock("dc", "bob", 10)
    assert exc.value.expires_in == pytest.approx(5)
    owner, expires_at, token = store.get_lock("dc")
    assert (owner, expires_at, token) == ("alice", clock() + 5, t1)
    expire_lock(store, clock, "dc")  # alice's lease is over
    t2 = store.acquire_lock("dc", "bob", 10)
    assert t2 > t1
    store.release_lock("dc", "alice")  # not alice's any more: no-op
    assert store.get_lock("dc")[0] == "bob"
    store.release_lock("dc", "bob")
    assert store.get_lock("dc") is None
    assert store.acquire_lock("dc", "bob", 10) > t2  # a new acquisition, a new token


def test_guarded_writes_pass_while_the_token_holds(dc, clock):
    token = dc.acquire_lock("dc", "alice", 10)
    guarded = dc.guarded("dc", token)
    guarded.put_service(Service("sapi", IMG))
    clock.advance(60)  # expired, but nobody took it: the token still holds
    # (etcd: the lease is measured by etcd, not this clock, and still runs; once
    # it really ran out the key is gone and the token void: test_store_etcd.py)
    guarded.put_task(Task(T1, "restore", created=1.0))
    assert [s.name for s in dc.list_services()] == ["sapi"]
    assert guarded.get_task(T1).name == "restore"  # reads go through as they are


def test_guarded_writes_are_refused_once_another_owner_took_the_lock(dc, clock):
    dc.create_instance(inst())
    token = dc.acquire_lock("dc", "alice", 10)
    guarded = dc.guarded("dc", token)
    expire_lock(dc, clock, "dc")
    dc.acquire_lock("dc", "bob", 10)
    rev = dc.revision()
    writes = [
        lambda: guarded.move_instance(I1, 1, server_uuid=S2),
        lambda: guarded.set_fenced(S2, True, dc.get_server(S2).generation),
        lambda: guarded.put_task(Task(T1, "restore", created=1.0)),
        lambda: guarded.put_service(Service("sapi", IMG)),
        lambda: guarded.put_network(Network("admin", "127.5.5.0/29")),
        lambda: guarded.create_instance(inst(uuid=I2, alias="sapi1")),
        lambda: guarded.delete_instance(I1),
    ]
    for write in writes:
        with pytest.raises(LockLost, match="lost the DC lock") as exc:
            write()
        assert "bob" in str(exc.value)
    assert dc.revision() == rev
    got = dc.get_instance(I1)
    assert (got.server_uuid, got.generation) == (S1, 1)
    assert not dc.get_server(S2).fenced
    with pytest.raises(NotFound):
        dc.get_task(T1)


def test_guarded_writes_are_refused_once_the_lock_was_released(dc):
    token = dc.acquire_lock("dc", "alice", 10)
    guarded = dc.guarded("dc", token)
    dc.release_lock("dc", "alice")
    with pytest.raises(LockLost, match="released"):
        guarded.put_service(Service("sapi", IMG))
    with pytest.raises(NotFound):
        dc.get_service("sapi")


def test_a_guarded_view_does_not_close_its_store(dc):
    token = dc.acquire_lock("dc", "alice", 10)
    dc.guarded("dc", token).close()
    assert len(dc.list_servers()) == 2


# -- restore-data status ---------------------------------------------------------------------

def test_restore_status_rows(dc):
    rev = dc.revision()
    dc.put_restore_status(RestoreStatus(S2, "sapi", I1, "sapi0", S1, status="ok"))
    dc.put_restore_status(RestoreStatus(S1, "sapi", I1, "sapi0", S2, status="failed",
                                        error="boom"))
    dc.put_restore_status(RestoreStatus(S1, "imgapi", I2, "imgapi0", S2))
    assert dc.revision() == rev  # not part of the DC model
    rows = dc.list_restore_status()
    assert [(r.receiver, r.service) for r in rows] == [(S1, "imgapi"), (S1, "sapi"), (S2, "sapi")]
    assert [r.alias for r in dc.list_restore_status(receiver=S2)] == ["sapi0"]
    dc.delete_restore_status(S1, I1)
    assert [r.service for r in dc.list_restore_status(receiver=S1)] == ["imgapi"]


def test_an_unknown_restore_status_is_refused_before_the_write(dc):
    with pytest.raises(ValidationError, match="status must be one of"):
        dc.put_restore_status(RestoreStatus(S1, "sapi", I1, status="splendid"))
    assert dc.list_restore_status() == []

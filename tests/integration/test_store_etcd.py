"""What the etcd store does beyond the store contract (tests/unit/test_store_contract.py
runs that on etcd too): failover between endpoints, an unreachable cluster,
and liveness that is etcd's leases running out by themselves (real time,
waited for, never slept)."""

import base64
import contextlib
import socket
import threading

import pytest
import requests

from sdcadm.config import config_from
from sdcadm.errors import LockLost, NotFound, StoreError, StoreUnreachable
from sdcadm.model import SERVER_UNREACHABLE, Instance, Server, Service, status_of
from sdcadm.store import open_store, store_for
from tests.conftest import free_port, random_address, store_config, store_outage, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

S1 = "11111111-1111-4111-8111-111111111111"


def config_of(tmp_path, endpoints, timeout=5.0, heartbeat_timeout=15.0):
    """The store of this test's prefix (as store_config names it) at ``endpoints``."""
    prefix = store_config(tmp_path, "etcd").store.etcd_prefix
    return config_from({"store": {"backend": "etcd", "etcd_endpoints": endpoints,
                                  "etcd_prefix": prefix, "timeout": timeout},
                        "agent": {"heartbeat_timeout": heartbeat_timeout}}, "test")


def dead_endpoint():
    """An address where nothing listens: connections are refused."""
    address = random_address()
    return f"{address}:{free_port(address)}"


def finishes(call, bound):
    """call()'s exception, failing if it has not returned after ``bound`` seconds
    (a hang, not a slow answer: the bound is many times the store timeout)."""
    result = []

    def run():
        try:
            call()
            result.append(None)
        except Exception as e:  # noqa: BLE001 - handed to the test
            result.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert result, f"the store call still runs after {bound}s: it is not bounded by store.timeout"
    return result[0]


@contextlib.contextmanager
def silent_endpoint():
    """An endpoint that takes connections and never answers (the kernel accepts
    them into the backlog): a hung member, as a client meets it."""
    address = random_address()
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.listen(64)
        yield f"{address}:{sock.getsockname()[1]}"


@pytest.fixture
def dc(etcd_server, tmp_path):
    store = store_for(store_config(tmp_path, "etcd")).initialize()
    store.put_server(Server(S1, "hn0", "127.0.0.2", headnode=True))
    return store


def test_a_dead_first_endpoint_fails_over_to_the_next(dc, etcd_server, tmp_path):
    store = open_store(config_of(tmp_path, [dead_endpoint(), etcd_server.endpoint]))
    store.put_service(Service("sapi"))
    assert store.get_server(S1).hostname == "hn0"
    assert [s.name for s in dc.list_services()] == ["sapi"]


def test_a_silent_endpoint_is_skipped_for_reads_after_the_timeout(dc, etcd_server, tmp_path):
    with silent_endpoint() as silent:
        store = open_store(config_of(tmp_path, [silent, etcd_server.endpoint], timeout=0.5))
        assert [s.hostname for s in store.list_servers()] == ["hn0"]
        store.put_service(Service("sapi"))  # the client now stays on the member that answers
        assert store.client.current == 1


def test_a_write_that_timed_out_is_not_sent_to_another_member(dc, etcd_server, tmp_path):
    from sdcadm.store.etcd_client import EtcdClient, put

    key = dc.keys.service("once")
    with silent_endpoint() as silent:
        client = EtcdClient([silent, etcd_server.endpoint], 0.5)
        error = finishes(lambda: client.txn([], [put(key, "{}")]), 30)
    assert isinstance(error, StoreUnreachable), error
    assert "may or may not have been applied" in str(error) and "re-read" in error.hint
    with pytest.raises(NotFound):  # the member that answers never saw it
        dc.get_service("once")
    assert client.current == 1  # but the next request goes there: a hung member keeps nobody


def test_a_cluster_without_any_live_endpoint_is_unreachable_with_a_hint(etcd_server, tmp_path):
    config = config_of(tmp_path, [dead_endpoint(), dead_endpoint()], timeout=0.5)
    error = finishes(lambda: open_store(config), 30)
    assert isinstance(error, StoreUnreachable), error
    assert "no etcd endpoint" in str(error) and "store.etcd_endpoints" in error.hint


def test_a_frozen_member_is_unreachable_within_the_timeout_for_reads_and_writes(dc, tmp_path,
                                                                                etcd_server):
    store = open_store(config_of(tmp_path, [etcd_server.endpoint], timeout=0.5))
    with store_outage(store_config(tmp_path, "etcd")):
        read = finishes(store.list_servers, 30)
        write = finishes(lambda: store.put_service(Service("sapi")), 30)
    assert isinstance(read, StoreUnreachable), read
    assert isinstance(write, StoreUnreachable), write
    assert "no answer within 0.5s" in str(read)
    wait_for(etcd_server.healthy, 20, "etcd answering again after the outage")


def test_a_heartbeat_not_refreshed_runs_out_and_the_server_reads_unreachable(dc, tmp_path,
                                                                             etcd_server):
    store = open_store(config_of(tmp_path, [etcd_server.endpoint], heartbeat_timeout=1))
    store.heartbeat(S1)
    assert store.get_server(S1).last_heartbeat == pytest.approx(store.now(), abs=60)
    wait_for(lambda: store.get_server(S1).last_heartbeat == 0.0, 20,
             "the heartbeat key's lease running out")
    server = store.get_server(S1)
    assert status_of(server, store.now(), 1) == SERVER_UNREACHABLE
    store.heartbeat(S1)  # the agent is back: a new lease
    assert store.get_server(S1).last_heartbeat > 0


def test_a_lock_not_renewed_runs_out_and_another_owner_gets_a_newer_token(dc):
    token = dc.acquire_lock("dc", "alice", 1)
    wait_for(lambda: dc.get_lock("dc") is None, 20, "the lock's lease running out")
    assert dc.acquire_lock("dc", "bob", 10) > token


def test_a_guarded_write_after_another_owner_took_the_lock_changes_nothing(dc):
    token = dc.acquire_lock("dc", "alice", 1)
    guarded = dc.guarded("dc", token)
    guarded.put_service(Service("before"))
    wait_for(lambda: dc.get_lock("dc") is None, 20, "the lock's lease running out")
    # Stricter than sqlite: once the lease ran out the token is void even before
    # anyone takes the lock (the key is gone with its lease).
    with pytest.raises(LockLost, match="released"):
        guarded.put_service(Service("sapi"))
    dc.acquire_lock("dc", "bob", 10)
    rev = dc.revision()
    with pytest.raises(LockLost, match="bob"):
        guarded.put_service(Service("sapi"))
    with pytest.raises(LockLost):
        guarded.set_fenced(S1, True, dc.get_server(S1).generation)
    assert dc.revision() == rev
    assert [s.name for s in dc.list_services()] == ["before"]
    assert not dc.get_server(S1).fenced


def test_a_damaged_record_names_its_key_and_how_to_repair_it(dc, etcd_server, tmp_path):
    key = dc.keys.service("sapi")
    requests.post(f"http://{etcd_server.endpoint}/v3/kv/put", timeout=5, json={
        "key": base64.b64encode(key.encode()).decode(),
        "value": base64.b64encode(b"{not json").decode()}).raise_for_status()
    with pytest.raises(StoreError, match=key) as exc:
        dc.get_service("sapi")
    assert "etcdctl put" in exc.value.hint


def test_records_of_two_prefixes_do_not_meet(dc, etcd_server, tmp_path):
    other = store_for(store_config(tmp_path / "other", "etcd")).initialize()
    assert other.list_servers() == [] and other.revision() == 0
    assert [s.hostname for s in dc.list_servers()] == ["hn0"]


# -- watches ---------------------------------------------------------------------------

S2 = "22222222-2222-4222-8222-222222222222"
IMG = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


def instance(n, server):
    return Instance(uuid=f"aaaaaaaa-aaaa-4aaa-8aaa-{n:012d}", alias=f"sapi{n}", service="sapi",
                    server_uuid=server, image=IMG, admin_ip=f"127.0.0.{10 + n}", port=80)


@contextlib.contextmanager
def watching(store, server_uuid):
    """[the calls so far] of a watch on ``server_uuid``'s assignment, running
    in a thread; the watch must end when cancelled."""
    calls, seen = [], threading.Condition()

    def on_change():
        with seen:
            calls.append(1)
            seen.notify_all()

    watch = store.watch_assignment(server_uuid, on_change)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        yield calls
    finally:
        watch.cancel()
        thread.join(10)
        assert not thread.is_alive(), "a cancelled watch keeps running"


def test_a_watch_fires_for_what_is_assigned_to_its_server_and_nothing_else(dc):
    dc.put_server(Server(S2, "hn1", "127.0.0.3", headnode=True))
    ours, theirs = instance(1, S1), instance(2, S2)
    dc.create_instance(theirs)
    with watching(dc, S1) as calls:
        wait_for(lambda: len(calls) == 1, 10, "the watch connected (it says changes may be missed)")
        dc.move_instance(theirs.uuid, 1, state="running")   # hn1's: not ours
        dc.create_instance(ours)                            # assigned to hn0
        wait_for(lambda: len(calls) == 2, 10, "a call for the instance assigned to hn0")
        dc.move_instance(ours.uuid, 1, server_uuid=S2)      # moved away from hn0
        wait_for(lambda: len(calls) == 3, 10, "a call for the instance taken from hn0")
        dc.move_instance(theirs.uuid, 2, server_uuid=S1)    # moved to hn0
        wait_for(lambda: len(calls) == 4, 10, "a call for the instance moved to hn0")
        dc.delete_instance(theirs.uuid)
        wait_for(lambda: len(calls) == 5, 10, "a call for hn0's deleted instance")
        dc.move_instance(ours.uuid, 2, state="stopped")     # hn1's now: not ours
        dc.put_service(Service("sapi"))                      # not an instance
        dc.heartbeat(S1)
        dc.create_instance(instance(3, S1))
        # In order on one stream: had the others fired, this would be call 7 or later.
        wait_for(lambda: len(calls) >= 6, 10, "a call for instance 3")
        assert len(calls) == 6


def test_a_watch_fails_over_from_a_dead_endpoint(dc, etcd_server, tmp_path):
    store = open_store(config_of(tmp_path, [dead_endpoint(), etcd_server.endpoint]))
    with watching(store, S1) as calls:
        wait_for(lambda: calls, 10, "the watch connected through the second endpoint")
        dc.create_instance(instance(1, S1))
        wait_for(lambda: len(calls) == 2, 10, "a call for the new instance")


def test_a_sqlite_store_cannot_watch_and_says_so(tmp_path):
    store = store_for(store_config(tmp_path, "sqlite")).initialize()
    assert store.watch_assignment(S1, lambda: None) is None

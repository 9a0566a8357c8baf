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
from sdcadm.model import SERVER_UNREACHABLE, Server, Service, status_of
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

"""The etcd store at DC scale, on a real etcd: each server's instances under its
own prefix (what an agent reads every heartbeat), hostnames as keys (no scan
of every server per write), the upgrade of a schema-1 store to both, and the
listing cache an agent keeps current by a watch (store/etcd_listing.py)."""

import threading

import pytest

from sdcadm.errors import Conflict
from sdcadm.model import Instance, Server
from sdcadm.store import open_store, store_for
from sdcadm.store.etcd_client import _shut, delete, put, unb64
from sdcadm.store.etcd_keys import encode
from sdcadm.store.etcd_listing import ListingCache
from tests.conftest import store_config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

S1 = "11111111-1111-4111-8111-111111111111"
S2 = "22222222-2222-4222-8222-222222222222"
S3 = "33333333-3333-4333-8333-333333333333"
IMG = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
FIELDS = ["uuid", "alias", "service", "server_uuid", "state", "generation", "admin_ip"]


def instance(n, server, service="sapi"):
    return Instance(uuid=f"aaaaaaaa-aaaa-4aaa-8aaa-{n:012d}", alias=f"{service}{n}",
                    service=service, server_uuid=server, image=IMG,
                    admin_ip=f"127.0.0.{10 + n}", port=80)


@pytest.fixture
def dc(etcd_server, tmp_path):
    store = store_for(store_config(tmp_path, "etcd")).initialize()
    store.put_server(Server(S1, "hn0", "127.0.0.2", headnode=True))
    store.put_server(Server(S2, "hn1", "127.0.0.3", headnode=True))
    return store


def keys_under(store, kind):
    return {kv["key"]: kv["value"] for kv in store.client.prefix(store.keys.dir(kind))}


def placed_matches_instances(store):
    """Every instance has exactly one copy, under its own server, equal to it."""
    records = keys_under(store, "instances")
    placed = keys_under(store, "placed")
    expected = {}
    for key, value in records.items():
        inst = store.get_instance(key.rsplit("/", 1)[1])
        expected[store.keys.placed(inst.server_uuid, inst.uuid)] = value
    return placed == expected


def test_each_write_keeps_one_copy_under_the_owning_server(dc):
    a, b = instance(1, S1), instance(2, S2)
    dc.create_instance(a)
    dc.create_instance(b)
    assert placed_matches_instances(dc)
    dc.move_instances([(a.uuid, 1, {"server_uuid": S2, "state": "running"})])
    dc.set_instance_states([(b.uuid, "stopped", S2, 1)])
    assert placed_matches_instances(dc)
    assert [i.alias for i in dc.list_instances(server_uuid=S2)] == ["sapi1", "sapi2"]
    assert dc.list_instances(server_uuid=S1) == []
    server, mine, _ = dc.assignment(S2)
    assert server.hostname == "hn1" and [i.uuid for i in mine] == [a.uuid, b.uuid]
    dc.delete_instance(b.uuid)
    assert placed_matches_instances(dc) and len(keys_under(dc, "placed")) == 1
    with pytest.raises(Conflict, match="owns"):
        dc.delete_server(S2, dc.get_server(S2).generation)


def test_hostnames_are_keys_a_rename_and_a_delete_free(dc):
    with pytest.raises(Conflict, match="already exists"):
        dc.put_server(Server(S3, "hn1", "127.0.0.4"))
    with pytest.raises(Conflict, match="already exists"):
        dc.register_server(Server(S3, "hn1", "127.0.0.4"))
    with pytest.raises(Conflict, match="already registered"):
        dc.register_server(Server(S2, "other", "127.0.0.4"))
    dc.put_server(Server(S2, "hn9", "127.0.0.3", headnode=True))     # renamed
    assert set(keys_under(dc, "hostnames")) == {dc.keys.hostname("hn0"), dc.keys.hostname("hn9")}
    dc.register_server(Server(S3, "hn1", "127.0.0.4"))                # the old name is free
    dc.delete_server(S3, dc.get_server(S3).generation)
    assert dc.keys.hostname("hn1") not in keys_under(dc, "hostnames")
    dc.register_server(Server(S3, "hn1", "127.0.0.4"))


def make_schema_1(store):
    """The store as sdcadm wrote it before schema 2: no copies, no hostname keys."""
    gone = list(keys_under(store, "placed")) + list(keys_under(store, "hostnames"))
    for start in range(0, len(gone), 100):
        store.client.txn([], [delete(k) for k in gone[start:start + 100]])
    store.client.txn([], [put(store.keys.schema, encode(1))])


def test_opening_a_schema_1_store_adds_the_copies_and_hostnames(dc, tmp_path):
    for n in range(1, 151):   # more than one transaction's worth (etcd allows 128 ops)
        dc.create_instance(instance(n, S1 if n % 2 else S2))
    make_schema_1(dc)
    assert keys_under(dc, "placed") == {}
    store = open_store(store_config(tmp_path, "etcd"))
    assert store.client.get(store.keys.schema)["value"] == "2"
    assert placed_matches_instances(store)
    assert set(keys_under(store, "hostnames")) == {store.keys.hostname("hn0"),
                                                   store.keys.hostname("hn1")}
    assert len(store.list_instances(server_uuid=S2)) == 75


def test_an_upgrade_raced_by_a_move_starts_over_and_ends_right(dc, tmp_path):
    for n in range(1, 4):
        dc.create_instance(instance(n, S1))
    make_schema_1(dc)
    store = store_for(store_config(tmp_path, "etcd"))
    real_txn, raced = store.client.txn, []

    def txn(compares, ops):
        # The first pass read everything and is about to write its copies:
        # another writer moves an instance first (its copy goes under S2), so
        # this pass's copy of it (under S1) is stale when written.
        placed = store.keys.dir("placed")
        if not raced and any(unb64(op.get("request_put", {}).get("key", "")).startswith(placed)
                             for op in ops):
            raced.append(dc.move_instance(instance(2, S1).uuid, 1, server_uuid=S2))
        return real_txn(compares, ops)

    store.client.txn = txn
    store.open()
    assert raced, "the race was not injected"
    assert placed_matches_instances(store)
    assert [i.alias for i in store.list_instances(server_uuid=S2)] == ["sapi2"]


# -- the listing cache ------------------------------------------------------------

@pytest.fixture
def cache(dc):
    cache = ListingCache(dc, idle=2.0)
    thread = threading.Thread(target=cache.run, daemon=True)
    thread.start()
    assert cache.wait(dc.revision(), 20), cache.problem
    yield cache
    cache.stop()
    thread.join(10)
    assert not thread.is_alive(), "a stopped listing cache keeps running"


def listed(cache, store):
    """(cache's, store's) servers and instance columns, compared as the CLI shows them."""
    assert cache.wait(store.revision(), 10), cache.problem
    _, (servers, columns) = cache.read(lambda p: (
        [(d["server"]["hostname"], d["server"]["generation"], d["alive"])
         for d in p.server_docs()],
        p.columns(FIELDS)))
    direct = [(s.hostname, s.generation, s.last_heartbeat > 0) for s in store.list_servers()]
    return (servers, columns), (direct, store.instance_columns(FIELDS))


def test_the_cache_shows_every_write_its_reader_made_before_asking(cache, dc):
    ours, cached = listed(cache, dc)
    assert ours == cached
    dc.create_instance(instance(1, S1))
    dc.create_instance(instance(2, S2, service="napi"))
    dc.put_server(Server(S3, "cn0", "127.0.0.9"))
    a, b = listed(cache, dc)
    assert a == b and len(a[1]["uuid"]) == 2
    dc.set_instance_states([(instance(1, S1).uuid, "stopped", S1, 1)])   # same place, new record
    a, b = listed(cache, dc)
    assert a == b and a[1]["state"] == ["provisioning", "stopped"]   # napi2, sapi1
    dc.move_instances([(instance(1, S1).uuid, 1, {"server_uuid": S3, "alias": "sapi9"})])
    dc.delete_instance(instance(2, S2).uuid)
    dc.delete_server(S2, dc.get_server(S2).generation)
    a, b = listed(cache, dc)
    assert a == b and a[1]["alias"] == ["sapi9"]
    assert cache.loads == 1, "the cache read everything again instead of following"


def test_a_heartbeat_that_runs_out_reaches_the_cache(cache, dc, etcd_server):
    dc.heartbeat(S1)
    wait_for(lambda: cache.read(lambda p: S1 in p.alive)[1], 10, "hn0 alive in the cache")
    etcd_server.revoke_lease_of(dc.keys.heartbeat(S1))
    wait_for(lambda: not cache.read(lambda p: S1 in p.alive)[1], 10,
             "hn0's heartbeat gone from the cache")
    assert listed(cache, dc)[0] == listed(cache, dc)[1]


def test_a_dropped_stream_resumes_after_the_last_change_missing_none(cache, dc):
    for n in range(1, 6):
        wait_for(lambda: cache._response is not None, 10, "the cache following")
        with cache._cond:
            response = cache._response
        _shut(response)                        # the stream breaks ...
        dc.create_instance(instance(n, S1))    # ... while (or just after) this is written
        a, b = listed(cache, dc)
        assert a == b and len(a[1]["uuid"]) == n
    assert cache.loads == 1, "a dropped stream made the cache read everything again"


def test_an_idle_stream_resumes_too(dc):
    cache = ListingCache(dc, idle=0.3)   # the stream is dropped every 0.3 s of silence
    thread = threading.Thread(target=cache.run, daemon=True)
    thread.start()
    try:
        assert cache.wait(dc.revision(), 20), cache.problem
        wait_for(lambda: cache.streams >= 3, 20, "two idle streams dropped and resumed")
        dc.create_instance(instance(1, S1))
        a, b = listed(cache, dc)
        assert a == b and cache.loads == 1
    finally:
        cache.stop()
        thread.join(10)

"""The SQLite store against a real database file (no fakes)."""

import sqlite3
import threading

import pytest

from sdcadm.errors import Conflict, LockHeld, NotFound, StoreError, StoreUnreachable
from sdcadm.model import Image, Instance, Network, Server, Service, Task
from sdcadm.store.migrations import MIGRATIONS
from sdcadm.store.sqlite import SqliteStore

S1 = "11111111-1111-4111-8111-111111111111"
S2 = "22222222-2222-4222-8222-222222222222"
I1 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
IMG = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "dc.sqlite", create=True)
    s.put_server(Server(S1, "hn0", "127.0.0.2", headnode=True))
    s.put_server(Server(S2, "hn1", "127.0.0.3", headnode=True))
    yield s
    s.close()


def inst(**kw):
    base = dict(uuid=I1, alias="sapi0", service="sapi", server_uuid=S1, image=IMG,
                admin_ip="127.0.0.10", port=80, delegate_dataset=True)
    base.update(kw)
    return Instance(**base)


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(StoreUnreachable, match="does not exist") as exc:
        SqliteStore(tmp_path / "nope.sqlite")
    assert "lab up" in str(exc.value)


def test_garbage_file_is_not_a_store(tmp_path):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreUnreachable, match="is not a (usable DC store|database)"):
        SqliteStore(path)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "dc.sqlite"
    SqliteStore(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than"):
        SqliteStore(path)


def test_migrations_are_applied_once(tmp_path):
    path = tmp_path / "dc.sqlite"
    SqliteStore(path, create=True).close()
    s = SqliteStore(path)  # second open must not re-run step 1
    assert s.list_servers() == []
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_wal_mode(store):
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_servers_and_heartbeat(store):
    assert [s.hostname for s in store.list_servers()] == ["hn0", "hn1"]
    store.heartbeat(S1, 1000.5)
    assert store.get_server(S1).last_heartbeat == 1000.5
    # put_server keeps the heartbeat
    store.put_server(Server(S1, "hn0", "127.0.0.2", headnode=True, fenced=True))
    got = store.get_server(S1)
    assert got.last_heartbeat == 1000.5 and got.fenced
    with pytest.raises(NotFound):
        store.heartbeat("33333333-3333-4333-8333-333333333333", 1)


def test_find_server_by_name_or_uuid(store):
    assert store.find_server("hn1").uuid == S2
    assert store.find_server(S1).hostname == "hn0"
    with pytest.raises(NotFound, match="known servers: hn0, hn1"):
        store.find_server("hn9")


def test_instance_cas_bumps_generation(store):
    store.create_instance(inst())
    moved = store.move_instance(I1, 1, server_uuid=S2, admin_ip="127.0.0.11")
    assert (moved.server_uuid, moved.generation, moved.admin_ip) == (S2, 2, "127.0.0.11")
    with pytest.raises(Conflict, match="generation 2, not 1"):
        store.move_instance(I1, 1, server_uuid=S1)
    assert store.get_instance(I1).server_uuid == S2
    with pytest.raises(ValueError):
        store.move_instance(I1, 2, generation=9)


def test_concurrent_cas_exactly_one_wins(store, tmp_path):
    store.create_instance(inst())
    results = []

    def attempt(target):
        s = SqliteStore(tmp_path / "dc.sqlite")
        try:
            s.move_instance(I1, 1, server_uuid=target)
            results.append("won")
        except Conflict:
            results.append("lost")
        finally:
            s.close()

    threads = [threading.Thread(target=attempt, args=(S1 if i % 2 else S2,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]
    assert store.get_instance(I1).generation == 2


def test_state_write_is_fenced_by_owner_and_generation(store):
    store.create_instance(inst())
    assert store.set_instance_state(I1, "running", S1, 1) is True
    store.move_instance(I1, 1, server_uuid=S2)
    # the old owner (or an old generation) cannot write any more
    assert store.set_instance_state(I1, "failed", S1, 1) is False
    assert store.set_instance_state(I1, "failed", S2, 1) is False
    assert store.get_instance(I1).state == "running"
    assert store.set_instance_state(I1, "stopped", S2, 2) is True


def test_duplicate_instance_conflicts(store):
    store.create_instance(inst())
    with pytest.raises(Conflict):
        store.create_instance(inst())
    with pytest.raises(Conflict):  # alias is unique too
        store.create_instance(inst(uuid="cccccccc-cccc-4ccc-8ccc-cccccccccccc"))


def test_list_filters_and_delete(store):
    store.create_instance(inst())
    store.create_instance(inst(uuid="cccccccc-cccc-4ccc-8ccc-cccccccccccc", alias="vmapi0",
                               service="vmapi", server_uuid=S2))
    assert [i.alias for i in store.list_instances()] == ["sapi0", "vmapi0"]
    assert [i.alias for i in store.list_instances(server_uuid=S2)] == ["vmapi0"]
    assert [i.alias for i in store.list_instances(service="sapi")] == ["sapi0"]
    with pytest.raises(Conflict):
        store.delete_instance(I1, expected_generation=5)
    store.delete_instance(I1, expected_generation=1)
    with pytest.raises(NotFound):
        store.get_instance(I1)


def test_ip_allocation(store):
    store.put_network(Network("admin", "127.5.5.0/29", reservations={"127.5.5.1": "gateway"}))
    assert store.allocate_ip("admin", S1) == "127.5.5.2"
    assert store.allocate_ip("admin", S2, "127.5.5.6") == "127.5.5.6"
    with pytest.raises(Conflict, match="already taken"):
        store.allocate_ip("admin", I1, "127.5.5.6")
    with pytest.raises(Conflict, match="not in network"):
        store.allocate_ip("admin", I1, "10.0.0.1")
    for _ in range(3):
        store.allocate_ip("admin", I1)
    with pytest.raises(Conflict, match="no free address"):
        store.allocate_ip("admin", I1)
    store.release_ip("admin", "127.5.5.6")
    assert store.allocate_ip("admin", I1) == "127.5.5.6"
    assert store.get_network("admin").allocations["127.5.5.2"] == S1


def test_lock_owner_expiry_and_token(store):
    t1 = store.acquire_lock("dc", "alice", 10, now=100)
    assert store.acquire_lock("dc", "alice", 10, now=105) == t1  # extend
    with pytest.raises(LockHeld, match="held by alice"):
        store.acquire_lock("dc", "bob", 10, now=110)
    t2 = store.acquire_lock("dc", "bob", 10, now=116)  # alice's expired at 115
    assert t2 > t1
    store.release_lock("dc", "alice")  # not alice's any more: no-op
    assert store.get_lock("dc")[0] == "bob"
    store.release_lock("dc", "bob")
    assert store.get_lock("dc") is None


def test_services_images_tasks_and_revision(store):
    rev = store.revision()
    store.put_service(Service("sapi", IMG, {"ha": False}))
    store.put_image(Image(IMG, "sapi", "1.0.0", "0" * 64, 10))
    store.put_task(Task("dddddddd-dddd-4ddd-8ddd-dddddddddddd", "restore", created=5.0,
                        steps=[{"name": "a", "state": "ok"}]))
    assert store.get_service("sapi").params == {"ha": False}
    assert store.get_image(IMG).size == 10
    assert store.list_tasks()[0].steps == [{"name": "a", "state": "ok"}]
    assert store.revision() == rev + 3
    store.heartbeat(S1, 5)  # liveness is not a model change
    assert store.revision() == rev + 3
    for getter, key in ((store.get_service, "x"), (store.get_image, I1), (store.get_task, I1),
                        (store.get_network, "x")):
        with pytest.raises(NotFound):
            getter(key)


def test_store_file_moved_away_is_unreachable_until_back(store, tmp_path):
    path = tmp_path / "dc.sqlite"
    assert store.list_servers()
    path.rename(tmp_path / "aside")
    with pytest.raises(StoreUnreachable, match="is gone"):
        store.list_servers()
    with pytest.raises(StoreUnreachable):
        store.heartbeat(S1, 1)
    (tmp_path / "aside").rename(path)
    assert [s.hostname for s in store.list_servers()] == ["hn0", "hn1"]

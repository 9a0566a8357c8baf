"""What only the sqlite backend does: a file, WAL, versioned migrations, and
no ``sqlite3`` exception let out. The contract every backend keeps is
test_store_contract.py."""

import sqlite3

import pytest

from sdcadm.errors import StoreError, StoreUnreachable
from sdcadm.model import Server
from sdcadm.store.migrations import MIGRATIONS
from tests.conftest import store_at, store_config, store_outage

S1 = "11111111-1111-4111-8111-111111111111"
S2 = "22222222-2222-4222-8222-222222222222"


@pytest.fixture
def path(tmp_path):
    return tmp_path / "dc.sqlite"


@pytest.fixture
def sqlite_store(path):
    s = store_at(path, create=True)
    s.put_server(Server(S1, "hn0", "127.0.0.2", headnode=True))
    s.put_server(Server(S2, "hn1", "127.0.0.3", headnode=True))
    yield s
    s.close()


def test_missing_database_is_a_clear_error_and_is_not_created(path):
    with pytest.raises(StoreUnreachable, match="does not exist") as exc:
        store_at(path)
    assert "lab up" in str(exc.value)
    assert not path.exists()


def test_an_empty_file_is_not_initialised_and_stays_empty(path):
    path.touch()
    with pytest.raises(StoreError, match="not an initialised sdcadm DC store") as exc:
        store_at(path)
    assert "store.path" in exc.value.hint
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 0


def test_garbage_file_is_not_a_store(path):
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreUnreachable, match="is not a (usable DC store|database)"):
        store_at(path)


def test_newer_schema_is_refused(path):
    store_at(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than"):
        store_at(path)


def test_migrations_are_applied_once(path):
    store_at(path, create=True).close()
    s = store_at(path)  # a second open must not re-run step 1
    assert s.list_servers() == []
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_opening_an_older_schema_upgrades_it(path):
    """A store of schema 2 (before CAS on servers and networks) is upgraded by
    a plain open, keeping its rows (upgrading is not creating)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:2]:
        conn.executescript(step)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO servers (uuid, hostname, admin_ip) VALUES (?, 'hn0', '127.0.0.2')",
                 (S1,))
    conn.close()
    s = store_at(path)
    assert s.get_server(S1).generation == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_wal_mode(sqlite_store):
    assert sqlite_store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_sqlite_exception_leaves_the_backend(sqlite_store, path):
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE services")  # damaged behind the store's back
    conn.close()
    with pytest.raises(StoreError, match="reading the DC store"):
        sqlite_store.list_services()
    from sdcadm.model import Service

    with pytest.raises(StoreError, match="writing the DC store"):
        sqlite_store.put_service(Service("sapi"))


def test_store_file_moved_away_is_unreachable_until_back(sqlite_store, tmp_path):
    assert sqlite_store.list_servers()
    with store_outage(store_config(tmp_path)):
        with pytest.raises(StoreUnreachable, match="is gone") as exc:
            sqlite_store.list_servers()
        assert "etcd" in exc.value.hint  # says how the HA store avoids this
        with pytest.raises(StoreUnreachable):
            sqlite_store.heartbeat(S1)
    assert [s.hostname for s in sqlite_store.list_servers()] == ["hn0", "hn1"]


def test_an_unrelated_sqlite_file_is_refused_and_left_as_it_was(path):
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE recipes (name TEXT)")
    other.execute("INSERT INTO recipes VALUES ('soup')")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match="not an initialised sdcadm DC store"):
        store_at(path)
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["recipes"] and conn.execute("PRAGMA user_version").fetchone()[0] == 0


def test_server_ls_on_an_empty_file_refuses_and_writes_nothing(path, monkeypatch):
    from click.testing import CliRunner

    from sdcadm.cli.main import cli

    path.touch()
    config = path.parent / "sdcadm.yaml"
    config.write_text(f"store: {{path: {path}}}\n")
    monkeypatch.setenv("SDCADM_CONFIG", str(config))
    result = CliRunner().invoke(cli, ["server", "ls"])
    assert result.exit_code == 1 and "not an initialised sdcadm DC store" in result.output
    assert path.stat().st_size == 0


DAMAGES = [
    # (table, column, key column, key, read)
    ("instances", "params", "uuid", "a0000000-0000-4000-8000-000000000001",
     lambda s: s.list_instances()),
    ("instances", "params", "uuid", "a0000000-0000-4000-8000-000000000001",
     lambda s: s.get_instance("a0000000-0000-4000-8000-000000000001")),
    ("services", "params", "name", "sapi", lambda s: s.list_services()),
    ("services", "params", "name", "sapi", lambda s: s.get_service("sapi")),
    ("networks", "reservations", "name", "admin", lambda s: s.get_network("admin")),
    ("networks", "reservations", "name", "admin", lambda s: s.allocate_ip("admin", S1)),
    ("tasks", "steps", "uuid", "b0000000-0000-4000-8000-000000000001", lambda s: s.list_tasks()),
]


@pytest.mark.parametrize("table, column, key_column, key, read", DAMAGES)
@pytest.mark.parametrize("garbage", ["{not json", "[" * 100_000, ""])
def test_a_row_whose_json_does_not_parse_names_the_record(sqlite_store, path, table, column,
                                                          key_column, key, read, garbage):
    from sdcadm.model import Instance, Network, Service, Task

    sqlite_store.put_service(Service("sapi", "c0000000-0000-4000-8000-000000000001",
                                     {"x": 1}))
    sqlite_store.create_instance(Instance("a0000000-0000-4000-8000-000000000001", "sapi0", "sapi",
                                          S1, "c0000000-0000-4000-8000-000000000001",
                                          "127.0.0.9", params={"k": "v"}))
    sqlite_store.put_network(Network("admin", "127.0.0.0/24", {}, {"127.0.0.5": "reserved"}))
    sqlite_store.put_task(Task("b0000000-0000-4000-8000-000000000001", "t", "succeeded", 1.0,
                               steps=[{"name": "s"}]))
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key_column} = ?", (garbage, key))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as exc:
        read(sqlite_store)
    text = str(exc.value)
    assert f"column {column!r} of {table} record {key!r} is not JSON" in text
    assert "repair" in exc.value.hint and len(text) < 1000

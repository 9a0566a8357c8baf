"""SQLite backend of the DC store: one file, WAL, versioned migrations.

Several processes (every agent in the lab, the CLI) share the file; each
thread gets its own connection, and writers wait up to ``timeout`` seconds
for one another (busy timeout). Every method is one transaction, and no
``sqlite3`` exception leaves this module: a constraint violation is
``Conflict``, any other failure ``StoreError``. Time is ``clock`` (injectable
for tests), the one clock heartbeats and lock expiries are measured with.
"""

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sdcadm.errors import Conflict, LockHeld, LockLost, NotFound, StoreError, StoreUnreachable
from sdcadm.model import Image, Instance, Network, RestoreStatus, Server, Service, Task
from sdcadm.store import checks
from sdcadm.store.base import Store, check_instance_fields
from sdcadm.store.migrations import MIGRATIONS

_SERVER_COLS = ("uuid", "hostname", "admin_ip", "headnode", "setup", "boot_platform",
                "current_platform", "last_heartbeat", "fenced", "agent_port", "generation")
# A server record as written (generation and heartbeat are the store's own).
_SERVER_INSERT = ("INSERT INTO servers (uuid, hostname, admin_ip, headnode, setup, boot_platform,"
                  " current_platform, fenced, agent_port) VALUES (?,?,?,?,?,?,?,?,?)")


def _server_values(v):
    return (v["uuid"], v["hostname"], v["admin_ip"], int(v["headnode"]), int(v["setup"]),
            v["boot_platform"], v["current_platform"], int(v["fenced"]), v["agent_port"])


_INSTANCE_COLS = ("uuid", "alias", "service", "server_uuid", "image", "admin_ip", "port",
                  "generation", "delegate_dataset", "state", "params")


def _server(row):
    return Server(uuid=row[0], hostname=row[1], admin_ip=row[2], headnode=bool(row[3]),
                  setup=bool(row[4]), boot_platform=row[5], current_platform=row[6],
                  last_heartbeat=row[7], fenced=bool(row[8]), agent_port=row[9],
                  generation=row[10])


# Why a sqlite store can be out of reach, and what to do about it.
_ONE_FILE = ("The sqlite store is one file on one headnode: if that headnode is lost, bring "
             "its disk back (or copy the file to this headnode and point store.path at it). "
             "The HA store (etcd backend, one member per headnode) removes this dependency.")

_decode = json.JSONDecoder().decode


def _parsed(raw, table, key, column):
    """A JSON column of one row; a damaged one is a StoreError that names the
    record and says how to repair it (never a JSONDecodeError)."""
    try:
        return _decode(raw)
    except (ValueError, TypeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:80]
        raise StoreError(
            f"the DC store is damaged: column {column!r} of {table} record {key!r} is not "
            f"JSON ({reason})",
            hint=f"repair the record, e.g. `sqlite3 <store.path> \"UPDATE {table} SET "
                 f"{column} = '{{}}' WHERE ...\"` for {key!r} and then set its {column} again, "
                 "or put back a copy of the store from before the damage") from None


def _instance(row):
    # Hot path of `sdcadm insts` (50,000 rows): positional construction, and
    # no JSON parse for the common empty params.
    params = {} if row[10] == "{}" else _parsed(row[10], "instances", row[0], "params")
    return Instance(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                    bool(row[8]), row[9], params)


def _instance_filter(service, server_uuid):
    """(`` WHERE ...`` or "", args) selecting instances of a service and/or server."""
    where, args = [], []
    if service is not None:
        where.append("service = ?")
        args.append(service)
    if server_uuid is not None:
        where.append("server_uuid = ?")
        args.append(server_uuid)
    return (" WHERE " + " AND ".join(where) if where else ""), args


class SqliteStore(Store):
    backend = "sqlite"

    def __init__(self, path, timeout=5.0, clock=time.time):
        """No I/O: ``open()`` or ``initialize()`` comes next."""
        self.path = str(path)
        self.timeout = float(timeout)
        self.clock = clock
        self._local = threading.local()
        self._guard = None   # (lock name, token) in a guarded() view
        self._view = False   # a guarded() view shares its store's connections

    # -- lifecycle -----------------------------------------------------------
    def open(self):
        if not Path(self.path).exists():
            raise StoreUnreachable(
                f"the DC store {self.path} does not exist",
                hint="check store.path in the configuration (or SDCADM_STORE_PATH); "
                     "in the lab, run `sdcadm lab up` first. " + _ONE_FILE)
        # Look before touching: opening for writing (WAL) would already write
        # a header into an empty file or change another program's database.
        if self._peek_version() == 0:
            raise self._not_a_store()
        self._schema(create=False)
        return self

    def _peek_version(self):
        """The schema version, read through a read-only connection."""
        try:
            conn = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True,
                                   timeout=self.timeout)
            try:
                return conn.execute("PRAGMA user_version").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise StoreUnreachable(f"{self.path} is not a usable DC store: {e}",
                                   hint="check store.path (or SDCADM_STORE_PATH); "
                                        "nothing was changed") from None

    def _not_a_store(self):
        return StoreError(
            f"{self.path} is not an initialised sdcadm DC store (it has no schema)",
            hint="check store.path (or SDCADM_STORE_PATH); a new DC's store is "
                 "initialised when the DC is created (in the lab: `sdcadm lab up`)")

    def initialize(self):
        if not Path(self.path).exists():
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).touch()  # sqlite takes an empty file as a new database
        self._schema(create=True)
        return self

    def describe(self):
        return f"sqlite store {self.path}"

    # -- plumbing ----------------------------------------------------------
    def _identity(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        # A connection keeps working on a file that was renamed or deleted; the
        # DC store is the file at self.path, so notice when it changed.
        now_id = self._identity()
        if conn is not None and now_id != getattr(self._local, "ident", None):
            conn.close()
            self._local.conn = conn = None
        if now_id is None:
            raise StoreUnreachable(f"the DC store {self.path} is gone (removed or moved away)",
                                   hint="put the store file back, or fix store.path. " + _ONE_FILE)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as e:
                raise StoreUnreachable(f"cannot open the DC store {self.path}: {e}") from None
            self._local.conn, self._local.ident = conn, now_id
        return conn

    @contextmanager
    def _tx(self, guard=True):
        """One write transaction. In a guarded() view (and ``guard``), it first
        checks the lock's token: the check and the write commit together, so
        no write slips in after another owner took the lock."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreUnreachable(f"the DC store {self.path} is busy or unreadable: {e}",
                                   hint="another process holds a long write; retry") from None
        try:
            if guard and self._guard is not None:
                self._check_guard(conn)
            yield conn
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            self._rollback(conn)
            raise Conflict(f"the DC store {self.path} refused a write that conflicts with "
                           f"what it holds: {e}", hint="re-read the record and retry") from None
        except sqlite3.Error as e:
            self._rollback(conn)
            raise StoreError(f"writing the DC store {self.path} failed: {e}",
                             hint="retry; if it persists, check the disk and the file") from None
        except BaseException:
            self._rollback(conn)
            raise

    def _check_guard(self, c):
        name, token = self._guard
        row = c.execute("SELECT owner, token FROM locks WHERE name = ?", (name,)).fetchone()
        if row is None or row[1] != token:
            now = f"it is now held by {row[0]} (token {row[1]})" if row else "it was released"
            raise LockLost(f"lost the DC lock {name!r}: token {token} is void, {now}; "
                           "the write was refused, nothing changed",
                           hint="another operation may have started; check `sdcadm task ls` "
                                "before running this again")

    @staticmethod
    def _rollback(conn):
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # already rolled back by sqlite (e.g. after SQLITE_FULL)

    def _query(self, sql, args=()):
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"reading the DC store {self.path} failed: {e}") from None

    def _schema(self, create):
        """Check the schema version; apply the missing migrations. Without
        ``create``, a database without any (version 0) is refused: opening
        must never turn a wrong path into an empty DC."""
        with self._tx(guard=False) as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the DC store {self.path} has schema version {version}, newer than "
                    f"this sdcadm knows ({len(MIGRATIONS)})", hint="upgrade sdcadm")
            if version == 0 and not create:
                raise self._not_a_store()
            for step in range(version, len(MIGRATIONS)):
                try:
                    for statement in MIGRATIONS[step].split(";"):
                        if statement.strip():
                            c.execute(statement)
                    c.execute(f"PRAGMA user_version = {step + 1}")
                except sqlite3.Error as e:
                    raise StoreError(f"{self.path} is not a usable DC store: schema step "
                                     f"{step + 1} failed: {e}",
                                     hint="check store.path; nothing was changed") from None

    @staticmethod
    def _bump(c):
        c.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")

    def revision(self):
        return self._query("SELECT value FROM meta WHERE key = 'revision'")[0][0]

    def close(self):
        if self._view:
            return  # the store it views owns the connections
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- servers -------------------------------------------------------------
    def put_server(self, server):
        checks.check_server(server)
        v = server.to_dict()
        with self._tx() as c:
            row = c.execute("SELECT uuid FROM servers WHERE hostname = ? AND uuid != ?",
                            (server.hostname, server.uuid)).fetchone()
            if row:
                raise Conflict(f"a server named {server.hostname!r} already exists ({row[0]})",
                               hint="choose another hostname, or delete that server first")
            c.execute(
                _SERVER_INSERT + " ON CONFLICT(uuid) DO UPDATE SET hostname=excluded.hostname,"
                " admin_ip=excluded.admin_ip, headnode=excluded.headnode, setup=excluded.setup,"
                " boot_platform=excluded.boot_platform, current_platform=excluded.current_platform,"
                " fenced=excluded.fenced, agent_port=excluded.agent_port,"
                " generation=generation + 1", _server_values(v))
            self._bump(c)

    def register_server(self, server):
        checks.check_server(server)
        v = server.to_dict()
        with self._tx() as c:
            row = c.execute("SELECT uuid, hostname FROM servers WHERE uuid = ? OR hostname = ?",
                            (server.uuid, server.hostname)).fetchone()
            if row:
                checks.refuse_registration(server, row[0], row[1])
            c.execute(_SERVER_INSERT, _server_values(v))
            self._bump(c)

    def get_server(self, uuid):
        rows = self._query(f"SELECT {', '.join(_SERVER_COLS)} FROM servers WHERE uuid = ?", (uuid,))
        if not rows:
            raise NotFound(f"no server with UUID {uuid}", hint="see `sdcadm server ls`")
        return _server(rows[0])

    def list_servers(self):
        rows = self._query(f"SELECT {', '.join(_SERVER_COLS)} FROM servers ORDER BY hostname")
        return [_server(r) for r in rows]

    def heartbeat(self, server_uuid):
        with self._tx() as c:
            cur = c.execute("UPDATE servers SET last_heartbeat = ? WHERE uuid = ?",
                            (self.clock(), server_uuid))
            if cur.rowcount == 0:
                raise NotFound(f"no server with UUID {server_uuid} in the DC store")

    def set_fenced(self, server_uuid, fenced, expected_generation):
        with self._tx() as c:
            cur = c.execute("UPDATE servers SET fenced = ?, generation = generation + 1 "
                            "WHERE uuid = ? AND generation = ?",
                            (int(fenced), server_uuid, expected_generation))
            if cur.rowcount == 0:
                row = c.execute("SELECT generation FROM servers WHERE uuid = ?",
                                (server_uuid,)).fetchone()
                checks.check_generation("server", server_uuid, row and row[0],
                                        expected_generation)
            self._bump(c)
            row = c.execute(f"SELECT {', '.join(_SERVER_COLS)} FROM servers WHERE uuid = ?",
                            (server_uuid,)).fetchone()
        return _server(row)

    def hostnames(self, of_instances=False):
        if of_instances:
            return dict(self._query("SELECT uuid, hostname FROM servers WHERE uuid IN "
                                    "(SELECT DISTINCT server_uuid FROM instances)"))
        return dict(self._query("SELECT uuid, hostname FROM servers"))

    def delete_server(self, uuid, expected_generation):
        with self._tx() as c:
            row = c.execute("SELECT generation FROM servers WHERE uuid = ?", (uuid,)).fetchone()
            checks.check_generation("server", uuid, row and row[0], expected_generation)
            owned = [r[0] for r in c.execute("SELECT alias FROM instances WHERE server_uuid = ? "
                                             "ORDER BY alias", (uuid,))]
            checks.check_owns_nothing(uuid, owned)
            c.execute("DELETE FROM servers WHERE uuid = ?", (uuid,))
            self._bump(c)

    # -- services ------------------------------------------------------------
    def put_service(self, service):
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO services (name, image, params) VALUES (?,?,?)",
                      (service.name, service.image, json.dumps(service.params, sort_keys=True)))
            self._bump(c)

    def get_service(self, name):
        rows = self._query("SELECT name, image, params FROM services WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no service named {name!r}", hint="see `sdcadm svcs`")
        return Service(rows[0][0], rows[0][1], _parsed(rows[0][2], "services", name, "params"))

    def list_services(self):
        rows = self._query("SELECT name, image, params FROM services ORDER BY name")
        return [Service(r[0], r[1], _parsed(r[2], "services", r[0], "params")) for r in rows]

    # -- instances -----------------------------------------------------------
    def create_instance(self, instance):
        checks.check_instance(instance)
        v = instance.to_dict()
        values = [v[k] for k in _INSTANCE_COLS]
        values[_INSTANCE_COLS.index("delegate_dataset")] = int(v["delegate_dataset"])
        values[_INSTANCE_COLS.index("params")] = json.dumps(v["params"], sort_keys=True)
        with self._tx() as c:
            try:
                c.execute(f"INSERT INTO instances ({', '.join(_INSTANCE_COLS)}) "
                          f"VALUES ({', '.join('?' * len(_INSTANCE_COLS))})", values)
            except sqlite3.IntegrityError as e:
                raise Conflict(f"instance {instance.uuid} ({instance.alias}) already exists: {e}") from None
            self._bump(c)

    def get_instance(self, uuid):
        rows = self._query(f"SELECT {', '.join(_INSTANCE_COLS)} FROM instances WHERE uuid = ?", (uuid,))
        if not rows:
            raise NotFound(f"no instance with UUID {uuid}", hint="see `sdcadm insts`")
        return _instance(rows[0])

    def list_instances(self, service=None, server_uuid=None):
        where, args = _instance_filter(service, server_uuid)
        sql = f"SELECT {', '.join(_INSTANCE_COLS)} FROM instances{where} ORDER BY service, alias"
        return [_instance(r) for r in self._query(sql, args)]

    def instance_columns(self, fields, service=None, server_uuid=None):
        # Only the columns asked for, read in chunks straight into one list per
        # column: no Instance, no row tuple kept (50,000 rows: a fraction of
        # the time and memory of list_instances).
        fields = check_instance_fields(fields)
        where, args = _instance_filter(service, server_uuid)
        read = fields + ("uuid",) if "params" in fields and "uuid" not in fields else fields
        columns = [[] for _ in read]
        try:
            cursor = self._conn().execute(
                f"SELECT {', '.join(read)} FROM instances{where} ORDER BY service, alias", args)
            while chunk := cursor.fetchmany(4096):
                for column, values in zip(columns, zip(*chunk)):
                    column.extend(values)
        except sqlite3.Error as e:
            raise StoreError(f"reading the DC store {self.path} failed: {e}") from None
        out = dict(zip(read, columns))
        if "delegate_dataset" in out:
            out["delegate_dataset"] = list(map(bool, out["delegate_dataset"]))
        if "params" in out:
            out["params"] = [{} if raw == "{}" else _parsed(raw, "instances", uuid, "params")
                             for raw, uuid in zip(out["params"], out["uuid"])]
        return {name: out[name] for name in fields}

    def move_instances(self, moves):
        checks.check_moves(moves)
        moves = [(uuid, gen, self._encoded(changes)) for uuid, gen, changes in moves]
        with self._tx() as c:
            for uuid, expected_generation, changes in moves:
                sets = "".join(f", {k} = ?" for k in changes)
                cur = c.execute(f"UPDATE instances SET generation = generation + 1{sets} "
                                "WHERE uuid = ? AND generation = ?",
                                (*changes.values(), uuid, expected_generation))
                if cur.rowcount == 0:
                    row = c.execute("SELECT generation FROM instances WHERE uuid = ?",
                                    (uuid,)).fetchone()
                    checks.check_generation("instance", uuid, row and row[0], expected_generation)
            self._bump(c)
        return [self.get_instance(uuid) for uuid, _, _ in moves]

    @staticmethod
    def _encoded(changes):
        changes = dict(changes)
        if "params" in changes:
            changes["params"] = json.dumps(changes["params"], sort_keys=True)
        return changes

    def set_instance_states(self, updates):
        owned, changed = [], False
        with self._tx() as c:
            for uuid, state, server_uuid, generation in updates:
                cur = c.execute("UPDATE instances SET state = ? WHERE uuid = ? AND server_uuid = ? "
                                "AND generation = ? AND state != ?",
                                (state, uuid, server_uuid, generation, state))
                changed = changed or cur.rowcount > 0
                owned.append(cur.rowcount > 0 or c.execute(
                    "SELECT 1 FROM instances WHERE uuid = ? AND server_uuid = ? AND generation = ?",
                    (uuid, server_uuid, generation)).fetchone() is not None)
            if changed:
                self._bump(c)
        return owned

    def delete_instance(self, uuid, expected_generation=None):
        with self._tx() as c:
            if expected_generation is None:
                c.execute("DELETE FROM instances WHERE uuid = ?", (uuid,))
            else:
                cur = c.execute("DELETE FROM instances WHERE uuid = ? AND generation = ?",
                                (uuid, expected_generation))
                if cur.rowcount == 0 and c.execute(
                        "SELECT 1 FROM instances WHERE uuid = ?", (uuid,)).fetchone():
                    raise Conflict(f"instance {uuid} changed generation; not deleted")
            self._bump(c)

    # -- images --------------------------------------------------------------
    def put_image(self, image):
        checks.check_image(image)
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO images (uuid, name, version, sha256, size, origin) "
                      "VALUES (?,?,?,?,?,?)",
                      (image.uuid, image.name, image.version, image.sha256, image.size, image.origin))
            self._bump(c)

    def get_image(self, uuid):
        rows = self._query("SELECT uuid, name, version, sha256, size, origin FROM images "
                           "WHERE uuid = ?", (uuid,))
        if not rows:
            raise NotFound(f"no image with UUID {uuid}")
        return Image(*rows[0])

    def list_images(self):
        return [Image(*r) for r in self._query(
            "SELECT uuid, name, version, sha256, size, origin FROM images ORDER BY name, version")]

    # -- networks --------------------------------------------------------------
    def put_network(self, network, expected_revision=None):
        checks.check_network(network)
        reservations = json.dumps(network.reservations, sort_keys=True)
        quarantine = json.dumps(network.quarantine, sort_keys=True)
        with self._tx() as c:
            row = c.execute("SELECT revision FROM networks WHERE name = ?",
                            (network.name,)).fetchone()
            if expected_revision is None:
                if row is not None:
                    raise Conflict(f"network {network.name!r} already exists (revision {row[0]})",
                                   hint="to replace it, read it and pass its revision")
                revision = 1
                c.execute("INSERT INTO networks (name, cidr, reservations, revision, quarantine) "
                          "VALUES (?,?,?,?,?)", (network.name, network.cidr, reservations,
                                                 revision, quarantine))
            else:
                if row is None:
                    raise NotFound(f"no network named {network.name!r}")
                if row[0] != expected_revision:
                    raise Conflict(f"network {network.name!r} is at revision {row[0]}, not "
                                   f"{expected_revision}: someone else changed it",
                                   hint="re-read the network and retry")
                revision = row[0] + 1
                c.execute("UPDATE networks SET cidr = ?, reservations = ?, revision = ?, "
                          "quarantine = ? WHERE name = ?",
                          (network.cidr, reservations, revision, quarantine, network.name))
            c.execute("DELETE FROM ip_allocations WHERE network = ?", (network.name,))
            c.executemany("INSERT INTO ip_allocations (network, ip, owner) VALUES (?,?,?)",
                          [(network.name, ip, o) for ip, o in network.allocations.items()])
            self._bump(c)
        return Network(network.name, network.cidr, dict(network.allocations),
                       dict(network.reservations), revision, dict(network.quarantine))

    def get_network(self, name):
        return self._network(self._conn(), name)

    def _network(self, c, name):
        try:
            row = c.execute("SELECT name, cidr, reservations, revision, quarantine FROM networks "
                            "WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no network named {name!r}")
            allocs = dict(c.execute("SELECT ip, owner FROM ip_allocations WHERE network = ?",
                                    (name,)).fetchall())
        except sqlite3.Error as e:
            raise StoreError(f"reading the DC store {self.path} failed: {e}") from None
        return Network(row[0], row[1], allocs, _parsed(row[2], "networks", name, "reservations"),
                       row[3], _parsed(row[4], "networks", name, "quarantine"))

    def allocate_ip(self, network, owner_uuid, ip=None):
        checks.check_address(network, ip)
        with self._tx() as c:
            net = self._network(c, network)
            ip = checks.choose_address(net, owner_uuid, ip, self.now())
            c.execute("INSERT OR REPLACE INTO ip_allocations (network, ip, owner) VALUES (?,?,?)",
                      (network, ip, owner_uuid))
            c.execute("UPDATE networks SET revision = revision + 1 WHERE name = ?", (network,))
            self._bump(c)
        return ip

    def release_ip(self, network, ip, quarantine=0.0):
        with self._tx() as c:
            try:
                net = self._network(c, network)
            except NotFound:
                return
            owner = net.allocations.get(ip)
            held = checks.quarantine_after_release(net.quarantine, ip, owner, self.now(),
                                                   quarantine)
            c.execute("DELETE FROM ip_allocations WHERE network = ? AND ip = ?", (network, ip))
            c.execute("UPDATE networks SET revision = revision + 1, quarantine = ? WHERE name = ?",
                      (json.dumps(held, sort_keys=True), network))
            self._bump(c)

    # -- tasks -----------------------------------------------------------------
    def put_task(self, task):
        checks.check_task(task)
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO tasks (uuid, name, state, created, started, finished,"
                      " steps, error) VALUES (?,?,?,?,?,?,?,?)",
                      (task.uuid, task.name, task.state, task.created, task.started, task.finished,
                       json.dumps(task.steps), task.error))
            self._bump(c)

    def _task(self, r):
        return Task(r[0], r[1], r[2], r[3], r[4], r[5], _parsed(r[6], "tasks", r[0], "steps"), r[7])

    def get_task(self, uuid):
        rows = self._query("SELECT uuid, name, state, created, started, finished, steps, error "
                           "FROM tasks WHERE uuid = ?", (uuid,))
        if not rows:
            raise NotFound(f"no task with UUID {uuid}")
        return self._task(rows[0])

    def list_tasks(self, limit=50):
        return [self._task(r) for r in self._query(
            "SELECT uuid, name, state, created, started, finished, steps, error FROM tasks "
            "ORDER BY created DESC LIMIT ?", (limit,))]

    # -- lock ----------------------------------------------------------------
    def acquire_lock(self, name, owner, ttl):
        # Lock calls are never guarded: taking, renewing and releasing the lock
        # is how its token comes and goes.
        with self._tx(guard=False) as c:
            now = self.clock()
            row = c.execute("SELECT owner, expires_at, token FROM locks WHERE name = ?",
                            (name,)).fetchone()
            if row and row[0] != owner and row[1] > now:
                raise LockHeld(name, row[0], row[1], expires_in=row[1] - now)
            if row and row[0] == owner:
                token = row[2]
            else:
                c.execute("UPDATE meta SET value = value + 1 WHERE key = 'lock_token'")
                token = c.execute("SELECT value FROM meta WHERE key = 'lock_token'").fetchone()[0]
            c.execute("INSERT OR REPLACE INTO locks (name, owner, expires_at, token) VALUES (?,?,?,?)",
                      (name, owner, now + ttl, token))
        return token

    def release_lock(self, name, owner):
        with self._tx(guard=False) as c:
            c.execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, owner))

    def get_lock(self, name):
        rows = self._query("SELECT owner, expires_at, token FROM locks WHERE name = ?", (name,))
        return tuple(rows[0]) if rows else None

    # -- restore-data status -------------------------------------------------------
    _RESTORE_COLS = ("receiver", "service", "instance", "alias", "source", "snapshot", "guid",
                     "bytes", "duration", "last_success", "last_attempt", "status", "error",
                     "vanished")

    def put_restore_status(self, status):
        checks.check_restore_status(status)
        v = status.to_dict()
        cols = self._RESTORE_COLS
        with self._tx() as c:
            c.execute(f"INSERT OR REPLACE INTO restore_data_status ({', '.join(cols)}) "
                      f"VALUES ({', '.join('?' * len(cols))})", [v[k] for k in cols])

    def list_restore_status(self, receiver=None):
        sql = f"SELECT {', '.join(self._RESTORE_COLS)} FROM restore_data_status"
        args = ()
        if receiver is not None:
            sql, args = sql + " WHERE receiver = ?", (receiver,)
        rows = self._query(sql + " ORDER BY receiver, service, alias, instance", args)
        return [RestoreStatus(*r) for r in rows]

    def delete_restore_status(self, receiver, instance):
        with self._tx() as c:
            c.execute("DELETE FROM restore_data_status WHERE receiver = ? AND instance = ?",
                      (receiver, instance))

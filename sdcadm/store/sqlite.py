"""SQLite backend of the DC store: one file, WAL, versioned migrations.

Several processes (every agent in the lab, the CLI) share the file; each
thread gets its own connection, and writers wait up to ``timeout`` seconds
for one another (busy timeout). Every method is one transaction.
"""

import ipaddress
import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from sdcadm.errors import Conflict, LockHeld, NotFound, StoreError, StoreUnreachable
from sdcadm.model import Image, Instance, Network, Server, Service, Task
from sdcadm.store.base import Store
from sdcadm.store.migrations import MIGRATIONS

_SERVER_COLS = ("uuid", "hostname", "admin_ip", "headnode", "setup", "boot_platform",
                "current_platform", "last_heartbeat", "fenced", "agent_port")
_INSTANCE_COLS = ("uuid", "alias", "service", "server_uuid", "image", "admin_ip", "port",
                  "generation", "delegate_dataset", "state", "params")
_INSTANCE_MUTABLE = {"server_uuid", "admin_ip", "port", "state", "image", "alias", "params"}


def _server(row):
    return Server(uuid=row[0], hostname=row[1], admin_ip=row[2], headnode=bool(row[3]),
                  setup=bool(row[4]), boot_platform=row[5], current_platform=row[6],
                  last_heartbeat=row[7], fenced=bool(row[8]), agent_port=row[9])


_decode = json.JSONDecoder().decode


def _instance(row):
    # Hot path of `sdcadm insts` (50,000 rows): positional construction, and
    # no JSON parse for the common empty params.
    params = {} if row[10] == "{}" else _decode(row[10])
    return Instance(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                    bool(row[8]), row[9], params)


class SqliteStore(Store):
    backend = "sqlite"

    def __init__(self, path, create=False, timeout=5.0):
        self.path = str(path)
        self.timeout = float(timeout)
        self._local = threading.local()
        if not Path(self.path).exists():
            if not create:
                raise StoreUnreachable(
                    f"the DC store {self.path} does not exist",
                    hint="check store.path in the configuration (or SDCADM_STORE_PATH); "
                         "in the lab, run `sdcadm lab up` first")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).touch()  # sqlite takes an empty file as a new database
        self._migrate()

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
                                   hint="put the store file back, or fix store.path")
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
    def _tx(self, write=True):
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as e:
            raise StoreUnreachable(f"the DC store {self.path} is busy or unreadable: {e}",
                                   hint="another process holds a long write; retry") from None
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            self._rollback(conn)
            if isinstance(e, sqlite3.IntegrityError):
                raise  # callers map constraint violations to Conflict
            raise StoreError(f"writing the DC store {self.path} failed: {e}",
                             hint="retry; if it persists, check the disk and the file") from None
        except BaseException:
            self._rollback(conn)
            raise

    @staticmethod
    def _rollback(conn):
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # already rolled back by sqlite (e.g. after SQLITE_FULL)

    def _query(self, sql, args=()):
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"reading the DC store {self.path} failed: {e}") from None

    def _migrate(self):
        try:
            with self._tx() as c:
                version = c.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise StoreError(
                        f"the DC store {self.path} has schema version {version}, newer than "
                        f"this sdcadm knows ({len(MIGRATIONS)})", hint="upgrade sdcadm")
                for step in range(version, len(MIGRATIONS)):
                    for statement in MIGRATIONS[step].split(";"):
                        if statement.strip():
                            c.execute(statement)
                    c.execute(f"PRAGMA user_version = {step + 1}")
        except sqlite3.DatabaseError as e:
            raise StoreUnreachable(f"{self.path} is not a usable DC store: {e}") from None

    @staticmethod
    def _bump(c):
        c.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")

    def revision(self):
        return self._query("SELECT value FROM meta WHERE key = 'revision'")[0][0]

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- servers -------------------------------------------------------------
    def put_server(self, server):
        v = server.to_dict()
        with self._tx() as c:
            c.execute(
                "INSERT INTO servers (uuid, hostname, admin_ip, headnode, setup, boot_platform,"
                " current_platform, fenced, agent_port) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(uuid) DO UPDATE SET hostname=excluded.hostname,"
                " admin_ip=excluded.admin_ip, headnode=excluded.headnode, setup=excluded.setup,"
                " boot_platform=excluded.boot_platform, current_platform=excluded.current_platform,"
                " fenced=excluded.fenced, agent_port=excluded.agent_port",
                (v["uuid"], v["hostname"], v["admin_ip"], int(v["headnode"]), int(v["setup"]),
                 v["boot_platform"], v["current_platform"], int(v["fenced"]), v["agent_port"]))
            self._bump(c)

    def get_server(self, uuid):
        rows = self._query(f"SELECT {', '.join(_SERVER_COLS)} FROM servers WHERE uuid = ?", (uuid,))
        if not rows:
            raise NotFound(f"no server with UUID {uuid}", hint="see `sdcadm server ls`")
        return _server(rows[0])

    def list_servers(self):
        rows = self._query(f"SELECT {', '.join(_SERVER_COLS)} FROM servers ORDER BY hostname")
        return [_server(r) for r in rows]

    def heartbeat(self, server_uuid, now):
        with self._tx() as c:
            cur = c.execute("UPDATE servers SET last_heartbeat = ? WHERE uuid = ?", (now, server_uuid))
            if cur.rowcount == 0:
                raise NotFound(f"no server with UUID {server_uuid} in the DC store")

    def set_fenced(self, server_uuid, fenced):
        with self._tx() as c:
            cur = c.execute("UPDATE servers SET fenced = ? WHERE uuid = ?", (int(fenced), server_uuid))
            if cur.rowcount == 0:
                raise NotFound(f"no server with UUID {server_uuid}")
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
        return Service(rows[0][0], rows[0][1], json.loads(rows[0][2]))

    def list_services(self):
        rows = self._query("SELECT name, image, params FROM services ORDER BY name")
        return [Service(r[0], r[1], json.loads(r[2])) for r in rows]

    # -- instances -----------------------------------------------------------
    def create_instance(self, instance):
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
        where, args = [], []
        if service is not None:
            where.append("service = ?")
            args.append(service)
        if server_uuid is not None:
            where.append("server_uuid = ?")
            args.append(server_uuid)
        sql = f"SELECT {', '.join(_INSTANCE_COLS)} FROM instances"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_instance(r) for r in self._query(sql + " ORDER BY service, alias", args)]

    def move_instance(self, uuid, expected_generation, **changes):
        bad = set(changes) - _INSTANCE_MUTABLE
        if bad:
            raise ValueError(f"cannot change {', '.join(sorted(bad))} of an instance")
        if "params" in changes:
            changes["params"] = json.dumps(changes["params"], sort_keys=True)
        sets = "".join(f", {k} = ?" for k in changes)
        with self._tx() as c:
            cur = c.execute(f"UPDATE instances SET generation = generation + 1{sets} "
                            "WHERE uuid = ? AND generation = ?",
                            (*changes.values(), uuid, expected_generation))
            if cur.rowcount == 0:
                row = c.execute("SELECT generation FROM instances WHERE uuid = ?", (uuid,)).fetchone()
                if row is None:
                    raise NotFound(f"no instance with UUID {uuid}")
                raise Conflict(f"instance {uuid} is at generation {row[0]}, "
                               f"not {expected_generation}: someone else moved it",
                               hint="re-read the instance and retry")
            self._bump(c)
        return self.get_instance(uuid)

    def set_instance_state(self, uuid, state, server_uuid, generation):
        with self._tx() as c:
            cur = c.execute("UPDATE instances SET state = ? WHERE uuid = ? AND server_uuid = ? "
                            "AND generation = ? AND state != ?",
                            (state, uuid, server_uuid, generation, state))
            if cur.rowcount:
                self._bump(c)
                return True
            row = c.execute("SELECT 1 FROM instances WHERE uuid = ? AND server_uuid = ? "
                            "AND generation = ?", (uuid, server_uuid, generation)).fetchone()
            return row is not None

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
    def put_network(self, network):
        ipaddress.ip_network(network.cidr)  # ValueError on nonsense; callers validate first
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO networks (name, cidr, reservations) VALUES (?,?,?)",
                      (network.name, network.cidr, json.dumps(network.reservations, sort_keys=True)))
            c.execute("DELETE FROM ip_allocations WHERE network = ?", (network.name,))
            c.executemany("INSERT INTO ip_allocations (network, ip, owner) VALUES (?,?,?)",
                          [(network.name, ip, o) for ip, o in network.allocations.items()])
            self._bump(c)

    def get_network(self, name):
        rows = self._query("SELECT name, cidr, reservations FROM networks WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no network named {name!r}")
        allocs = dict(self._query("SELECT ip, owner FROM ip_allocations WHERE network = ?", (name,)))
        return Network(rows[0][0], rows[0][1], allocs, json.loads(rows[0][2]))

    def allocate_ip(self, network, owner_uuid, ip=None):
        with self._tx() as c:
            row = c.execute("SELECT cidr, reservations FROM networks WHERE name = ?",
                            (network,)).fetchone()
            if row is None:
                raise NotFound(f"no network named {network!r}")
            net, reserved = ipaddress.ip_network(row[0]), json.loads(row[1])
            taken = {r[0]: r[1] for r in c.execute(
                "SELECT ip, owner FROM ip_allocations WHERE network = ?", (network,))}
            if ip is not None:
                if ipaddress.ip_address(ip) not in net:
                    raise Conflict(f"{ip} is not in network {network} ({row[0]})")
                if taken.get(ip) not in (None, owner_uuid) or ip in reserved:
                    raise Conflict(f"{ip} on network {network} is already taken")
            else:
                ip = next((str(a) for a in net.hosts()
                           if str(a) not in taken and str(a) not in reserved), None)
                if ip is None:
                    raise Conflict(f"network {network} ({row[0]}) has no free address")
            c.execute("INSERT OR REPLACE INTO ip_allocations (network, ip, owner) VALUES (?,?,?)",
                      (network, ip, owner_uuid))
            self._bump(c)
        return ip

    def release_ip(self, network, ip):
        with self._tx() as c:
            c.execute("DELETE FROM ip_allocations WHERE network = ? AND ip = ?", (network, ip))
            self._bump(c)

    # -- tasks -----------------------------------------------------------------
    def put_task(self, task):
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO tasks (uuid, name, state, created, started, finished,"
                      " steps, error) VALUES (?,?,?,?,?,?,?,?)",
                      (task.uuid, task.name, task.state, task.created, task.started, task.finished,
                       json.dumps(task.steps), task.error))
            self._bump(c)

    def _task(self, r):
        return Task(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7])

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
    def acquire_lock(self, name, owner, ttl, now):
        with self._tx() as c:
            row = c.execute("SELECT owner, expires_at, token FROM locks WHERE name = ?",
                            (name,)).fetchone()
            if row and row[0] != owner and row[1] > now:
                raise LockHeld(name, row[0], row[1])
            if row and row[0] == owner:
                token = row[2]
            else:
                c.execute("UPDATE meta SET value = value + 1 WHERE key = 'lock_token'")
                token = c.execute("SELECT value FROM meta WHERE key = 'lock_token'").fetchone()[0]
            c.execute("INSERT OR REPLACE INTO locks (name, owner, expires_at, token) VALUES (?,?,?,?)",
                      (name, owner, now + ttl, token))
        return token

    def release_lock(self, name, owner):
        with self._tx() as c:
            c.execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, owner))

    def get_lock(self, name):
        rows = self._query("SELECT owner, expires_at, token FROM locks WHERE name = ?", (name,))
        return tuple(rows[0]) if rows else None

    # -- restore-data status -------------------------------------------------------
    _RESTORE_COLS = ("receiver", "service", "instance", "alias", "source", "snapshot", "guid",
                     "bytes", "duration", "last_success", "last_attempt", "status", "error")

    def put_restore_status(self, status):
        v = status.to_dict()
        cols = self._RESTORE_COLS
        with self._tx() as c:
            c.execute(f"INSERT OR REPLACE INTO restore_data_status ({', '.join(cols)}) "
                      f"VALUES ({', '.join('?' * len(cols))})", [v[k] for k in cols])

    def list_restore_status(self, receiver=None):
        from sdcadm.restore_data.status import RestoreStatus

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

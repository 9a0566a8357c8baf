"""etcd backend of the DC store: the HA store (one etcd member per headnode).

Every write is one etcd transaction that compares what it read:

* a model write reads ``meta/revision`` first and compares its mod revision
  at commit, so the whole model it read is unchanged when it commits (as
  sqlite's one writer at a time); it also compares the mod revision of each
  record it read (the compare-and-swaps of ``move_instance``, ``set_fenced``,
  ``put_network``, ``allocate_ip``), and puts ``meta/revision`` + 1;
* a write in a ``guarded()`` view also compares the create revision of the
  lock key with its token;
* a transaction whose compares fail changed nothing: it is read and decided
  again (``_write``), and the decision may now be ``Conflict``.

Liveness is etcd's, never a comparison of clocks: a heartbeat key and a lock
key are bound to leases, which etcd deletes when they are not refreshed. The
``clock`` only stamps times for display (``last_heartbeat``, a lock's
``expires_at``) and is ``now()``.
"""

import math
import threading
import time

from sdcadm.errors import Conflict, LockLost, NotFound, StoreError
from sdcadm.model import Image, Instance, Network, RestoreStatus, Server, Service, Task
from sdcadm.store import checks
from sdcadm.store.base import Store
from sdcadm.store.etcd_client import (EtcdClient, Watch, delete, put, read, same_create,
                                      same_mod)
from sdcadm.store.etcd_keys import SCHEMA_VERSION, Keys, decode, encode, record
from sdcadm.store.etcd_leases import Leases

# A transaction lost to concurrent writers is decided again; a store this busy
# for this long is not going to calm down by itself.
_ATTEMPTS = 200
_STATES_PER_TXN = 50


def _listed(instances):
    """Instances in ``list_instances``' order: by service, then alias."""
    return sorted(instances, key=lambda i: (i.service, i.alias))


class _Reads:
    """What one attempt read, to compare at commit."""

    def __init__(self, client):
        self.client, self.compares = client, []

    def get(self, key):
        return self.get_many([key])[0]

    def get_many(self, keys):
        """Several keys in one round trip (a read-only transaction)."""
        if not keys:
            return []
        if len(keys) == 1:
            kvs = [self.client.get(keys[0])]
        else:
            kvs = [found[0] if found else None
                   for found in self.client.txn_read([], [read(k) for k in keys])[2]]
        self.compares += [same_mod(k, kv["mod_revision"] if kv else 0) for k, kv in zip(keys, kvs)]
        return kvs


class EtcdStore(Leases, Store):
    backend = "etcd"

    def __init__(self, endpoints, prefix="/sdcadm/", timeout=5.0, heartbeat_ttl=15.0,
                 clock=time.time):
        """No I/O: ``open()`` or ``initialize()`` comes next."""
        self.client = EtcdClient(endpoints, float(timeout))
        self.keys = Keys(prefix)
        self.heartbeat_ttl = max(1, math.ceil(heartbeat_ttl))
        self.clock = clock
        self._leases = {}  # server uuid -> the lease of its heartbeat key
        self._leases_mutex = threading.Lock()
        self._guard = None  # (lock name, token) in a guarded() view
        self._view = False

    # -- lifecycle -----------------------------------------------------------
    def open(self):
        kv = self.client.get(self.keys.schema)
        if kv is None:
            raise StoreError(
                f"{self.describe()} is not an initialised sdcadm DC store (it has no "
                f"{self.keys.schema} key)",
                hint="check store.etcd_endpoints and store.etcd_prefix; a new DC's store is "
                     "initialised when the DC is created (in the lab: `sdcadm lab up`)")
        version = decode(kv)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StoreError(f"{self.describe()} has schema version {version!r}, newer than "
                             f"this sdcadm knows ({SCHEMA_VERSION})", hint="upgrade sdcadm")
        if version < 2:
            self._upgrade()
        return self

    def _upgrade(self):
        """Schema 1 -> 2: the ``placed/`` copy of every instance and the
        ``hostnames/`` key of every server, then ``meta/schema`` = 2, which
        commits only if ``meta/revision`` did not move meanwhile (every model
        write moves it): a write that raced the copy makes it start over, so
        the copies are complete and right when the version says so. Writers of
        this version keep them from then on; ``open()`` returns only after it."""
        dirs = [self.keys.dir(kind) for kind in ("servers", "instances", "placed", "hostnames")]
        for _ in range(_ATTEMPTS):
            _, _, (revision, servers, instances, placed, hostnames) = self.client.txn_read(
                [], [read(self.keys.revision)] + [read(d, prefix=True) for d in dirs])
            want = {}
            for kv in instances:
                inst = record(Instance, kv)
                want[self.keys.placed(inst.server_uuid, inst.uuid)] = kv["value"]
            for kv in servers:
                server = record(Server, kv)
                want[self.keys.hostname(server.hostname)] = encode(server.uuid)
            have = {kv["key"]: kv["value"] for kv in placed + hostnames}
            ops = ([put(k, v) for k, v in want.items() if have.get(k) != v]
                   + [delete(k) for k in have if k not in want])
            for start in range(0, len(ops), 100):   # etcd's --max-txn-ops is 128
                self.client.txn([], ops[start:start + 100])
            mod = revision[0]["mod_revision"] if revision else 0
            ok, _ = self.client.txn([same_mod(self.keys.revision, mod)],
                                    [put(self.keys.schema, encode(SCHEMA_VERSION))])
            if ok:
                return
        raise StoreError(f"{self.describe()}: upgrading the schema lost to other writers "
                         f"{_ATTEMPTS} times", hint="retry when the DC is quieter")

    def initialize(self):
        # Each key only if it is missing: idempotent, never resets the revision
        # of a store in use; the revision first, so a store with a schema key
        # always has one.
        for key, value in ((self.keys.revision, 0), (self.keys.schema, SCHEMA_VERSION)):
            self.client.txn([same_create(key, 0)], [put(key, encode(value))])
        return self.open()

    def describe(self):
        return f"etcd store {self.keys.prefix} at {self.client.describe()}"

    def close(self):
        pass  # HTTP sessions close with the process; leases end by themselves

    def revision(self):
        kv = self.client.get(self.keys.revision)
        return decode(kv) if kv else 0

    # -- plumbing ------------------------------------------------------------
    def _write(self, decide, model=True):
        """Read, decide, commit if nothing read changed meanwhile; again otherwise.

        ``decide(reads)`` reads through ``reads.get`` and returns ``(ops,
        result)``; ops None: nothing to write. Raising (Conflict, NotFound)
        refuses the write."""
        for _ in range(_ATTEMPTS):
            reads = _Reads(self.client)
            revision = reads.get(self.keys.revision) if model else None
            compares = self._guard_compares()
            ops, result = decide(reads)
            if ops is None:
                return result
            if model and revision is None:
                raise StoreError(f"{self.describe()} has no {self.keys.revision} key",
                                 hint="initialise the store again (it adds the missing key; in the "
                                      "lab: `sdcadm lab up`), or restore a snapshot of it")
            if model:
                ops = [*ops, put(self.keys.revision, encode(decode(revision) + 1))]
            ok, _ = self.client.txn(reads.compares + compares, ops)
            if ok:
                return result
        raise StoreError(f"{self.describe()}: a write lost to other writers {_ATTEMPTS} times",
                         hint="the store is very busy; retry")

    def _guard_compares(self):
        if self._guard is None:
            return []
        name, token = self._guard
        kv = self.client.get(self.keys.lock(name))
        if kv is None or kv["create_revision"] != token:
            now = (f"it is now held by {decode(kv).get('owner')} (token {kv['create_revision']})"
                   if kv else "it was released (or its lease ran out)")
            raise LockLost(f"lost the DC lock {name!r}: token {token} is void, {now}; "
                           "the write was refused, nothing changed",
                           hint="another operation may have started; check `sdcadm task ls` "
                                "before running this again")
        return [same_create(self.keys.lock(name), token)]

    def _all(self, cls, kind):
        return [record(cls, kv) for kv in self.client.prefix(self.keys.dir(kind))]

    def _one(self, cls, key, what):
        kv = self.client.get(key)
        if kv is None:
            raise NotFound(what)
        return record(cls, kv)

    # -- servers -------------------------------------------------------------
    def _with_heartbeat(self, server, beat):
        # While etcd keeps the heartbeat key, the server's lease is alive now:
        # that, not the age of its last write, is what makes it running (a
        # leader election can hold writes back for seconds; the new leader
        # extends every lease, so no agent reads as gone meanwhile). Once etcd
        # ended the lease, the key is gone: 0, unreachable whatever the clocks.
        server.last_heartbeat = self.clock() if beat else 0.0
        return server

    def put_server(self, server):
        checks.check_server(server)

        def decide(reads):
            # hostnames/<name> is read and compared: no other server can take
            # the hostname between this read and the commit.
            old, owner = reads.get_many([self.keys.server(server.uuid),
                                         self.keys.hostname(server.hostname)])
            if owner is not None and decode(owner) != server.uuid:
                raise Conflict(f"a server named {server.hostname!r} already exists "
                               f"({decode(owner)})",
                               hint="choose another hostname, or delete that server first")
            value = server.to_dict()
            value.pop("last_heartbeat")  # the heartbeat key's, not the record's
            value["generation"] = record(Server, old).generation + 1 if old else 1
            ops = [put(self.keys.server(server.uuid), encode(value)),
                   put(self.keys.hostname(server.hostname), encode(server.uuid))]
            if old is not None and record(Server, old).hostname != server.hostname:
                ops.append(delete(self.keys.hostname(record(Server, old).hostname)))
            return ops, None

        self._write(decide)

    def register_server(self, server):
        checks.check_server(server)

        def decide(reads):
            # Both keys are read and compared: nobody registers the UUID or
            # takes the hostname between this read and the commit.
            old, owner = reads.get_many([self.keys.server(server.uuid),
                                         self.keys.hostname(server.hostname)])
            if old is not None:
                checks.refuse_registration(server, server.uuid, record(Server, old).hostname)
            if owner is not None:
                checks.refuse_registration(server, decode(owner), server.hostname)
            value = server.to_dict()
            value.pop("last_heartbeat")
            value["generation"] = 1
            return [put(self.keys.server(server.uuid), encode(value)),
                    put(self.keys.hostname(server.hostname), encode(server.uuid))], None

        self._write(decide)

    def get_server(self, uuid):
        server = self._one(Server, self.keys.server(uuid), f"no server with UUID {uuid}")
        return self._with_heartbeat(server, self.client.get(self.keys.heartbeat(uuid)))

    def list_servers(self):
        beats = {kv["key"]: kv for kv in self.client.prefix(self.keys.dir("heartbeats"))}
        servers = [self._with_heartbeat(s, beats.get(self.keys.heartbeat(s.uuid)))
                   for s in self._all(Server, "servers")]
        return sorted(servers, key=lambda s: s.hostname)

    def assignment(self, server_uuid):
        _, _, (server, beat, instances, revision) = self.client.txn_read([], [
            read(self.keys.server(server_uuid)), read(self.keys.heartbeat(server_uuid)),
            read(self.keys.placed(server_uuid), prefix=True), read(self.keys.revision)])
        # No record (a server its agent has not registered yet): None, as sqlite says.
        server = self._with_heartbeat(record(Server, server[0]), beat and beat[0]) if server \
            else None
        return (server, self._assigned(instances, server_uuid),
                decode(revision[0]) if revision else 0)

    def watch_assignment(self, server_uuid, on_change):
        # Only this server's copies: an instance moved here is put under its
        # prefix, one moved away deleted from it, one changed rewritten there.
        return Watch(self.client, self.keys.placed(server_uuid), lambda kv, prev: on_change())

    @staticmethod
    def _assigned(instance_kvs, server_uuid):
        """The instances of ``server_uuid`` among key-values of instances, in
        ``list_instances``' order."""
        return _listed(i for i in (record(Instance, kv) for kv in instance_kvs)
                       if i.server_uuid == server_uuid)

    def set_fenced(self, server_uuid, fenced, expected_generation):
        def decide(reads):
            kv = reads.get(self.keys.server(server_uuid))
            server = kv and record(Server, kv)
            checks.check_generation("server", server_uuid, server and server.generation,
                                    expected_generation)
            server.fenced, server.generation = bool(fenced), server.generation + 1
            value = server.to_dict()
            value.pop("last_heartbeat")
            return [put(kv["key"], encode(value))], server

        server = self._write(decide)
        return self._with_heartbeat(server, self.client.get(self.keys.heartbeat(server_uuid)))

    def delete_server(self, uuid, expected_generation):
        def decide(reads):
            kv = reads.get(self.keys.server(uuid))
            checks.check_generation("server", uuid, kv and record(Server, kv).generation,
                                    expected_generation)
            # meta/revision is compared: no instance can be assigned to it meanwhile.
            owned = sorted(record(Instance, kv).alias
                           for kv in self.client.prefix(self.keys.placed(uuid)))
            checks.check_owns_nothing(uuid, owned)
            return [delete(kv["key"]), delete(self.keys.heartbeat(uuid)),
                    delete(self.keys.hostname(record(Server, kv).hostname))], None

        self._write(decide)

    # -- services ------------------------------------------------------------
    def put_service(self, service):
        self._write(lambda reads: ([put(self.keys.service(service.name),
                                        encode(service.to_dict()))], None))

    def get_service(self, name):
        return self._one(Service, self.keys.service(name), f"no service named {name!r}")

    def list_services(self):
        return sorted(self._all(Service, "services"), key=lambda s: s.name)

    # -- instances -----------------------------------------------------------
    def create_instance(self, instance):
        checks.check_instance(instance)

        def decide(reads):
            if reads.get(self.keys.instance(instance.uuid)):
                raise Conflict(f"instance {instance.uuid} ({instance.alias}) already exists")
            if reads.get(self.keys.alias(instance.alias)):
                raise Conflict(f"an instance with alias {instance.alias!r} already exists",
                               hint="choose another alias")
            return [*self._instance_ops(instance),
                    put(self.keys.alias(instance.alias), encode(instance.uuid))], None

        self._write(decide)

    def get_instance(self, uuid):
        return self._one(Instance, self.keys.instance(uuid), f"no instance with UUID {uuid}")

    def list_instances(self, service=None, server_uuid=None):
        kvs = self.client.prefix(self.keys.dir("instances") if server_uuid is None
                                 else self.keys.placed(server_uuid))
        return _listed(i for i in (record(Instance, kv) for kv in kvs)
                       if (service is None or i.service == service)
                       and (server_uuid is None or i.server_uuid == server_uuid))

    def _instance_ops(self, new, old=None):
        """Puts of an instance's record and of its copy under its server, and
        the delete of the copy under the server it left."""
        value = encode(new.to_dict())
        ops = [put(self.keys.instance(new.uuid), value),
               put(self.keys.placed(new.server_uuid, new.uuid), value)]
        if old is not None and old.server_uuid != new.server_uuid:
            ops.append(delete(self.keys.placed(old.server_uuid, old.uuid)))
        return ops

    def move_instances(self, moves):
        checks.check_moves(moves)

        def decide(reads):
            ops, moved = [], []
            kvs = reads.get_many([self.keys.instance(uuid) for uuid, _, _ in moves])
            for (uuid, expected_generation, changes), kv in zip(moves, kvs):
                old = kv and record(Instance, kv)
                checks.check_generation("instance", uuid, old and old.generation,
                                        expected_generation)
                new = Instance.from_dict({**old.to_dict(), **changes,
                                          "generation": old.generation + 1})
                ops += self._instance_ops(new, old)
                if new.alias != old.alias:
                    if reads.get(self.keys.alias(new.alias)):
                        raise Conflict(f"an instance with alias {new.alias!r} already exists")
                    ops += [delete(self.keys.alias(old.alias)),
                            put(self.keys.alias(new.alias), encode(uuid))]
                moved.append(new)
            return ops, moved

        return self._write(decide)

    def set_instance_states(self, updates):
        # Each state is its owner's report on one instance: none needs another's
        # transaction, and etcd takes at most 128 operations (--max-txn-ops) in
        # one, two per instance here (the record and its copy).
        owned = []
        for start in range(0, len(updates), _STATES_PER_TXN):
            owned += self._set_states(updates[start:start + _STATES_PER_TXN])
        return owned

    def _set_states(self, updates):
        def decide(reads):
            ops, owned = [], []
            kvs = reads.get_many([self.keys.instance(uuid) for uuid, _, _, _ in updates])
            for (uuid, state, server_uuid, generation), kv in zip(updates, kvs):
                inst = kv and record(Instance, kv)
                # not the owner (any more): a fenced writer writes nothing
                owned.append(bool(inst) and (inst.server_uuid, inst.generation)
                             == (server_uuid, generation))
                if owned[-1] and inst.state != state:
                    inst.state = state
                    ops += self._instance_ops(inst)
            return ops or None, owned

        return self._write(decide)

    def delete_instance(self, uuid, expected_generation=None):
        def decide(reads):
            kv = reads.get(self.keys.instance(uuid))
            if kv is None:
                return [], None
            inst = record(Instance, kv)
            if expected_generation is not None and inst.generation != expected_generation:
                raise Conflict(f"instance {uuid} changed generation; not deleted")
            return [delete(kv["key"]), delete(self.keys.alias(inst.alias)),
                    delete(self.keys.placed(inst.server_uuid, uuid))], None

        self._write(decide)

    # -- images --------------------------------------------------------------
    def put_image(self, image):
        checks.check_image(image)
        self._write(lambda reads: ([put(self.keys.image(image.uuid), encode(image.to_dict()))],
                                   None))

    def get_image(self, uuid):
        return self._one(Image, self.keys.image(uuid), f"no image with UUID {uuid}")

    def list_images(self):
        return sorted(self._all(Image, "images"), key=lambda i: (i.name, i.version))

    # -- networks ------------------------------------------------------------
    def put_network(self, network, expected_revision=None):
        checks.check_network(network)

        def decide(reads):
            kv = reads.get(self.keys.network(network.name))
            if expected_revision is None:
                if kv is not None:
                    raise Conflict(f"network {network.name!r} already exists (revision "
                                   f"{record(Network, kv).revision})",
                                   hint="to replace it, read it and pass its revision")
                revision = 1
            else:
                if kv is None:
                    raise NotFound(f"no network named {network.name!r}")
                stored = record(Network, kv).revision
                if stored != expected_revision:
                    raise Conflict(f"network {network.name!r} is at revision {stored}, not "
                                   f"{expected_revision}: someone else changed it",
                                   hint="re-read the network and retry")
                revision = stored + 1
            new = Network(network.name, network.cidr, dict(network.allocations),
                          dict(network.reservations), revision, dict(network.quarantine))
            return [put(self.keys.network(network.name), encode(new.to_dict()))], new

        return self._write(decide)

    def get_network(self, name):
        return self._one(Network, self.keys.network(name), f"no network named {name!r}")

    def allocate_ip(self, network, owner_uuid, ip=None):
        checks.check_address(network, ip)

        def decide(reads):
            kv = reads.get(self.keys.network(network))
            if kv is None:
                raise NotFound(f"no network named {network!r}")
            net = record(Network, kv)
            chosen = checks.choose_address(net, owner_uuid, ip, self.now())
            net.allocations[chosen] = owner_uuid
            net.revision += 1
            return [put(kv["key"], encode(net.to_dict()))], chosen

        return self._write(decide)

    def release_ip(self, network, ip, quarantine=0.0):
        def decide(reads):
            kv = reads.get(self.keys.network(network))
            if kv is None:
                return [], None
            net = record(Network, kv)
            owner = net.allocations.pop(ip, None)
            net.quarantine = checks.quarantine_after_release(net.quarantine, ip, owner,
                                                             self.now(), quarantine)
            net.revision += 1
            return [put(kv["key"], encode(net.to_dict()))], None

        self._write(decide)

    # -- tasks ---------------------------------------------------------------
    def put_task(self, task):
        checks.check_task(task)
        self._write(lambda reads: ([put(self.keys.task(task.uuid), encode(task.to_dict()))], None))

    def get_task(self, uuid):
        return self._one(Task, self.keys.task(uuid), f"no task with UUID {uuid}")

    def list_tasks(self, limit=50):
        return sorted(self._all(Task, "tasks"), key=lambda t: t.created, reverse=True)[:limit]

    # -- restore-data status (not the DC model: meta/revision does not move) ------
    def put_restore_status(self, status):
        checks.check_restore_status(status)
        key = self.keys.restore_status(status.receiver, status.instance)
        self._write(lambda reads: ([put(key, encode(status.to_dict()))], None), model=False)

    def list_restore_status(self, receiver=None):
        where = (self.keys.dir("restore-status", receiver) if receiver is not None
                 else self.keys.dir("restore-status"))
        rows = [record(RestoreStatus, kv) for kv in self.client.prefix(where)]
        return sorted(rows, key=lambda r: (r.receiver, r.service, r.alias, r.instance))

    def delete_restore_status(self, receiver, instance):
        key = self.keys.restore_status(receiver, instance)
        self._write(lambda reads: ([delete(key)], None), model=False)

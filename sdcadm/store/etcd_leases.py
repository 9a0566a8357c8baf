"""Liveness on etcd: heartbeats and the DC lock are keys bound to leases.

etcd deletes a key when its lease is not refreshed within its TTL, by etcd's
own clock: nobody compares the clocks of two machines to decide that a server
is gone or that a lock expired. The times kept in the values (a heartbeat's
``at``, a lock's ``expires_at``) are the writer's clock, for display.
"""

import math

from sdcadm.errors import LockHeld, NotFound, StoreError
from sdcadm.model import Server
from sdcadm.store.etcd_client import LeaseGone, delete, exists, put, read, same_create
from sdcadm.store.etcd_keys import decode, encode, record

# Attempts at taking a lock that other takers keep changing under us.
_ATTEMPTS = 200


class Leases:
    """The lease-bound methods of EtcdStore (it provides ``client``, ``keys``,
    ``clock``, ``heartbeat_ttl``, ``_leases``, ``_leases_mutex``,
    ``_guard_compares`` and ``_assigned``)."""

    def heartbeat(self, server_uuid):
        """The heartbeat key lives as long as its lease, granted once with the
        heartbeat TTL and refreshed by every heartbeat: when the agent stops
        beating, etcd deletes the key and the server reads as unreachable."""
        self._beat(server_uuid)

    def beat(self, server_uuid):
        """One transaction writes the heartbeat and reads the server and the
        instances placed on it: one round trip after the lease's keepalive."""
        at, (server_kv, instance_kvs) = self._beat(
            server_uuid, [read(self.keys.server(server_uuid)),
                          read(self.keys.placed(server_uuid), prefix=True)])
        server = record(Server, server_kv[0])
        server.last_heartbeat = at
        return server, self._assigned(instance_kvs, server_uuid)

    def _beat(self, server_uuid, reads=()):
        """Write the heartbeat (and run ``reads`` in the same transaction):
        (the time written, [the key-values each read found]).

        Every beat writes its key, bound to the lease it just kept alive. A
        read-only transaction would spare the members a raft entry per beat,
        but a linearizable read waits out etcd's ReadIndex retry (500 ms) when
        the leader dies, where a write goes to the new leader at once: a beat
        that straddled the election then confirmed its instances' leases too
        late, and a just-restored singleton stopped for half a second
        (tests/integration/test_fence_agents.py, hn0 the leader)."""
        for _ in range(3):
            lease = self._heartbeat_lease(server_uuid)
            compares = [exists(self.keys.server(server_uuid)), *self._guard_compares()]
            at = self.clock()
            beat = put(self.keys.heartbeat(server_uuid), encode({"at": at}), lease)
            try:
                ok, _, found = self.client.txn_read(compares, [beat, *reads])
            except LeaseGone:
                self._forget_lease(server_uuid, lease)
                continue
            if not ok:
                raise NotFound(f"no server with UUID {server_uuid} in the DC store")
            return at, found[1:]
        raise StoreError(f"{self.describe()}: the heartbeat lease of {server_uuid} keeps expiring",
                         hint="check the etcd cluster's health: an overloaded member or "
                              "repeated leader elections can end leases early")

    def _heartbeat_lease(self, server_uuid):
        """The live lease of the server's heartbeat (granted if there is none)."""
        with self._leases_mutex:
            lease = self._leases.get(server_uuid)
        if lease is None:  # a new store object: the live key's lease, if any
            beat = self.client.get(self.keys.heartbeat(server_uuid))
            lease = beat["lease"] if beat and beat["lease"] else None
        if lease is not None:
            try:
                self.client.keepalive(lease)
                return lease
            except LeaseGone:
                self._forget_lease(server_uuid, lease)
        lease = self.client.grant(self.heartbeat_ttl)
        with self._leases_mutex:
            self._leases[server_uuid] = lease
        return lease

    def _forget_lease(self, server_uuid, lease):
        with self._leases_mutex:
            if self._leases.get(server_uuid) == lease:
                del self._leases[server_uuid]

    # -- the DC lock: a lease-bound key; its token is the key's create revision ----
    def acquire_lock(self, name, owner, ttl):
        key = self.keys.lock(name)
        for _ in range(_ATTEMPTS):
            kv = self.client.get(key)
            value = encode({"owner": owner, "expires_at": self.clock() + ttl})
            if kv is None:
                lease = self.client.grant(max(1, math.ceil(ttl)))
                ok, revision = self.client.txn([same_create(key, 0)], [put(key, value, lease)])
                if ok:
                    return revision  # the key's create revision: newer than any before
                self.client.revoke(lease)
                continue
            held = decode(kv)
            if held.get("owner") != owner:
                expires_at = float(held.get("expires_at", 0.0))
                raise LockHeld(name, held.get("owner"), expires_at,
                               expires_in=expires_at - self.clock())
            try:  # ours: refresh the lease, keep the key (and so the token)
                self.client.keepalive(kv["lease"])
                ok, _ = self.client.txn([same_create(key, kv["create_revision"])],
                                        [put(key, value, kv["lease"])])
            except LeaseGone:
                continue  # it ran out meanwhile: take it anew (a new token)
            if ok:
                return kv["create_revision"]
        raise StoreError(f"{self.describe()}: could not take lock {name!r}", hint="retry")

    def release_lock(self, name, owner):
        key = self.keys.lock(name)
        kv = self.client.get(key)
        if kv is None or decode(kv).get("owner") != owner:
            return
        ok, _ = self.client.txn([same_create(key, kv["create_revision"])], [delete(key)])
        if ok and kv["lease"]:
            self.client.revoke(kv["lease"])

    def get_lock(self, name):
        kv = self.client.get(self.keys.lock(name))
        if kv is None:
            return None
        held = decode(kv)
        return held.get("owner"), float(held.get("expires_at", 0.0)), kv["create_revision"]

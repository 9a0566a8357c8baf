"""The DC state store interface.

One interface, several backends (``sqlite``: one file; ``etcd``: the HA store). Callers use
only these methods; a backend maps them onto its storage, and lets none of its
own exceptions out: a lost compare-and-swap or a duplicate is ``Conflict``,
anything else ``StoreError`` (``errors.py``). The contract, as tests, is
``tests/unit/test_store_contract.py``.

* Opening never creates: ``open()`` refuses a store without a schema;
  ``initialize()`` (the lab, ``dc init``, tests) creates or upgrades it.
* Time belongs to the store: heartbeats and lock expiry use the backend's
  clock (etcd: leases; sqlite: an injectable ``clock``), never a caller's.
* Writes that move ownership, fence a server or change a network are
  compare-and-swap: ``move_instance`` on the instance ``generation``,
  ``set_fenced`` on the server ``generation``, ``put_network`` on the network
  ``revision``; the loser gets ``Conflict``.
* ``guarded(lock, token)``: a view whose every write first checks, atomically
  with the write, that ``lock`` still carries fencing ``token``; once another
  owner took the lock the write is refused with ``LockLost`` and nothing changes.
"""

import copy
from abc import ABC, abstractmethod
from dataclasses import fields as dataclass_fields

from sdcadm.errors import NotFound, UsageError
from sdcadm.model import Instance
from sdcadm.uuids import is_uuid


class Store(ABC):
    backend = "abstract"

    # -- lifecycle -------------------------------------------------------
    @abstractmethod
    def open(self):
        """Check that the store is reachable and initialised (upgrading an
        older schema); return self. StoreUnreachable if it cannot be reached,
        StoreError if it holds no sdcadm schema (never creates one)."""

    @abstractmethod
    def initialize(self):
        """Create the schema if missing (or upgrade it); idempotent; return self."""

    @abstractmethod
    def describe(self):
        """Where the store is, in words for messages (e.g. "sqlite store /var/...")."""

    # A backend sets ``clock`` (unix time), ``_guard = None`` and
    # ``_view = False`` in its constructor; its writes check ``_guard``.
    def now(self):
        """The store's clock (unix time): what heartbeats and lock expiries use."""
        return self.clock()

    def guarded(self, lock_name, token):
        """A view of this store whose writes are refused (LockLost, nothing
        written) unless lock ``lock_name`` still carries fencing ``token``.
        The view shares the store's connections (``_view``: its close() leaves
        them open)."""
        view = copy.copy(self)
        view._guard, view._view = (lock_name, token), True
        return view

    # -- servers ---------------------------------------------------------
    @abstractmethod
    def put_server(self, server):
        """Create or replace a server record (heartbeat is kept, generation
        bumped). Conflict if another server has the same hostname."""

    @abstractmethod
    def register_server(self, server):
        """Create a server record only if none has its UUID (an agent
        registering its own server must never overwrite what an operator
        made of it). Conflict if the UUID or the hostname is taken."""

    @abstractmethod
    def get_server(self, uuid):
        """The server with this UUID; NotFound otherwise."""

    @abstractmethod
    def list_servers(self):
        """All servers, ordered by hostname."""

    def hostnames(self, of_instances=False):
        """{server uuid: hostname} of every server (listings name servers by
        it); ``of_instances``: only of the servers some instance is on."""
        names = {s.uuid: s.hostname for s in self.list_servers()}
        if of_instances:
            used = {i.server_uuid for i in self.list_instances()}
            names = {u: h for u, h in names.items() if u in used}
        return names

    @abstractmethod
    def heartbeat(self, server_uuid):
        """Record that the server's agent is alive now (by the store's clock).
        Not a model change: neither the revision nor the server's generation moves."""

    def beat(self, server_uuid):
        """Heartbeat, then what the store says of this server: ``(Server, [the
        Instances assigned to it]``). An agent renews its singletons' leases
        from the start of this call, so every round trip in it shortens them:
        a networked backend makes it one transaction. NotFound as heartbeat."""
        self.heartbeat(server_uuid)
        return self.get_server(server_uuid), self.list_instances(server_uuid=server_uuid)

    def assignment(self, server_uuid):
        """What an agent reads each pass: ``(its Server or None when the store
        does not know it, [the Instances assigned to it], the model
        revision)``. A networked backend reads it in one round trip."""
        try:
            server = self.get_server(server_uuid)
        except NotFound:
            server = None
        return server, self.list_instances(server_uuid=server_uuid), self.revision()

    def watch_assignment(self, server_uuid, on_change):
        """A watch calling ``on_change()`` soon after anything assigned to
        ``server_uuid`` changes (an instance moved to or from it, changed,
        deleted), and whenever changes may have been missed: an object with
        ``run()`` (blocks until cancelled) and ``cancel()``. None when the
        backend cannot watch: the agent then only polls (it polls anyway)."""
        return None

    @abstractmethod
    def set_fenced(self, server_uuid, fenced, expected_generation):
        """Compare-and-swap: mark a server fenced (or not) only if its stored
        generation is ``expected_generation``; bump it and return the new
        Server. NotFound, or Conflict when someone else changed the server."""

    @abstractmethod
    def delete_server(self, uuid, expected_generation):
        """Remove a server record (compare-and-swap on its generation) and its
        heartbeat. Conflict while any instance is still assigned to it: an
        instance never points at a server that is gone."""

    # -- services --------------------------------------------------------
    @abstractmethod
    def put_service(self, service):
        """Create or replace a service record."""

    @abstractmethod
    def get_service(self, name):
        """The service with this name; NotFound otherwise."""

    @abstractmethod
    def list_services(self):
        """All services, ordered by name."""

    # -- instances -------------------------------------------------------
    @abstractmethod
    def create_instance(self, instance):
        """Add a new instance; Conflict if the UUID or alias exists."""

    @abstractmethod
    def get_instance(self, uuid):
        """The instance with this UUID; NotFound otherwise."""

    @abstractmethod
    def list_instances(self, service=None, server_uuid=None):
        """Instances, optionally filtered, ordered by service then alias."""

    def instance_columns(self, fields, service=None, server_uuid=None):
        """The instances ``list_instances`` returns, by column: ``{field: [value,
        ...]}`` for the Instance ``fields`` asked for, all lists in the same
        (service, alias) order. For listings of 50,000 instances: a backend may
        read only those columns and build no Instance per row (sqlite does)."""
        fields = check_instance_fields(fields)
        insts = self.list_instances(service=service, server_uuid=server_uuid)
        return {name: [getattr(i, name) for i in insts] for name in fields}

    def move_instance(self, uuid, expected_generation, **changes):
        """Compare-and-swap: apply ``changes`` (server_uuid, admin_ip, state,
        ...) and bump the generation, only if the stored generation is still
        ``expected_generation``. Return the new Instance; Conflict otherwise."""
        return self.move_instances([(uuid, expected_generation, changes)])[0]

    @abstractmethod
    def move_instances(self, moves):
        """``move_instance`` of several at once: ``moves`` is ``[(uuid,
        expected_generation, changes)]``, all applied in one transaction or
        none (Conflict or NotFound naming the first that does not match, and
        nothing changed). The new Instances, in order. Restore moves a whole
        dependency level with it: one commit, not one per instance."""

    def set_instance_state(self, uuid, state, server_uuid, generation):
        """Record an instance's state, only if ``server_uuid`` owns it at
        ``generation`` (a fenced writer cannot overwrite). Return True if
        written, False if the caller is not the owner."""
        return self.set_instance_states([(uuid, state, server_uuid, generation)])[0]

    @abstractmethod
    def set_instance_states(self, updates):
        """``set_instance_state`` of several in one transaction: ``updates``
        is ``[(uuid, state, server_uuid, generation)]``; [True/False] in order.
        An agent writes back a whole pass with it (one commit, not one each)."""

    @abstractmethod
    def delete_instance(self, uuid, expected_generation=None):
        """Remove an instance (CAS on generation when given)."""

    # -- images ----------------------------------------------------------
    @abstractmethod
    def put_image(self, image):
        """Create or replace an image record."""

    @abstractmethod
    def get_image(self, uuid):
        """The image with this UUID; NotFound otherwise."""

    @abstractmethod
    def list_images(self):
        """All images, ordered by name then version."""

    # -- networks --------------------------------------------------------
    @abstractmethod
    def put_network(self, network, expected_revision=None):
        """Compare-and-swap a network (with its allocations): create it when
        ``expected_revision`` is None (Conflict if it exists), else replace it
        only if its stored revision is still ``expected_revision``. Bump the
        revision and return the new Network."""

    @abstractmethod
    def get_network(self, name):
        """The network with this name; NotFound otherwise."""

    @abstractmethod
    def allocate_ip(self, network, owner_uuid, ip=None):
        """Atomically allocate ``ip`` (or the lowest free address) to
        ``owner_uuid``; Conflict if taken or the network is full. Bumps the
        network's revision."""

    @abstractmethod
    def release_ip(self, network, ip, quarantine=0.0):
        """Free an allocated address (no-op when free; bumps the network's
        revision). ``quarantine``: seconds (store time) during which no other
        owner may take it (``Network.quarantine``)."""

    # -- tasks -----------------------------------------------------------
    @abstractmethod
    def put_task(self, task):
        """Create or replace a task record."""

    @abstractmethod
    def get_task(self, uuid):
        """The task; NotFound otherwise."""

    @abstractmethod
    def list_tasks(self, limit=50):
        """The newest tasks first."""

    # -- DC-wide lock ----------------------------------------------------
    @abstractmethod
    def acquire_lock(self, name, owner, ttl):
        """Take lock ``name`` for ``owner`` for ``ttl`` seconds (store's clock).
        Re-taking a lock one already holds extends it. LockHeld (with
        ``expires_in``) if someone else holds an unexpired lock. Returns the
        lock's fencing token (increases on every acquisition by a new owner)."""

    @abstractmethod
    def release_lock(self, name, owner):
        """Release the lock if ``owner`` holds it (its token is then void)."""

    @abstractmethod
    def get_lock(self, name):
        """(owner, expires_at, token) or None."""

    # -- restore-data status (one row per receiving headnode and instance) ----------
    @abstractmethod
    def put_restore_status(self, status):
        """Create or replace the RestoreStatus of (receiver, service, instance).
        Not part of the DC model: does not bump the revision."""

    @abstractmethod
    def list_restore_status(self, receiver=None):
        """RestoreStatus rows, optionally of one receiver, ordered by receiver,
        service, alias."""

    @abstractmethod
    def delete_restore_status(self, receiver, instance):
        """Forget the status of ``receiver``'s copy of ``instance`` (pruned)."""

    # -- lookups shared by every backend -------------------------------------
    def find_server(self, ref):
        """A server by UUID or hostname; NotFound with the known names otherwise."""
        if is_uuid(ref):
            return self.get_server(ref)
        servers = self.list_servers()
        for server in servers:
            if server.hostname == ref:
                return server
        known = ", ".join(s.hostname for s in servers[:20]) or "(none)"
        raise NotFound(f"no server named {ref!r}", hint=f"known servers: {known}")

    # -- misc --------------------------------------------------------------
    @abstractmethod
    def revision(self):
        """A number that grows with every write (for dc.json versions)."""

    @abstractmethod
    def close(self):
        """Release resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


INSTANCE_FIELDS = tuple(f.name for f in dataclass_fields(Instance))


def check_instance_fields(fields):
    """``fields`` as a tuple without repeats; UsageError for a name that is
    not a field of Instance (it would reach SQL as a column name)."""
    fields = tuple(dict.fromkeys(fields))
    unknown = [f for f in fields if f not in INSTANCE_FIELDS]
    if unknown:
        raise UsageError(f"unknown instance field(s) {', '.join(map(repr, unknown))}",
                         hint="fields: " + ", ".join(INSTANCE_FIELDS))
    return fields

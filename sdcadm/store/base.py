"""The DC state store interface.

One interface, several backends (``sqlite`` now, ``etcd`` next). Callers use
only these methods; a backend maps them onto its storage. Ownership moves are
compare-and-swap on the instance ``generation``: ``move_instance`` succeeds
only if the caller saw the current generation, and bumps it.
"""

from abc import ABC, abstractmethod

from sdcadm.errors import NotFound
from sdcadm.uuids import is_uuid


class Store(ABC):
    backend = "abstract"

    # -- servers ---------------------------------------------------------
    @abstractmethod
    def put_server(self, server):
        """Create or replace a server record (heartbeat is kept)."""

    @abstractmethod
    def get_server(self, uuid):
        """The server with this UUID; NotFound otherwise."""

    @abstractmethod
    def list_servers(self):
        """All servers, ordered by hostname."""

    @abstractmethod
    def heartbeat(self, server_uuid, now):
        """Record that the server's agent is alive at ``now`` (unix time)."""

    @abstractmethod
    def set_fenced(self, server_uuid, fenced):
        """Mark a server fenced (or not)."""

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

    @abstractmethod
    def move_instance(self, uuid, expected_generation, **changes):
        """Compare-and-swap: apply ``changes`` (server_uuid, admin_ip, state,
        ...) and bump the generation, only if the stored generation is still
        ``expected_generation``. Return the new Instance; Conflict otherwise."""

    @abstractmethod
    def set_instance_state(self, uuid, state, server_uuid, generation):
        """Record an instance's state, only if ``server_uuid`` owns it at
        ``generation`` (a fenced writer cannot overwrite). Return True if
        written, False if the caller is not the owner."""

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
        """All images."""

    # -- networks --------------------------------------------------------
    @abstractmethod
    def put_network(self, network):
        """Create or replace a network (with its allocations)."""

    @abstractmethod
    def get_network(self, name):
        """The network with this name; NotFound otherwise."""

    @abstractmethod
    def allocate_ip(self, network, owner_uuid, ip=None):
        """Atomically allocate ``ip`` (or the lowest free address) to
        ``owner_uuid``; Conflict if taken or the network is full."""

    @abstractmethod
    def release_ip(self, network, ip):
        """Free an allocated address (no-op when free)."""

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
    def acquire_lock(self, name, owner, ttl, now):
        """Take lock ``name`` for ``owner`` until ``now + ttl``. Re-taking a
        lock one already holds extends it. LockHeld if someone else holds an
        unexpired lock. Returns the lock's fencing token (increases on every
        acquisition by a new owner)."""

    @abstractmethod
    def release_lock(self, name, owner):
        """Release the lock if ``owner`` holds it."""

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

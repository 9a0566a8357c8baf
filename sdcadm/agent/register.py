"""Self-registration: an agent started on a server the DC store does not know adds it.

The record it makes says only what the server knows of itself: its UUID
(``server_uuid``), its hostname and its admin address (``agent.listen``,
allocated to it on the admin network), with ``setup`` and ``headnode``
false. Taking the server into the DC is the operator's decision
(``sdcadm server setup``, RFD 67's cn-setup); until then ``server ls`` shows
it without flag S and its agent starts no instance (the supervisor's
``may_start``).

It never overwrites: the store's ``register_server`` creates the record only
when no server has this UUID (nor this hostname), so an agent restarting on a
server that is set up, a headnode or fenced leaves its record as it is. A
server deleted from the DC whose agent still runs registers again, as a new,
not set up server: it runs nothing until an operator sets it up again.

Registration is retried every heartbeat interval while the store is
unreachable or refuses it (the DC not created yet, the address or the
hostname taken); each refusal is logged, throttled, with how to fix it.
"""

import ipaddress
import logging

from sdcadm.agent.log import Throttled
from sdcadm.errors import Conflict, NotFound, SdcadmError, StoreError
from sdcadm.model import ADMIN_NETWORK, Server

log = logging.getLogger(__name__)

# Refusals that an operator must fix: retried, but less often than an outage.
SLOW_RETRY = 10.0


class NotRegistrable(SdcadmError):
    """This agent cannot say what to register (its configuration lacks it)."""


def admin_address(listen):
    """The admin address an agent listening on ``listen`` registers; NotRegistrable
    for a wildcard (it says nothing about which address is the admin one)."""
    try:
        address = ipaddress.ip_address(listen)
    except ValueError:
        raise NotRegistrable(f"agent.listen {listen!r} is not an IP address: cannot tell this "
                             "server's admin address",
                             hint="set agent.listen to the server's admin address") from None
    if address.is_unspecified:
        raise NotRegistrable(f"agent.listen is {listen}, a wildcard: cannot tell this server's "
                             "admin address", hint="set agent.listen to the server's admin address")
    return str(address)


def new_server_record(uuid, hostname, listen, agent_port):
    """The record of a server registering itself: not set up, not a headnode."""
    return Server(uuid=uuid, hostname=hostname, admin_ip=admin_address(listen),
                  headnode=False, setup=False, agent_port=agent_port)


def register(store, record):
    """Register ``record`` in ``store`` unless its UUID is known: allocate its
    address on the admin network, then create the record. Return "known" or
    "registered"; NotFound (no admin network: the DC is not created yet) or
    Conflict (the address or the hostname is taken) otherwise. An address
    allocated here is released again when the record cannot be made."""
    try:
        store.get_server(record.uuid)
        return "known"
    except NotFound:
        pass
    network = store.get_network(ADMIN_NETWORK)
    held = network.allocations.get(record.admin_ip) == record.uuid
    if not held:
        try:
            store.allocate_ip(ADMIN_NETWORK, record.uuid, record.admin_ip)
        except Conflict as e:
            owner = network.allocations.get(record.admin_ip)
            raise Conflict(f"cannot register {record.hostname}: its admin address "
                           f"{record.admin_ip}: {e.message}" + (f" (held by {owner})" if owner else ""),
                           hint=f"give this server a free address of the admin network "
                                f"{network.cidr} (agent.listen), or free that one") from None
    try:
        store.register_server(record)
    except Conflict:
        try:
            store.get_server(record.uuid)
            return "known"  # registered meanwhile (another run of this agent)
        except NotFound:
            pass
        if not held:
            store.release_ip(ADMIN_NETWORK, record.admin_ip)
        raise
    return "registered"


class Registration:
    """The agent's registration thread: ``run(stop)`` tries until the store
    knows this server, then ends. ``state``: pending, registered, known
    (it was there already) or refused (configuration: never retried)."""

    def __init__(self, config, stores, hostname, interval):
        self.config, self.stores, self.hostname = config, stores, hostname
        self.interval = interval
        self.state = "pending"
        self.last_error = None
        self.retry_in = interval
        self._problems = Throttled(log)

    def attempt(self):
        """One try; True when nothing is left to do."""
        agent = self.config.agent
        try:
            record = new_server_record(self.config.server_uuid, self.hostname, agent.listen,
                                       agent.port)
        except NotRegistrable as e:
            self.state, self.last_error = "refused", str(e)
            log.error("not registering this server: %s", e,
                      extra={"event": "register-refused"})
            return True
        try:
            self.state = register(self.stores.get(), record)
        except NotFound:
            return self._failed("register-no-dc", "cannot register this server: the DC store has "
                                "no admin network yet (create the DC first: `sdcadm dc init` on "
                                "its first headnode)")
        except Conflict as e:
            return self._failed("register-conflict", str(e))
        except StoreError as e:
            return self._failed("register-unreachable",
                                f"cannot register this server, store unreachable: {e}")
        self.last_error, self.retry_in = None, self.interval
        if self.state == "registered":
            log.info("registered server %s (%s, %s) in the DC store, not set up: "
                     "`sdcadm server setup %s` on a headnode takes it into the DC",
                     record.uuid, record.hostname, record.admin_ip, record.hostname,
                     extra={"event": "registered"})
        for key in ("register-no-dc", "register-conflict", "register-unreachable"):
            self._problems.clear(key, "server registration done")
        return True

    def _failed(self, key, message):
        outage = key == "register-unreachable"
        self.last_error = message
        # an outage ends by itself; a refusal waits for an operator
        self.retry_in = self.interval if outage else max(self.interval, SLOW_RETRY)
        self._problems.problem(key, message, level=logging.WARNING if outage else logging.ERROR)
        return False

    def run(self, stop):
        while not stop.is_set():
            try:
                if self.attempt():
                    return
            except Exception:  # a bug must not end registration for good
                log.exception("registration crashed; retrying", extra={"event": "register-crash"})
            stop.wait(self.retry_in)

"""``sdcadm dc init``: create the DC on its first headnode.

Creates (or upgrades) the store's schema, the admin network, and this
server as the DC's first headnode (set up, with its admin address
allocated). Addresses named with ``--reserve`` (a gateway, a router, the
operator's own host on the admin network) are reserved: nothing in the DC
is ever given one. Idempotent: run again on the same headnode with the same
network, it changes nothing. Refused, with nothing changed, when the store
already holds another DC (other servers, or another admin network): a DC is
created once; servers join it with `server setup` and `headnode-setup`.

Not a procedure: the DC lock and tasks live in the store it creates.
"""

import dataclasses
import ipaddress
from dataclasses import dataclass

from sdcadm.errors import Conflict, NotFound, UsageError
from sdcadm.model import ADMIN_NETWORK, Network, Server
from sdcadm.procedures.planning.common import NotViable


@dataclass(frozen=True)
class DcInit:
    uuid: str
    hostname: str
    admin_ip: str
    admin_net: str
    agent_port: int
    reserve: tuple = ()


RESERVED_AT_INIT = "reserved by dc init"


def check_arguments(want):
    """UsageError unless the admin network and address make sense (before
    anything, the store included, is touched); the network, normalised."""
    try:
        net = ipaddress.ip_network(want.admin_net, strict=True)
    except ValueError as e:
        raise UsageError(f"--admin-net {want.admin_net!r} is not a network: {e}",
                         hint="e.g. --admin-net 10.99.99.0/24") from None
    try:
        ip = ipaddress.ip_address(want.admin_ip)
    except ValueError as e:
        raise UsageError(f"--admin-ip {want.admin_ip!r} is not an address: {e}") from None
    if ip not in net or ip in (net.network_address, net.broadcast_address):
        raise UsageError(f"{ip} is not a host address of {net}")
    for address in want.reserve:
        try:
            other = ipaddress.ip_address(address)
        except ValueError as e:
            raise UsageError(f"--reserve {address!r} is not an address: {e}") from None
        if other not in net or other in (net.network_address, net.broadcast_address):
            raise UsageError(f"--reserve {other}: not a host address of {net}")
        if other == ip:
            raise UsageError(f"--reserve {other} is this headnode's own admin address",
                             hint="reserve only addresses nothing in the DC may take")
    return net


def check_init(want, servers, network):
    """What is left to do: a list of "network", "address", "reserve", "server";
    NotViable when the store holds another DC, or an address to reserve is
    taken."""
    net = check_arguments(want)
    others = sorted(s.hostname for s in servers if s.uuid != want.uuid)
    if others:
        raise NotViable(f"the DC store already holds a DC (servers {', '.join(others[:5])})",
                        hint="a DC is created once; to add this server to it use "
                             "`sdcadm server setup` / `server headnode-setup` from a headnode")
    if network is not None and network.cidr != str(net):
        raise NotViable(f"the DC store's admin network is {network.cidr}, not {net}",
                        hint="run it again with that --admin-net, or use another store")
    todo = []
    if network is None:
        todo.append("network")
    if network is None or network.allocations.get(want.admin_ip) != want.uuid:
        todo.append("address")
    held = network.allocations if network is not None else {}
    taken = [a for a in want.reserve if a in held]
    if taken:
        raise NotViable(f"cannot reserve {', '.join(taken)}: allocated in the DC already",
                        hint="reserve addresses before anything takes them, or leave these out")
    if any(network is None or a not in network.reservations for a in want.reserve):
        todo.append("reserve")
    me = next((s for s in servers if s.uuid == want.uuid), None)
    if me is None or (me.hostname, me.admin_ip, me.headnode, me.setup) != (
            want.hostname, want.admin_ip, True, True):
        todo.append("server")
    return todo


def init_dc(store, want):
    """Carry ``check_init``'s answer out on an initialised ``store``; return what was done."""
    try:
        network = store.get_network(ADMIN_NETWORK)
    except NotFound:
        network = None
    todo = check_init(want, store.list_servers(), network)
    if "network" in todo:
        store.put_network(Network(ADMIN_NETWORK, str(ipaddress.ip_network(want.admin_net))))
    if "address" in todo:
        store.allocate_ip(ADMIN_NETWORK, want.uuid, want.admin_ip)
    if "reserve" in todo:
        reserve_addresses(store, want.reserve)
    if "server" in todo:
        store.put_server(Server(uuid=want.uuid, hostname=want.hostname, admin_ip=want.admin_ip,
                                headnode=True, setup=True, agent_port=want.agent_port))
    return todo


def reserve_addresses(store, addresses):
    """Reserve ``addresses`` on the admin network (those it does not hold yet)."""
    add_reservations(store, lambda network: {a: RESERVED_AT_INIT for a in addresses
                                             if a not in network.reservations})


def add_reservations(store, decide, attempts=5, failure=Conflict):
    """Add ``decide(network)`` ({ip: reason}) to the admin network's
    reservations: a compare-and-swap on its revision, decided again on the
    network as it is when another writer came first. Return what was added
    ({} when ``decide`` wanted nothing); ``failure`` after ``attempts``."""
    for _ in range(attempts):
        network = store.get_network(ADMIN_NETWORK)
        add = decide(network)
        if not add:
            return {}
        try:
            store.put_network(dataclasses.replace(
                network, reservations={**network.reservations, **add}),
                expected_revision=network.revision)
            return add
        except Conflict:
            continue   # an address was taken meanwhile: decide again
    raise failure("the admin network kept changing while reserving addresses",
                  hint="run the same command again")

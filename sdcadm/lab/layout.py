"""Planning a lab DC: which servers, which addresses, which instances where.

Pure functions over plain data; ``sdcadm.lab.ctl`` carries the plan out.
A "properly set up" DC (RFD 67): HA services get one instance on each of the
first three headnodes; every other lab service gets one instance on the first
headnode.
"""

import ipaddress
from dataclasses import dataclass, field

from sdcadm.errors import UsageError

HA_COPIES = 3


@dataclass(frozen=True)
class PlannedServer:
    hostname: str
    headnode: bool
    admin_ip: str


@dataclass(frozen=True)
class PlannedInstance:
    service: str
    alias: str
    hostname: str


@dataclass
class LabPlan:
    net: str
    servers: list = field(default_factory=list)
    instances: list = field(default_factory=list)


def check_net(net, isolation="loopback"):
    """The lab network must be an IPv4 loopback network with room to work;
    with ``isolation`` netns, the private network the loopback one maps to
    (or a private network given as it is: ``netns.lab_network``)."""
    try:
        network = ipaddress.ip_network(net, strict=True)
    except ValueError as e:
        raise UsageError(f"--net {net!r} is not a network: {e}",
                         hint="use the form 127.99.99.0/24") from None
    if isolation == "netns" and network.version == 4:
        from sdcadm.lab.netns import lab_network

        network = lab_network(net)
        if network.num_addresses < 64:
            raise UsageError(f"--net {net} is too small; use a /26 or larger")
        return network
    loopback = ipaddress.ip_network("127.0.0.0/8")
    if network.version != 4 or not network.subnet_of(loopback):
        raise UsageError(f"--net {net} is not inside 127.0.0.0/8",
                         hint="the lab only uses loopback addresses, e.g. 127.99.99.0/24")
    if network.num_addresses < 64:
        raise UsageError(f"--net {net} is too small; use a /26 or larger")
    return network


def plan_lab(net, headnodes, computenodes, catalog, services=None, isolation="loopback"):
    """Plan servers and instances. ``services``: restrict to these (default: every lab service)."""
    network = check_net(net, isolation)
    if headnodes < 1:
        raise UsageError("a lab needs at least one headnode (--headnodes 1 or more)")
    if computenodes < 0:
        raise UsageError("--computenodes cannot be negative")
    wanted = [n for n in catalog.startup_order() if catalog.get(n).lab]
    if services is not None:
        for name in services:
            catalog.get(name)  # NotFound for an unknown name
        wanted = [n for n in wanted if n in set(services)]
    hosts = network.hosts()
    plan = LabPlan(net=str(network))
    for i in range(headnodes):
        plan.servers.append(PlannedServer(f"hn{i}", True, str(next(hosts))))
    for i in range(computenodes):
        plan.servers.append(PlannedServer(f"cn{i}", False, str(next(hosts))))
    heads = [s.hostname for s in plan.servers if s.headnode]
    for name in wanted:
        spec = catalog.get(name)
        where = heads[:HA_COPIES] if spec.ha else heads[:1]
        for n, hostname in enumerate(where):
            plan.instances.append(PlannedInstance(name, f"{name}{n}", hostname))
    return plan

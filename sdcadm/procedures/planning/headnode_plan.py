"""What `sdcadm server headnode-setup SERVER...` does, decided from plain facts.

Viability (every problem of every server asked, reported together): the
server exists, is set up, alive (``setup_plan.alive_problems``), is not a
headnode yet (unless this is the unfinished run of the same command being
resumed), and its agent is at least ``MIN_AGENT_VERSION``. More than
``MANY_HEADNODES`` headnodes afterwards needs the operator's word again.
Instances of services outside the core catalog on a server are a warning:
a headnode is meant for core services.

Recovery addresses (RFD 67 M0): one admin address reserved per
single-instance (non-HA) service of the DC, so that a restore always finds
an address for it, however full the network got meanwhile. Taken from the
top of the network (allocations take the lowest free address), reason
``recovery:<service>``; a network without room for all of them is said, and
what fits is reserved.
"""

import ipaddress
from dataclasses import dataclass

from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.setup_plan import MANY_HEADNODES, alive_problems

# The first version whose agents register themselves and pull restore data
# once their server is marked a headnode.
MIN_AGENT_VERSION = "0.1.0"
RESERVATION_PREFIX = "recovery:"


class TooManyHeadnodes(NotViable):
    """More than MANY_HEADNODES headnodes afterwards, not confirmed."""


@dataclass(frozen=True)
class HeadnodePlan:
    servers: tuple          # Server records to make headnodes, in the order asked
    warnings: tuple         # lines shown with the plan
    headnodes_after: int


def version_tuple(text):
    """"1.2.3" -> (1, 2, 3); None when it is not such a version."""
    try:
        return tuple(int(p) for p in str(text).split("."))
    except ValueError:
        return None


def plan_headnode_setup(asked, servers, instances, answers, core_services, *, now,
                        heartbeat_timeout, resuming=False, many=False, pullers=None):
    """A HeadnodePlan, or NotViable listing every reason it is refused.

    ``asked``: Server records (looked up already, duplicates dropped);
    ``answers``: {uuid: the agent's /v1/status document, or the error text};
    ``core_services``: the catalog's service names; ``pullers``: {uuid: the
    agent's /v1/restore-data document}, whose ``enabled`` false refuses the
    server (it would never pull restore data); ``resuming``: this runs
    the unfinished Task of the same command again (a server it already made
    a headnode is finished, not refused)."""
    problems = []
    for server in asked:
        host = server.hostname
        if not server.setup:
            problems.append(f"{host} is not set up (sdcadm server setup {host} first)")
        if server.headnode and not resuming:
            problems.append(f"{host} is already a headnode")
        answer = answers.get(server.uuid)
        problems += alive_problems(server, answer, now=now, heartbeat_timeout=heartbeat_timeout)
        if isinstance(answer, dict) and answer.get("server_uuid") == server.uuid:
            have = version_tuple(answer.get("version"))
            if have is None or have < version_tuple(MIN_AGENT_VERSION):
                problems.append(f"{host}'s agent is version {answer.get('version')!r}: a "
                                f"headnode needs {MIN_AGENT_VERSION} or later (upgrade sdcadm "
                                f"there)")
            puller = (pullers or {}).get(server.uuid)
            if isinstance(puller, dict) and puller.get("enabled") is False:
                problems.append(f"{host}'s agent does not pull restore data (restore_data."
                                f"enabled is false in its configuration: set it true and "
                                f"restart that agent)")
    if problems:
        names = ", ".join(s.hostname for s in asked)
        raise NotViable(f"cannot make {names} a headnode:\n  - " + "\n  - ".join(problems),
                        hint="fix each problem and run the same command again; nothing was "
                             "changed")
    new = {s.uuid for s in asked if not s.headnode}
    after = sum(1 for s in servers if s.headnode) + len(new)
    if after > MANY_HEADNODES and not many:
        raise TooManyHeadnodes(f"the DC would have {after} headnodes, more than {MANY_HEADNODES}: "
                        "each one pulls the restore data of every other server",
                        hint="if that is what you want, confirm it with --many-headnodes")
    warnings = []
    for server in asked:
        foreign = sorted(i.alias for i in instances
                         if i.server_uuid == server.uuid and i.service not in core_services)
        if foreign:
            warnings.append(f"warning: {server.hostname} runs {len(foreign)} instance(s) of "
                            f"services outside the core catalog ({', '.join(foreign[:8])}): a "
                            "headnode is meant for core services; consider moving them")
    return HeadnodePlan(tuple(asked), tuple(warnings), after)


def single_instance_services(services, core_specs):
    """Names of the DC's services that run once (not HA), sorted: the ones a
    restore re-creates, and so the ones that need a recovery address."""
    out = []
    for service in services:
        spec = core_specs.get(service.name)
        ha = spec.ha if spec is not None else bool(
            isinstance(service.params, dict) and service.params.get("ha"))
        if not ha:
            out.append(service.name)
    return sorted(out)


def plan_reservations(network, services, now):
    """({ip: reason} to add, [services without room]) so that every service of
    ``services`` has one recovery address on ``network``."""
    have = {reason[len(RESERVATION_PREFIX):] for reason in network.reservations.values()
            if isinstance(reason, str) and reason.startswith(RESERVATION_PREFIX)}
    missing = [s for s in services if s not in have]
    if not missing:
        return {}, []

    def free(address):
        entry = network.quarantine.get(address)
        return (address not in network.allocations and address not in network.reservations
                and not (entry and entry.get("until", 0) > now))

    hosts = list(ipaddress.ip_network(network.cidr).hosts())
    candidates = [str(a) for a in reversed(hosts) if free(str(a))]
    add = {ip: RESERVATION_PREFIX + service for ip, service in zip(candidates, missing)}
    return add, missing[len(add):]


def reservation_lines(network, services, now):
    """What the plan says about recovery addresses."""
    add, short = plan_reservations(network, services, now)
    lines = []
    if add:
        lines.append(f"reserve {len(add)} recovery admin address(es) on {network.name} "
                     f"({network.cidr}) for: " + ", ".join(r[len(RESERVATION_PREFIX):]
                                                          for r in add.values()))
    if short:
        lines.append(f"warning: {network.name} ({network.cidr}) has no room left to reserve a "
                     f"recovery address for {', '.join(short)}: a restore of those may find "
                     "no address; grow the admin network or free addresses")
    return lines

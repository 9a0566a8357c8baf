"""Checks of records before a backend writes them.

The sqlite schema has NOT NULL and CHECK constraints, but a constraint that
fires deep in a transaction can only say "constraint failed"; and a backend
without a schema (etcd) has none. So every backend checks records here first
and refuses a bad one with a ValidationError that names the field.
"""

import ipaddress

from sdcadm.errors import Conflict, NotFound, ValidationError
from sdcadm.model import RESTORE_STATUSES, TASK_STATES

_REQUIRED = {
    "server": ("uuid", "hostname", "admin_ip"),
    "instance": ("uuid", "alias", "service", "server_uuid", "image", "admin_ip"),
    "image": ("uuid", "name", "version", "sha256"),
    "network": ("name", "cidr"),
    "task": ("uuid", "name", "state"),
    "restore status": ("receiver", "service", "instance"),
}


def _missing(kind, record):
    return [f"{name} is required" for name in _REQUIRED[kind]
            if getattr(record, name, None) in (None, "")]


def _refuse(kind, record, problems):
    if problems:
        raise ValidationError(f"{kind} record", f"a write to the DC store ({_name(record)})",
                              problems, hint="nothing was written; fix the caller's record")


def _name(record):
    for attr in ("alias", "hostname", "name", "uuid", "instance"):
        value = getattr(record, attr, None)
        if value:
            return value
    return "?"


def check_server(server):
    _refuse("server", server, _missing("server", server))


def refuse_registration(server, uuid, hostname):
    """Conflict: ``server`` cannot be registered next to the record (``uuid``,
    ``hostname``) already in the store."""
    if uuid == server.uuid:
        raise Conflict(f"server {server.uuid} is already registered (as {hostname!r})",
                       hint="nothing to register: see `sdcadm server ls`")
    raise Conflict(f"a server named {server.hostname!r} already exists ({uuid})",
                   hint="give this server another hostname, or delete that server first "
                        "(sdcadm server delete)")


def check_instance(instance):
    problems = _missing("instance", instance)
    if not isinstance(instance.generation, int) or instance.generation < 1:
        problems.append(f"generation must be an integer >= 1, got {instance.generation!r}")
    _refuse("instance", instance, problems)


# What move_instance may change; everything else of an instance is fixed.
INSTANCE_MUTABLE = {"server_uuid", "admin_ip", "port", "state", "image", "alias", "params"}


def check_instance_change(uuid, changes):
    """Refuse a change to an immutable field (a caller's bug: ValueError) or
    to null (ValidationError), before any backend reads anything."""
    bad = set(changes) - INSTANCE_MUTABLE
    if bad:
        raise ValueError(f"cannot change {', '.join(sorted(bad))} of an instance")
    unset = sorted(k for k, v in changes.items() if v is None)
    if unset:
        raise ValidationError("instance change", f"a write to the DC store ({uuid})",
                              [f"{k} cannot be null" for k in unset],
                              hint="nothing was written; fix the caller's change")


def check_moves(moves):
    """``move_instances``' argument: each change checked, each instance once
    (a caller's bug otherwise: ValueError), before any backend reads."""
    uuids = [uuid for uuid, _, _ in moves]
    if len(set(uuids)) != len(uuids):
        raise ValueError("an instance is moved twice in one move_instances call")
    for uuid, _, changes in moves:
        check_instance_change(uuid, changes)


def check_generation(kind, uuid, found, expected):
    """The compare of a compare-and-swap on a record's generation, in the
    words every backend uses: NotFound when the record is gone (``found`` is
    None), Conflict when someone else changed it first."""
    if found is None:
        raise NotFound(f"no {kind} with UUID {uuid}")
    if found != expected:
        what = "moved" if kind == "instance" else "changed"
        raise Conflict(f"{kind} {uuid} is at generation {found}, not {expected}: someone else "
                       f"{what} it", hint=f"re-read the {kind} and retry")


def check_owns_nothing(server_uuid, aliases):
    """Conflict while instances (``aliases``) are still assigned to the server."""
    if aliases:
        shown = ", ".join(aliases[:5]) + (f" and {len(aliases) - 5} more" if len(aliases) > 5
                                          else "")
        raise Conflict(f"server {server_uuid} still owns {len(aliases)} instance(s) ({shown}): "
                       "not deleted", hint="migrate, restore or delete its instances first")


def check_image(image):
    _refuse("image", image, _missing("image", image))


def check_network(network):
    problems = _missing("network", network)
    if network.cidr:
        try:
            net = ipaddress.ip_network(network.cidr)
        except ValueError as e:
            problems.append(f"cidr: {e}")
        else:
            for ip in network.allocations:
                try:
                    inside = ipaddress.ip_address(ip) in net
                except ValueError as e:
                    problems.append(f"allocation: {e}")
                    continue
                if not inside:
                    problems.append(f"allocation {ip} is not in {network.cidr}")
            for ip, entry in network.quarantine.items():
                if not (isinstance(entry, dict) and isinstance(entry.get("owner"), str)
                        and isinstance(entry.get("until"), (int, float))):
                    problems.append(f"quarantine of {ip}: expected {{owner, until}}, got "
                                    f"{entry!r:.60}")
    _refuse("network", network, problems)


def check_address(network, ip):
    """ValidationError unless ``ip`` (when given) is an IP address."""
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except ValueError as e:
            raise ValidationError("address", f"an allocation on network {network}",
                                  [str(e)], hint="nothing was allocated") from None


def choose_address(net, owner_uuid, ip, now):
    """The address ``owner_uuid`` gets on network ``net`` (a Network): ``ip``
    when it may have it, else (``ip`` None) the first free one. An address is
    free when no other owner holds it, it is not reserved, and it is not in
    another owner's quarantine. Conflict saying why otherwise."""
    cidr = ipaddress.ip_network(net.cidr)

    def held_off(address):
        entry = net.quarantine.get(address)
        return bool(entry) and entry["until"] > now and entry.get("owner") != owner_uuid

    if ip is not None:
        if ipaddress.ip_address(ip) not in cidr:
            raise Conflict(f"{ip} is not in network {net.name} ({net.cidr})")
        if net.allocations.get(ip) not in (None, owner_uuid) or ip in net.reservations:
            raise Conflict(f"{ip} on network {net.name} is already taken")
        if held_off(ip):
            raise Conflict(f"{ip} on network {net.name} was released by another owner and is "
                           f"quarantined for {net.quarantine[ip]['until'] - now:.0f}s more",
                           hint="take another address (a client may still point at this one), "
                                "or wait until the quarantine ends")
        return ip
    chosen = next((str(a) for a in cidr.hosts() if str(a) not in net.allocations
                   and str(a) not in net.reservations and not held_off(str(a))), None)
    if chosen is None:
        waiting = sum(1 for a in net.quarantine if held_off(a))
        raise Conflict(f"network {net.name} ({net.cidr}) has no free address"
                       + (f" ({waiting} released address(es) still quarantined)" if waiting
                          else ""))
    return chosen


def quarantine_after_release(quarantine, ip, owner, now, seconds):
    """The quarantine table once ``owner`` released ``ip`` (for ``seconds``);
    entries whose time is over are dropped."""
    kept = {a: e for a, e in quarantine.items() if e["until"] > now}
    if seconds > 0 and owner is not None:
        kept[ip] = {"owner": owner, "until": now + seconds}
    return kept


def check_task(task):
    problems = _missing("task", task)
    if task.state not in TASK_STATES:
        problems.append(f"state must be one of {', '.join(TASK_STATES)}, got {task.state!r}")
    if task.created is None:
        problems.append("created is required")
    _refuse("task", task, problems)


def check_restore_status(status):
    problems = _missing("restore status", status)
    if status.status not in RESTORE_STATUSES:
        problems.append(f"status must be one of {', '.join(RESTORE_STATUSES)}, "
                        f"got {status.status!r}")
    _refuse("restore status", status, problems)

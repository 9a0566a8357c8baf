"""`sdcadm insts` and `sdcadm svcs`: instances and services of the DC."""

from collections import Counter
from itertools import compress

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.output import listed_fields, output_options, render, render_columns
from sdcadm.errors import UsageError
from sdcadm.model import INSTANCE_STATES, instance_url
from sdcadm.store.base import INSTANCE_FIELDS
from sdcadm.uuids import check_uuid, is_uuid

# FILTER key (and aliases) -> the field it matches.
FILTER_KEYS = {"svc": "service", "service": "service", "server": "server", "alias": "alias",
               "uuid": "uuid", "instance": "uuid", "server_uuid": "server_uuid",
               "image": "image", "state": "state"}
_UUID_FILTERS = {"uuid", "server_uuid", "image"}

LISTING_FIELDS = ["uuid", "service", "hostname", "alias", "state", "generation", "server_uuid",
                   "admin_ip", "port", "url", "image", "delegate_dataset", "params"]


def parse_filters(args):
    """FILTER arguments -> {field: [values]}.

    A bare word is a service name (a bare UUID an instance); ``key=value``
    names the field. Values of one field are alternatives; fields combine.
    """
    filters = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            key, value = ("uuid" if is_uuid(arg) else "service"), arg
        else:
            field = FILTER_KEYS.get(key.strip().lower().replace("-", "_"))
            if field is None:
                raise UsageError(f"unknown filter {key!r} in {arg!r}",
                                 hint="filters: " + ", ".join(f"{k}=" for k in FILTER_KEYS))
            key = field
        if not value:
            raise UsageError(f"filter {arg!r} has no value")
        if key in _UUID_FILTERS:
            check_uuid(value, f"filter {key}=: value")
        if key == "state" and value not in INSTANCE_STATES:
            raise UsageError(f"unknown instance state {value!r}",
                             hint="states: " + ", ".join(INSTANCE_STATES))
        filters.setdefault(key, []).append(value)
    return filters


# Fields of the listing computed from others: field -> the store fields it needs.
_DERIVED = {"hostname": ("server_uuid",), "url": ("admin_ip", "port")}
_JSON_FIELDS = list(INSTANCE_FIELDS) + ["hostname", "url"]  # -j: every field, model order


def instance_columns(store, filters, fields):
    """``{field: [value, ...]}`` of the instances matching ``filters``, ordered by
    service then alias, for ``fields`` (store fields plus hostname and url).
    NotFound for an unknown server. Held by column, never one object per row:
    this is the hot path of ``insts`` on 50,000 instances."""
    refs = filters.get("server_uuid", []) + filters.get("server", [])
    # server= and server_uuid= both name servers: alternatives of one field.
    server_uuids = list(dict.fromkeys(store.find_server(ref).uuid for ref in refs))
    wanted = {key: set(filters.get(key, [])) for key in ("service", "alias", "uuid", "image",
                                                         "state")}
    wanted["server_uuid"] = set(server_uuids)
    read = [f for f in fields if f not in _DERIVED]
    read += [need for f in fields for need in _DERIVED.get(f, ())]
    read += [key for key, values in wanted.items() if values]
    # One service or server: let the store filter (indexed); the rest here.
    services = sorted(wanted["service"])
    columns = store.instance_columns(
        read, service=services[0] if len(services) == 1 else None,
        server_uuid=server_uuids[0] if len(server_uuids) == 1 else None)
    mask = None
    for key, values in wanted.items():
        if values:
            hits = [v in values for v in columns[key]]
            mask = hits if mask is None else list(map(all, zip(mask, hits)))
    if mask is not None:
        columns = {name: list(compress(values, mask)) for name, values in columns.items()}
    if "hostname" in fields:
        hostnames = store.hostnames(of_instances=True)   # not 100,000 servers for 50 of them
        columns["hostname"] = list(map(hostnames.get, columns["server_uuid"]))
    if "url" in fields:
        columns["url"] = list(map(instance_url, columns["admin_ip"], columns["port"]))
    return {name: columns[name] for name in fields}


@click.command("insts")
@click.argument("filters", nargs=-1, metavar="[FILTER]...")
@output_options(["uuid", "service", "hostname", "alias", "state", "generation"], LISTING_FIELDS,
                headers={"uuid": "INSTANCE", "generation": "GEN"})
@pass_state
def insts(state, filters, output):
    """List core-service instances, ordered by service then alias.

    FILTER is a service name (sapi), an instance UUID, or FIELD=VALUE with
    FIELD one of svc (or service), server (hostname or UUID), server_uuid,
    alias, uuid, image, state. Several values of one field match any of
    them; different fields must all match. Example: sdcadm insts sapi
    server=hn0.
    """
    filters = parse_filters(filters)
    state.check_services(filters.get("service", []))
    from sdcadm.cli.listing import listing_for

    fields = listed_fields(output, _JSON_FIELDS)
    render_columns(instance_columns(listing_for(state), filters, fields), output)


SERVICE_FIELDS = ["name", "ha", "delegate_dataset", "instances", "critical", "singleton",
                  "depends_on", "migrate_policy", "image", "description"]


def service_rows(catalog, store_services, counts):
    """One dict per service of the catalog, then per store-only service."""
    images = {s.name: s.image for s in store_services}
    rows = []
    for spec in catalog.services.values():
        rows.append({"name": spec.name, "ha": spec.ha, "delegate_dataset": spec.delegate_dataset,
                     "instances": counts.get(spec.name, 0), "critical": spec.critical,
                     "singleton": spec.singleton, "depends_on": list(spec.depends_on),
                     "migrate_policy": spec.migrate_policy, "image": images.get(spec.name),
                     "description": spec.description})
    for name in sorted((set(images) | set(counts)) - set(catalog.services)):
        rows.append({"name": name, "ha": None, "delegate_dataset": None,
                     "instances": counts.get(name, 0), "critical": None, "singleton": None,
                     "depends_on": [], "migrate_policy": None, "image": images.get(name),
                     "description": "not in the catalog"})
    return rows


@click.command("svcs")
@output_options(["name", "ha", "delegate_dataset", "instances", "critical"], SERVICE_FIELDS,
                headers={"delegate_dataset": "DD", "migrate_policy": "MIGRATE"},
                default_sort="name")
@pass_state
def svcs(state, output):
    """List core services: the catalog's, plus any only the DC store knows.

    HA: runs as three instances on three headnodes. DD: owns a delegate
    dataset (persistent data). INSTANCES: how many the DC store has.
    CRITICAL: the DC cannot provision without it.
    """
    from sdcadm.cli.listing import listing_for

    counts = Counter(listing_for(state).instance_columns(["service"])["service"])
    render(service_rows(state.catalog, state.store.list_services(), counts), output)

"""`sdcadm server ...`: the servers of the DC."""

from operator import attrgetter

import click

from sdcadm.cli import context
from sdcadm.cli.context import pass_state
from sdcadm.cli.main import LazyGroup
from sdcadm.cli.output import format_time, listed_fields, output_options, render_columns
from sdcadm.model import server_flags, status_of

# More `server` subcommands living in their own modules: name -> "module:attribute".
SUBCOMMANDS = {"setup": "sdcadm.cli.server_admin:setup",
               "headnode-setup": "sdcadm.cli.server_admin:headnode_setup",
               "delete": "sdcadm.cli.server_admin:delete",
               "unfence": "sdcadm.cli.server_admin:unfence"}

SERVER_FIELDS = [
    "hostname", "uuid", "status", "flags", "admin_ip", "headnode", "setup", "primary", "fenced",
    "boot_platform", "current_platform", "last_heartbeat", "heartbeat_age", "agent_port",
    "agent_url",
]
PRIMARY_SERVICE = "sapi"


@click.group(cls=LazyGroup, lazy_commands=SUBCOMMANDS)
def server():
    """Servers of the DC: headnodes and compute nodes."""


def primary_headnode(servers, primary_service_servers):
    """The primary headnode's UUID: the headnode hosting the sapi instance,
    else the first headnode by hostname; None without headnodes."""
    headnodes = sorted((s for s in servers if s.headnode), key=lambda s: s.hostname)
    uuids = {s.uuid for s in headnodes}
    for uuid in primary_service_servers:
        if uuid in uuids:
            return uuid
    return headnodes[0].uuid if headnodes else None


def server_columns(servers, fields, primary_uuid, now, heartbeat_timeout):
    """``{field: [value, ...]}`` of ``servers`` for ``fields`` (record fields
    plus derived status, flags and ages). Held by column and only for the
    fields asked for: no dict per server (100,000 servers)."""
    derived = {
        "status": lambda s: status_of(s, now, heartbeat_timeout),
        "flags": lambda s: server_flags(s, primary_uuid),
        "primary": lambda s: s.uuid == primary_uuid,
        "last_heartbeat": lambda s: s.last_heartbeat or None,
        "heartbeat_age": lambda s: round(now - s.last_heartbeat, 1) if s.last_heartbeat else None,
    }
    columns = {}
    for name in fields:
        if name not in SERVER_FIELDS:
            raise ValueError(f"not a server field: {name!r}")
        value = derived.get(name) or attrgetter(name)
        columns[name] = list(map(value, servers))
    return columns


def format_age(seconds):
    """12 -> '12s', 192 -> '3m12s', 7500 -> '2h5m', None -> 'never'."""
    if seconds is None:
        return "never"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


@server.command("ls")
@output_options(
    ["hostname", "uuid", "status", "flags", "admin_ip"], SERVER_FIELDS,
    long_columns=["hostname", "uuid", "status", "flags", "admin_ip", "boot_platform",
                  "current_platform", "heartbeat_age"],
    formats={"heartbeat_age": format_age, "last_heartbeat": format_time},
    default_sort="hostname")
@pass_state
def ls(state, output):
    """List servers.

    STATUS is running while the server's agent heartbeat is younger than
    agent.heartbeat_timeout, else unreachable. FLAGS, one letter each or '-':
    S set up (a new server's agent registers it without S: it runs nothing
    until `sdcadm server setup`), H headnode, P primary (the headnode hosting the sapi instance;
    without one, the first headnode by hostname), B boot platform differs
    from the current one, F fenced (declared dead; it must not run what it
    no longer owns).
    """
    from sdcadm.cli.listing import listing_for

    listing = listing_for(state)
    servers = listing.list_servers()
    primary = primary_headnode(servers, listing.instance_columns(
        ["server_uuid"], service=PRIMARY_SERVICE)["server_uuid"])
    render_columns(server_columns(servers, listed_fields(output, SERVER_FIELDS), primary,
                                  context.now(), state.config.agent.heartbeat_timeout),
                   output, count=len(servers))


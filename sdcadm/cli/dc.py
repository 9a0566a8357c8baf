"""`sdcadm dc init`: create the DC on its first headnode."""

import json

import click

from sdcadm.cli.context import pass_state


@click.group("dc")
def dc():
    """The DC as a whole."""


@dc.command("init")
@click.option("--admin-net", "admin_net", required=True, metavar="CIDR",
              help="The admin network (e.g. 10.99.99.0/24).")
@click.option("--admin-ip", "admin_ip", metavar="IP",
              help="This headnode's admin address (default: agent.listen).")
@click.option("--reserve", "reserve", multiple=True, metavar="IP",
              help="An address of the admin network nothing in the DC may take (a gateway, "
                   "the operator's host); repeat for more.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@pass_state
def init(state, admin_net, admin_ip, reserve, as_json):
    """Create the DC here, on its first headnode.

    Creates the DC store's schema (store.* in the configuration: a sqlite
    file, or the etcd cluster), the admin network, and this server
    (server_uuid, hostname) as the first headnode, set up, with its admin
    address; the --reserve addresses are never given to anything. Running
    it again changes nothing; a store that already holds
    another DC is refused, unchanged.
    """
    from sdcadm.errors import ConfigError
    from sdcadm.procedures.dc_init import DcInit, check_arguments, init_dc
    from sdcadm.store import store_for

    config = state.config
    missing = [k for k in ("server_uuid", "hostname") if not getattr(config, k)]
    if missing:
        raise ConfigError(config.path, [f"key {k!r} is required by `dc init`" for k in missing])
    from sdcadm.uuids import check_uuid

    check_uuid(config.server_uuid, "server_uuid")
    want = DcInit(config.server_uuid, config.hostname, admin_ip or config.agent.listen,
                  admin_net, config.agent.port, tuple(dict.fromkeys(reserve)))
    check_arguments(want)  # before the store is created
    with store_for(config).initialize() as store:
        done = init_dc(store, want)
    if as_json:
        click.echo(json.dumps({"server": want.hostname, "admin_net": admin_net, "done": done}))
    elif done:
        click.echo(f"DC created on {want.hostname} ({want.admin_ip}, admin network "
                   f"{admin_net}): {', '.join(done)}")
    else:
        click.echo(f"the DC already exists on {want.hostname}: nothing to do")

"""`sdcadm server setup|headnode-setup|delete|unfence` (registered lazily by cli/server.py)."""

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.procedure import procedure_options, run


@click.command("delete")
@click.argument("ref", metavar="SERVER")
@click.option("--force", is_flag=True,
              help="Also delete the HA peer records a fenced SERVER still owns (the other "
                   "peers carry those services). Never drops a non-HA instance.")
@procedure_options
@pass_state
def delete(state, ref, force, run_options):
    """Remove SERVER (hostname or UUID) from the DC for good.

    For a server that is gone: a lost headnode once its services were
    restored elsewhere, a decommissioned one once migrated away. Releases its
    addresses and drops its restore-data statuses, then deletes its record.
    Refused (nothing changed) while it is running, while it owns an instance
    of a non-HA service (restore or migrate it first), while it owns HA
    peers unless it is fenced and --force is given, and for the last
    headnode. Its etcd member, if any, is not removed by this command yet.
    """
    from sdcadm.procedures.server_admin import DeleteServer

    run(state, [DeleteServer(ref, force=force)], run_options)


@click.command("unfence")
@click.argument("ref", metavar="SERVER")
@procedure_options
@pass_state
def unfence(state, ref, run_options):
    """Clear the fence of SERVER, fenced by mistake.

    Its agent then starts again what the DC store assigns to it. Refused
    while any instance restored from it runs elsewhere: such a server is not
    coming back as it was (delete it, and set it up again as a new server).
    """
    from sdcadm.procedures.server_admin import UnfenceServer

    run(state, [UnfenceServer(ref)], run_options)


@click.command("setup")
@click.argument("ref", metavar="SERVER")
@procedure_options
@pass_state
def setup(state, ref, run_options):
    """Set up SERVER (hostname or UUID), a server its agent registered.

    RFD 67's cn-setup. A new server's agent registers it in the DC store on
    its own (its UUID, hostname and admin address; `server ls` shows it
    without flag S) and runs nothing until it is set up. This checks that
    SERVER is alive (fresh heartbeat, not fenced, its agent answering with
    its UUID), marks it set up and waits until its agent has seen it; then
    `sdcadm create SERVICE --server SERVER` may place instances on it.
    Already set up: nothing to do. Refused, with nothing changed, for an
    unknown, fenced or unreachable server.
    """
    from sdcadm.procedures.server_setup import SetupServer

    run(state, [SetupServer(ref)], run_options)

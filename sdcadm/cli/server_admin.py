"""`sdcadm server setup|headnode-setup|delete|unfence` (registered lazily by cli/server.py)."""

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.options import Seconds
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
    addresses and drops its restore-data statuses, removes its etcd member
    from the store's cluster (an etcd store), then deletes its record.
    Refused (nothing changed) while it is running, while it owns an instance
    of a non-HA service (restore or migrate it first), while it owns HA
    peers unless it is fenced and --force is given, and for the last
    headnode.
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
@click.argument("refs", metavar="SERVER...", nargs=-1, required=True)
@click.option("--timeout", default=60.0, show_default=True, type=Seconds(1), metavar="SECONDS",
              help="How long to wait for each server's agent to see it is set up.")
@procedure_options
@pass_state
def setup(state, refs, timeout, run_options):
    """Set up each SERVER (hostname or UUID), servers their agents registered.

    RFD 67's cn-setup. A new server's agent registers it in the DC store on
    its own (its UUID, hostname and admin address; `server ls` shows it
    without flag S) and runs nothing until it is set up. This checks that
    each SERVER is alive (fresh heartbeat, not fenced, its agent answering
    with its UUID), marks it set up and waits until its agent has seen it;
    then `sdcadm create SERVICE --server SERVER` may place instances on it.
    Servers already set up are left as they are. Refused, with nothing
    changed, when any SERVER is unknown, fenced or unreachable.
    """
    from sdcadm.procedures.server_setup import SetupServer

    run(state, [SetupServer(refs, timeout=timeout)], run_options)


@click.command("headnode-setup")
@click.argument("refs", metavar="SERVER...", nargs=-1, required=True)
@click.option("--many-headnodes", "many", is_flag=True,
              help="Go on although the DC would have more than five headnodes (each one pulls "
                   "the restore data of every other server).")
@click.option("--timeout", default=300.0, show_default=True, type=Seconds(1), metavar="SECONDS",
              help="How long to wait for the first restore data to arrive on each server.")
@procedure_options
@pass_state
def headnode_setup(state, refs, many, timeout, run_options):
    """Make each SERVER (hostname or UUID) a secondary headnode.

    RFD 67's "Setting up secondary headnodes". Each SERVER must exist, be set
    up (sdcadm server setup), be running with its agent answering, and not
    be a headnode yet; its agent must be recent enough and pull restore
    data. More than five headnodes afterwards is asked again at a terminal
    (refused with -y or without one, unless --many-headnodes). Instances of
    services outside the core catalog on it are warned about. All of that
    is checked for every SERVER before anything changes.

    Then: build the headnode bundle of this headnode's usbkey directory,
    send it to each SERVER over SSH (host keys checked), seed its usbkey
    directory from it (checked member by member, swapped in atomically),
    mark it a headnode (its agent starts pulling restore data), reserve one
    recovery admin address per single-instance service (saying so when the
    admin network has no room), run a first restore-data sync there and
    verify that a good copy of every instance it must hold arrived.

    Not done yet: the SERVER's etcd member. The DC store keeps the members
    it was built with; a new headnode reaches the store as a client.
    Re-running the same command after a failure resumes it.
    """
    import sys

    from sdcadm.procedures.headnode_setup import HeadnodeSetup
    from sdcadm.procedures.planning.headnode_plan import TooManyHeadnodes

    try:
        run(state, [HeadnodeSetup(refs, many=many, timeout=timeout)], run_options)
    except TooManyHeadnodes as e:
        # Asked again, at a terminal only: -y (or no terminal) never goes past it unsaid.
        if run_options.yes or not sys.stdin.isatty():
            raise
        click.confirm(f"{e.message}. Go on?", abort=True, err=True)
        run(state, [HeadnodeSetup(refs, many=True, timeout=timeout)], run_options)

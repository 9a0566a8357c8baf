"""`sdcadm service migrate` and `sdcadm service restore`."""

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.options import Seconds
from sdcadm.cli.procedure import procedure_options, run


@click.command("migrate")
@click.argument("src", metavar="SRC")
@click.argument("dst", metavar="DST")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--all", "all_services", is_flag=True,
              help="Migrate every service that has an instance on SRC.")
@click.option("--timeout", default=120.0, show_default=True, type=Seconds(1),
              metavar="SECONDS", help="How long to wait for each new instance to be healthy.")
@procedure_options
@pass_state
def migrate(state, src, dst, services, all_services, timeout, run_options):
    """Move core-service instances from server SRC to headnode DST.

    A new instance is created on DST (next free alias, new admin address) and
    the old one destroyed, service by service in dependency order. Stateless
    services see no downtime (the new one is healthy before the old one goes);
    services with a delegate dataset are synced while running, stopped, synced
    once more incrementally and started on DST from that copy. HA services are
    not doubled on a DST that has one; `nat` is never migrated. Prints each
    service's measured downtime.

    Both servers must be running; to rebuild services of a dead server use
    `sdcadm service restore`. Re-running after a failure finishes the job.
    """
    from sdcadm.procedures.migrate import MigrateServices

    if not services and not all_services:
        raise click.UsageError("name the services to migrate, or pass --all")
    run(state, [MigrateServices(src, dst, services, all_services, timeout=timeout)], run_options)


@click.command("restore")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--all", "all_services", is_flag=True,
              help="Restore every service that had an instance on the dead server(s).")
@click.option("--dead", "dead", multiple=True, metavar="SERVER",
              help="Declare SERVER dead and fence it first (repeatable): its fence command "
                   "(fencing.command) powers it off, and nothing moves unless it exits 0 in "
                   "time. Without --dead, only servers fenced by an earlier restore are "
                   "restored from; a server that is merely silent is refused.")
@click.option("--confirm-powered-off", "confirmed_off", multiple=True, metavar="SERVER",
              help="State that SERVER (also named with --dead) is powered off: its fence "
                   "command is not run. Required for a server with no fence command "
                   "configured. Check first (console, power cord): if it still runs, its "
                   "singletons will answer twice.")
@click.option("--timeout", default=120.0, show_default=True, type=Seconds(1),
              metavar="SECONDS", help="How long to wait for each restored instance to be healthy.")
@click.option("--accept-data-age", is_flag=True,
              help="Restore even when the newest copy of an instance is older than "
                   "restore.max_data_age (the RPO limit, default 600 s): the writes made since "
                   "that copy are lost.")
@procedure_options
@pass_state
def restore(state, services, all_services, dead, confirmed_off, timeout, accept_data_age,
            run_options):
    """Rebuild, on this headnode, the services a dead server was running.

    Run it on a surviving headnode (the server of your configuration). Every
    instance of a non-HA service that lived on the dead server is restored here
    in dependency order, from this headnode's restore data: same UUID and
    alias, its image, and a zero-copy clone of the last good copy of its
    delegate dataset (nothing is copied over the network, unless another
    headnode holds a newer copy: see below). Ownership moves by
    compare-and-swap on the instance generation, so the dead server, if it
    comes back, never runs them again. Reports per service the restore time
    (RTO) and the age of the data restored (RPO).

    Fencing first: a server named with --dead is powered off by its fence
    agent (fencing.command in the configuration; `{hostname}`, `{address}`,
    `{uuid}` replaced), with fencing.timeout; a fence command that fails or
    hangs refuses the restore and moves nothing. --confirm-powered-off SERVER
    replaces the fence command with your word. A silent heartbeat or a probe
    that times out is never taken as proof that a server runs nothing: a
    server that is only silent is listed and refused. An instance an
    interrupted `service migrate` had already replaced is not restored: the
    migrate is finished (the replacement kept). See docs/recovery.md.

    The DC store must be reachable.

    Every other reachable headnode is asked how old its copy of each
    instance is; the newest copy wins (a tie goes to this headnode). A newer
    copy on another headnode is pulled here first and checked against its
    signed manifest (dir backend; with zfs, run the restore where the newest
    copy is). When the newest copy is older than restore.max_data_age, the
    restore is refused before anything moves, naming the instances and their
    ages, unless --accept-data-age. The summary shows each instance's data
    age and which headnode it comes from.
    """
    from sdcadm.errors import StoreUnreachable
    from sdcadm.procedures.restore import RestoreServices

    if not services and not all_services:
        raise click.UsageError("name the services to restore, or pass --all")
    try:
        run(state, [RestoreServices(services, all_services, dead, timeout=timeout,
                                    confirmed_off=confirmed_off,
                                    accept_data_age=accept_data_age)], run_options)
    except StoreUnreachable as e:
        raise StoreUnreachable(
            f"cannot restore: the DC store is unreachable ({e.message}); nothing was changed",
            hint="restore moves instances by compare-and-swap in the DC store, so it needs it: "
                 f"{e.hint or 'bring the store back'}; then run this again") from None

"""`sdcadm create SERVICE... --server SERVER`: add instances of core services."""

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.options import Seconds
from sdcadm.cli.procedure import procedure_options, run


@click.command("create")
@click.argument("services", metavar="SERVICE...", nargs=-1, required=True)
@click.option("-s", "--server", "server", required=True, metavar="SERVER",
              help="The server (hostname or UUID) that runs the new instances.")
@click.option("--alias", metavar="ALIAS", help="Its alias (default: the next free <service><n>; "
              "one SERVICE only).")
@click.option("--image", metavar="UUID", help="Its image (default: the service's, or the one "
              "image of that name in the DC store; one SERVICE only).")
@click.option("--timeout", default=120.0, show_default=True, type=Seconds(1), metavar="SECONDS",
              help="How long to wait for each to answer its health check.")
@procedure_options
@pass_state
def create(state, services, server, alias, image, timeout, run_options):
    """Add an instance of each SERVICE on a server, and wait until they answer.

    The server must be set up, running and not fenced; its agent starts the
    new instances together. Refused, with nothing created, when any SERVICE
    cannot be: one that runs once (a singleton, or stateful and not HA) and
    has an instance already (move it with `sdcadm service migrate`), or an
    HA service that already has a peer on that server. Running the same command
    again after a failure finds the instances it made and only waits.
    """
    from sdcadm.procedures.create import CreateInstance

    run(state, [CreateInstance(services, server, alias=alias, image=image, timeout=timeout)],
        run_options)

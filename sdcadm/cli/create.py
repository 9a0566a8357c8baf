"""`sdcadm create SERVICE --server SERVER`: add an instance of a core service."""

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.options import Seconds
from sdcadm.cli.procedure import procedure_options, run


@click.command("create")
@click.argument("service", metavar="SERVICE")
@click.option("-s", "--server", "server", required=True, metavar="SERVER",
              help="The server (hostname or UUID) that runs the new instance.")
@click.option("--alias", metavar="ALIAS", help="Its alias (default: the next free <service><n>).")
@click.option("--image", metavar="UUID", help="Its image (default: the service's, or the one "
              "image of that name in the DC store).")
@click.option("--timeout", default=120.0, show_default=True, type=Seconds(1), metavar="SECONDS",
              help="How long to wait for it to answer its health check.")
@procedure_options
@pass_state
def create(state, service, server, alias, image, timeout, run_options):
    """Add an instance of a core service on a server, and wait until it answers.

    The server must be set up, running and not fenced. Refused for a service
    that runs once (a singleton, or stateful and not HA) when it has an
    instance already (move it with `sdcadm service migrate`), and for an HA
    service that already has a peer on that server. Running the same command
    again after a failure finds the instance it made and only waits.
    """
    from sdcadm.procedures.create import CreateInstance

    run(state, [CreateInstance(service, server, alias=alias, image=image, timeout=timeout)],
        run_options)

"""`sdcadm post-setup ha-binder|ha-manatee|ha-moray [SERVER...]`."""

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.options import Seconds
from sdcadm.cli.procedure import procedure_options, run


@click.group("post-setup")
def post_setup():
    """Make a DC's services highly available once it has its headnodes."""


def _ha_command(service):
    @click.command(f"ha-{service}")
    @click.argument("servers", nargs=-1, metavar="[SERVER]...")
    @click.option("--timeout", default=120.0, show_default=True, type=Seconds(1),
                  metavar="SECONDS", help="How long to wait for each new instance.")
    @procedure_options
    @pass_state
    def command(state, servers, timeout, run_options):
        from sdcadm.procedures.create import PostSetupHa

        run(state, [PostSetupHa(service, servers, timeout=timeout)], run_options)

    command.help = (f"Run {service} on each SERVER (default: every headnode), adding only the "
                    f"instances that are missing; never two on one server."
                    + (" binder runs 1, 3 or 5 instances (an ensemble keeps a majority): "
                       "anything else is refused." if service == "binder" else "")
                    + " Running it again once done changes nothing.")
    return command


for _service in ("binder", "manatee", "moray"):
    post_setup.add_command(_ha_command(_service))

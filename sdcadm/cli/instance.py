"""`sdcadm instance ...`: act on core-service instances."""

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.options import Seconds
from sdcadm.cli.procedure import procedure_options, run


@click.group()
def instance():
    """Act on core-service instances (see `sdcadm insts` to list them)."""


@instance.command("restart")
@click.argument("instances", nargs=-1, required=True, metavar="INSTANCE...")
@click.option("--timeout", default=60.0, show_default=True, type=Seconds(0.1),
              metavar="SECONDS", help="How long to wait for each instance to answer again.")
@procedure_options
@pass_state
def restart(state, instances, timeout, run_options):
    """Restart instances (by alias or UUID), one at a time, through their agents.

    Each instance's agent restarts its process; sdcadm then probes the
    instance's /ping until a new process answers, and reports the downtime the
    probes saw. Refused (nothing is done) for an unknown instance, or one whose
    server is unreachable, fenced, or whose agent does not answer.

    Runs as a procedure: DC-wide lock, plan, confirmation (-y to skip), a task
    (`sdcadm task ls`) and a log file. If it fails, running the same command
    again within 10 minutes finishes the job without restarting twice the
    instances already restarted.
    """
    from sdcadm.procedures.restart import RestartInstances

    run(state, [RestartInstances(instances, timeout=timeout)], run_options)

"""The flags and the helper of every command that runs procedures.

    @click.command("restart")
    @click.argument("aliases", nargs=-1, required=True)
    @procedure_options
    @pass_state
    def restart(state, aliases, run_options):
        run(state, [RestartInstances(aliases)], run_options)

``@procedure_options`` adds ``-y/--yes``, ``-n/--dry-run``, ``--lock-timeout``
and ``-j/--json`` and passes one ``run_options`` (a ``RunOptions``).
``run(state, procs, run_options)`` runs the procedures with the one runner:
progress on stderr, the plan and outcome on stdout (on stderr with ``-j``,
whose stdout is the final result as one JSON object, also on failure).
"""

import functools
import json
from dataclasses import dataclass

import click

from sdcadm.cli import context
from sdcadm.cli.options import Seconds
from sdcadm.cli.progress import printer

DEFAULT_LOCK_TIMEOUT = 60.0


@dataclass
class RunOptions:
    yes: bool = False
    dry_run: bool = False
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    json: bool = False


def procedure_options(f):
    """Decorator adding the flags of a procedure command; passes ``run_options``."""

    @functools.wraps(f)
    def wrapper(*args, proc_yes, proc_dry_run, proc_lock_timeout, proc_json, **kwargs):
        kwargs["run_options"] = RunOptions(yes=proc_yes, dry_run=proc_dry_run,
                                           lock_timeout=proc_lock_timeout, json=proc_json)
        return f(*args, **kwargs)

    options = [
        click.option("-y", "--yes", "proc_yes", is_flag=True,
                     help="Do not ask for confirmation (needed when stdin is not a terminal)."),
        click.option("-n", "--dry-run", "proc_dry_run", is_flag=True,
                     help="Show what would be done and change nothing (no lock, no task)."),
        click.option("--lock-timeout", "proc_lock_timeout", type=Seconds(0),
                     default=DEFAULT_LOCK_TIMEOUT, show_default=True, metavar="SECONDS",
                     help="How long to wait for the DC-wide lock held by another operation."),
        click.option("-j", "--json", "proc_json", is_flag=True,
                     help="Print the result as one JSON object on stdout (plan, progress and "
                          "prompts go to stderr)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def run(state, procs, run_options, lock_ttl=None):
    """Run ``procs`` with the runner, rendering progress; return the RunResult."""
    from sdcadm.procedures import ProcedureContext, ProcedureFailed, run_procedures
    from sdcadm.procedures.console import Console

    ctx = ProcedureContext.for_config(state.config, state.store, catalog=state.catalog,
                                      now=lambda: context.now())
    kwargs = {"lock_ttl": lock_ttl} if lock_ttl else {}
    try:
        result = run_procedures(procs, ctx, yes=run_options.yes, dry_run=run_options.dry_run,
                                observer=printer(), lock_timeout=run_options.lock_timeout,
                                console=Console(info_to_stderr=run_options.json), **kwargs)
    except ProcedureFailed as e:
        if run_options.json and e.result is not None:
            _emit(e.result)
        raise
    if run_options.json:
        _emit(result)
    return result


def _emit(result):
    click.echo(json.dumps(result.to_dict(), indent=2, default=str))

"""`sdcadm service ...`: operations on core services.

More subcommands (``migrate``, ``restore``) live in their own modules and are
registered in ``SUBCOMMANDS`` (name -> "module:attribute").
"""

import json
import time

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.main import LazyGroup
from sdcadm.errors import ReportedFailure, ReportedUnreachable, SdcadmError

SUBCOMMANDS = {
    "migrate": "sdcadm.cli.service_procs:migrate",
    "restore": "sdcadm.cli.service_procs:restore",
}


@click.group(cls=LazyGroup, lazy_commands=SUBCOMMANDS)
def service():
    """Core services: keep their restore data fresh, migrate and restore them."""


@service.command("sync-restore-data")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--reseed", is_flag=True,
              help="Send full copies where a replica diverged from its source (the current "
                   "copy is kept until the new one is complete).")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="Print the result of every headnode as JSON; no progress on stderr.")
@pass_state
def sync_restore_data(state, services, reseed, as_json):
    """Make every headnode pull its restore data now (all services, or these).

    Asks each headnode's agent in parallel and shows its progress on stderr.
    Exit status: 0 all synced; 1 a sync failed (listed per headnode); 3 the
    only problems are servers that could not be reached.
    """
    from sdcadm.cli.progress import HeadnodeProgress
    from sdcadm.config import read_token
    from sdcadm.restore_data.client import sync_headnodes

    names = state.check_services(services)
    config = state.config
    token = read_token(config.agent.token_file, config.path)
    headnodes = [s for s in state.store.list_servers() if s.headnode]
    if not headnodes:
        raise SdcadmError("the DC has no headnode")
    display = None if as_json else HeadnodeProgress([s.hostname for s in headnodes])
    started = time.monotonic()
    try:
        results = sync_headnodes(headnodes, token, names or None, reseed,
                                 display.update if display else None)
    finally:
        if display:
            display.close()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2, sort_keys=True))
    else:
        _print_results(results, time.monotonic() - started)
    check_synced(results)


def check_synced(results):
    """Raise (the failures are printed already) unless every headnode synced:
    ReportedUnreachable when the only problems are servers out of reach."""
    problems = {kind for r in results for kind, _ in r.problems}
    if problems == {"unreachable"}:
        raise ReportedUnreachable("some servers could not be reached")
    if problems:
        raise ReportedFailure("restore data did not sync on every headnode")


def _print_results(results, elapsed):
    from sdcadm.cli.output import OutputOptions, render

    rows = []
    for r in results:
        if not r.reachable or (r.error and not r.services):
            rows.append({"headnode": r.hostname, "service": None,
                         "status": "unreachable" if not r.reachable else "failed",
                         "duration": None, "error": r.error})
        for name, res in sorted(r.services.items()):
            rows.append({"headnode": r.hostname, "service": name, "status": res.status,
                         "duration": f"{res.duration or 0:.1f}s",
                         "error": res.error or (f"warning: {res.warning}" if res.warning else None)})
        if r.reachable and not r.services and not r.error:
            rows.append({"headnode": r.hostname, "service": None, "status": "ok",
                         "duration": None, "error": "nothing to pull"})
    render(rows, OutputOptions(columns=["headnode", "service", "status", "duration", "error"]))
    failed = [r for r in results if not r.ok]
    for r in failed:
        click.echo(f"sdcadm: {r.hostname}: " + "; ".join(text for _, text in r.problems), err=True)
    click.echo(f"restore data synced on {len(results) - len(failed)} of {len(results)} "
               f"headnode(s) ({elapsed:.1f}s)", err=True)

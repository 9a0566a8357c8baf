"""`sdcadm restore-data ...`: what each headnode can restore, and proof that it can."""

import json

import click

from sdcadm.cli import context
from sdcadm.cli.context import pass_state
from sdcadm.cli.output import format_bytes, format_time, output_options, render
from sdcadm.errors import ReportedFailure, RestoreDataBroken

LS_FIELDS = ["headnode", "service", "instance", "source", "snapshot", "age", "size", "status",
             "stale", "error", "vanished", "instance_uuid", "source_uuid", "receiver", "guid",
             "last_success", "last_attempt", "duration"]
LS_DEFAULT = ["headnode", "service", "instance", "source", "snapshot", "age", "size", "status"]


def _format_age(seconds):
    from sdcadm.cli.server import format_age

    return format_age(seconds)


@click.group("restore-data")
def restore_data():
    """Restore data kept by each headnode for the non-HA services of the others."""


def ls_rows(statuses, servers, now_, sync_interval):
    """One dict per (headnode, instance) status row (pure)."""
    from sdcadm.restore_data.plan import is_stale

    names = {s.uuid: s.hostname for s in servers}
    rows = []
    for st in statuses:
        rows.append({
            "headnode": names.get(st.receiver, st.receiver), "service": st.service,
            "instance": st.alias or st.instance, "source": names.get(st.source, st.source),
            "snapshot": st.snapshot, "age": (now_ - st.last_success) if st.last_success else None,
            "size": st.bytes, "status": st.status,
            "stale": is_stale(st.last_success, now_, sync_interval), "error": st.error,
            "instance_uuid": st.instance, "source_uuid": st.source, "receiver": st.receiver,
            "guid": st.guid, "last_success": st.last_success, "last_attempt": st.last_attempt,
            "duration": st.duration, "vanished": st.vanished,
        })
    return rows


@restore_data.command("ls")
@output_options(LS_DEFAULT, LS_FIELDS, long_columns=LS_DEFAULT + ["stale", "vanished", "error"],
                formats={"age": _format_age, "size": format_bytes,
                         "last_success": format_time, "last_attempt": format_time},
                default_sort="headnode,service,instance")
@pass_state
def ls(state, output):
    """What every headnode holds: per instance its source, copy, age, size and status.

    AGE is the time since the last good sync (what a restore would get);
    STATUS is the result of the last attempt (ok, failed, diverged,
    unreachable); VANISHED (with -l) counts the files a busy instance renamed
    or deleted while its dataset was copied: the copy holds the rest and was
    kept. Read from the DC store, so it covers every headnode.
    """
    rows = ls_rows(state.store.list_restore_status(), state.store.list_servers(), context.now(),
                   float(state.config.restore_data.sync_interval))
    render(rows, output)


@restore_data.command("verify")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def verify_cmd(state, services, as_json):
    """Prove this headnode's restore data restores (all services, or these).

    Restores each dataset copy into a scratch clone and checks every file
    against the manifest (missing, extra and changed files are named), checks
    the manifest itself, the metadata and the images, then removes the clone.
    Needs no DC store. Exit status 1 when anything is broken.
    """
    from sdcadm.datasets import get_backend
    from sdcadm.restore_data.layout import restore_layout
    from sdcadm.restore_data.verify import verify

    config = state.config
    layout = restore_layout(config)
    report = verify(layout, get_backend(config), list(services) or None)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        if not report.ok:
            raise ReportedFailure("restore data is broken")   # the report says where
        return
    _print_report(report, layout)
    broken = [s.service for s in report.services if not s.ok]
    if broken or report.problems:
        raise RestoreDataBroken("restore data is broken"
                                + (f" for: {', '.join(broken)}" if broken else "")
                                + "; run `sdcadm service sync-restore-data` to make a new copy")


def _print_report(report, layout):
    if not report.services:
        click.echo(f"no restore data of any service in {layout.root} "
                   "(a headnode keeps copies only of non-HA instances on other servers)")
    for s in report.services:
        if s.ok:
            click.echo(f"{s.service}: restorable as of {format_time(s.as_of) or 'never'} "
                       f"({len(s.instances)} instance(s), {s.files} files, "
                       f"{format_bytes(s.bytes)} checked)")
        else:
            click.echo(f"{s.service}: BROKEN ({len(s.problems)} problem(s))")
        for inst in s.instances:
            data = (f"dataset {inst['snapshot']}, {inst['files']} files, "
                    f"{format_bytes(inst['bytes'])}" if inst["snapshot"] else "no dataset")
            last = inst["status"] + (f" ({inst['error']})" if inst["error"] else "")
            click.echo(f"  {inst['alias']} from {inst['source'] or '?'}: {data}; last sync {last}")
        for problem in s.problems:
            click.echo(f"  ! {problem}")
    for problem in report.problems:
        click.echo(f"! {problem}")

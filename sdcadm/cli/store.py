"""`sdcadm store status|recover|start-member`: the DC store's members and
snapshots, rebuilding it from a lone surviving headnode, and starting a new
headnode's member (docs/store.md)."""

import json

import click

from sdcadm.cli import context
from sdcadm.cli.context import pass_state
from sdcadm.cli.options import DAY, Seconds
from sdcadm.cli.output import format_bytes


@click.group("store")
def store():
    """The DC store: its etcd members and the snapshots the headnodes keep of it."""


@store.command("status")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_state
def status(state, as_json):
    """Members, leader, revision and size of the store; each headnode's snapshot.

    Every configured etcd endpoint is asked for its own view (a member that
    lost its quorum still answers, without a leader). SNAPSHOTS lists the
    snapshot of the store each headnode keeps in its restore data (this one
    read here, the others over SSH), with its revision and age: what `sdcadm
    store recover` would choose from. Works without a quorum. Exit status 1
    when the store has no quorum. With the sqlite backend: says what applies.
    """
    from sdcadm.errors import ReportedFailure
    from sdcadm.procedures.store_recover import store_status

    doc = store_status(state.config, lambda: state.store, context.now())
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        for line in status_lines(doc):
            click.echo(line)
    if doc["backend"] == "etcd" and not doc["quorum"]:
        raise ReportedFailure("the store has no quorum")


def status_lines(doc):
    """Lines for people (pure)."""
    from sdcadm.procedures.planning.store_plan import age_text

    if doc["backend"] != "etcd":
        return [f"backend: {doc['backend']} ({doc.get('path')})", doc["note"]]
    lines = [f"backend:   etcd, cluster {doc['cluster_id'] or '?'}",
             f"quorum:    {'yes' if doc['quorum'] else 'NO (run `sdcadm store recover` on a lone survivor)'}",
             f"leader:    {doc['leader'] or '-'}",
             f"revision:  {doc['revision'] if doc['revision'] is not None else '-'}",
             f"db size:   {format_bytes(doc['db_size']) if doc['db_size'] else '-'}", "",
             "MEMBERS"]
    if doc["members"]:
        for m in doc["members"]:
            lines.append(f"  {m['name']:<10} peer {','.join(m['peer_urls']):<28} client "
                         f"{','.join(m['client_urls']):<28} "
                         f"{'reachable' if m['reachable'] else 'UNREACHABLE'}"
                         f"{' leader' if m['is_leader'] else ''}")
    else:
        lines.append("  (no member with a leader answers: the member list needs a quorum)")
    lines.append("ENDPOINTS")
    for r in doc["endpoints"]:
        if r["reachable"]:
            lines.append(f"  {r['endpoint']:<24} member {r['member_id']} revision {r['revision']}"
                         f" leader {r['leader'] or 'NONE'}")
        else:
            lines.append(f"  {r['endpoint']:<24} UNREACHABLE: {r.get('error', '')}")
    lines.append(f"SNAPSHOTS (limit for `store recover`: {age_text(doc['max_snapshot_age'])})")
    for s in doc["snapshots"]:
        if s["ok"]:
            lines.append(f"  {s['headnode']:<10} revision {s['revision']:<8} age "
                         f"{age_text(s['age_s']):<6} cluster {s['cluster_id']}")
        else:
            lines.append(f"  {s['headnode']:<10} -- {s['problem']}")
    return lines


@store.command("start-member")
@click.option("--name", required=True, help="The member's name (the server's hostname).")
@click.option("--peer-url", "peer_url", required=True, metavar="URL",
              help="This member's peer URL, on this server's admin address (http://IP:2380).")
@click.option("--client-url", "client_url", required=True, metavar="URL",
              help="This member's client URL (http://IP:2379).")
@click.option("--initial-cluster", "initial_cluster", required=True, metavar="NAME=URL,...",
              help="The cluster's members with this one added, as `member add` answered.")
@click.option("--data-dir", "data_dir", required=True, metavar="DIR",
              help="The member's data directory, on this server's own disk.")
@click.option("--pid-file", "pid_file", required=True, metavar="FILE", help="Where its pid goes.")
@click.option("--log", "log", required=True, metavar="FILE", help="etcd's log file.")
@click.option("--record", "record", metavar="FILE",
              help="Write what was started there (name, URLs, data directory, the commands "
                   "that start and stop it), for `store recover` on this server.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the result as JSON.")
def start_member_cmd(name, peer_url, client_url, initial_cluster, data_dir, pid_file, log,
                     record, as_json):
    """Start this server's etcd member, joining a running cluster.

    Run on the new member's server, after the cluster agreed to the member
    (`server headnode-setup` runs it there over SSH, having added the member
    through etcd's API). etcd starts with --initial-cluster-state existing on
    the data directory given; a member already running on it is left as it
    is, and one whose data directory exists resumes from it (etcd ignores the
    initial-cluster flags then). It keeps running once this command returns.
    With --record, what was started is written to FILE (headnode-setup
    writes <root>/var/sdcadm/etcd-member.json), where `store recover` finds
    this member when the configuration has no store.member section.
    """
    from sdcadm.store.etcd_member import start_member

    pid, started = start_member(name, data_dir, peer_url, client_url, initial_cluster,
                                pid_file, log, record=record)
    doc = {"name": name, "pid": pid, "started": started, "data_dir": data_dir}
    if as_json:
        click.echo(json.dumps(doc, sort_keys=True))
    else:
        click.echo(f"etcd member {name} {'started' if started else 'already running'} "
                   f"(pid {pid}, data in {data_dir})")


@store.command("stop-member")
@click.option("--pid-file", "pid_file", required=True, metavar="FILE",
              help="The member's pid file (as `store start-member` wrote it).")
@click.option("--data-dir", "data_dir", required=True, metavar="DIR",
              help="The member's data directory: only an etcd running on it is stopped.")
@click.option("--timeout", default=10.0, show_default=True, type=Seconds(0.1, 600),
              metavar="SECONDS", help="How long SIGTERM is given before SIGKILL.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the result as JSON.")
def stop_member_cmd(pid_file, data_dir, timeout, as_json):
    """Stop this server's etcd member, as `store start-member` started it.

    The process named by the pid file is stopped only when it is an etcd
    running on DIR (a stale pid file never kills another process): SIGTERM,
    then SIGKILL after --timeout. No member running there: nothing to do.
    `store recover` runs this on a headnode made by headnode-setup (its
    etcd-member.json names it).
    """
    from sdcadm.store.etcd_member import stop_member

    stopped = stop_member(pid_file, data_dir, timeout)
    if as_json:
        click.echo(json.dumps({"stopped": stopped, "data_dir": data_dir}))
    else:
        click.echo(f"etcd member on {data_dir} " + ("stopped" if stopped else
                                                   "was not running: nothing to do"))


@store.command("recover")
@click.option("--from-snapshot", "from_snapshot", metavar="PATH",
              type=click.Path(exists=True, dir_okay=True, file_okay=True),
              help="Use this snapshot (a restore-data store/ directory, or the snapshot file "
                   "in one; its signed manifest must be next to it) instead of the newest "
                   "found on the headnodes.")
@click.option("--max-age", "max_age", type=Seconds(1, 365 * DAY), metavar="SECONDS",
              help="Refuse a snapshot older than this (default: store.max_snapshot_age).")
@click.option("--force", is_flag=True,
              help="Go on with a snapshot older than the limit, or while the store still has "
                   "a quorum (every write since the snapshot is lost).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the plan and result as JSON.")
@pass_state
def recover(state, from_snapshot, max_age, force, yes, dry_run, as_json):
    """Rebuild the store on this headnode after two of three headnodes were lost.

    Finds the newest good snapshot of the store among the reachable
    headnodes (this one's restore data first, the others' over SSH), shows
    its revision and age, and asks. Then stops this headnode's etcd member,
    restores the snapshot into a new one-member cluster (the old data
    directory is kept), starts it, points this headnode's store.etcd_endpoints
    at it and checks that it answers at the snapshot's revision.

    Refused, changing nothing, when no snapshot exists anywhere, when the
    newest is older than the limit (unless --force), when the store still has
    a quorum (unless --force), or when the snapshot fails its checks.
    Every write after the snapshot is lost; the lost headnodes' etcd data
    must be wiped before they are powered on (docs/store.md).
    """
    from sdcadm.procedures.base import Declined
    from sdcadm.procedures.console import Console
    from sdcadm.procedures.store_recover import StoreRecover

    console = Console(info_to_stderr=as_json)
    proc = StoreRecover(state.config, from_snapshot=from_snapshot, max_age=max_age, force=force)
    proc.prepare(observer=_progress(as_json))
    try:
        console.info("This will make the following changes:")
        for line in proc.summarize():
            console.info("  " + line)
        if dry_run:
            if as_json:
                click.echo(json.dumps({"state": "dry-run", **proc.plan()}, indent=2,
                                      sort_keys=True))
            return
        if not yes and not console.confirm():
            raise Declined("store recover declined: nothing was changed")
        result = proc.execute(observer=_progress(as_json))
    finally:
        proc.discard()
    if as_json:
        click.echo(json.dumps({"state": "succeeded", **proc.plan(), "result": result},
                              indent=2, sort_keys=True))
    else:
        for line in proc.report(result):
            click.echo(line)
        click.echo(f"Completed in {result['elapsed_s']:.1f}s")


def _progress(as_json):
    def observer(event):
        message = getattr(event, "message", None)
        if message:
            click.echo(f"store recover: {message}", err=True)
    return observer

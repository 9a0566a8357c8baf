"""`sdcadm lab ...`: the embedded default DC on this machine."""

import json
import time

import click

from sdcadm.cli.options import Seconds, count
from sdcadm.cli.progress import printer
from sdcadm.lab.state import DEFAULT_NET, ENV_DIR, lab_dir, load_state

dir_option = click.option(
    "--dir", "directory", metavar="DIR", default=None,
    help=f"Lab directory (default: ${ENV_DIR}, else ./.sdcadm-lab).")


def shape_options(f):
    """The options that say what DC to build: `lab up` and `lab drill`."""
    options = [
        click.option("--headnodes", default=3, show_default=True, type=count(1, 16),
                     help="Number of headnodes (hn0, hn1, ...; the drill needs 3 or more on etcd, "
                          "for the store's quorum to survive losing hn0)."),
        click.option("--computenodes", default=2, show_default=True, type=count(0, 64),
                     help="Number of compute nodes (cn0, ...)."),
        click.option("--net", default=DEFAULT_NET, show_default=True,
                     help="Loopback network for the lab's addresses."),
        click.option("--services", default=None, metavar="NAME,...",
                     help="Deploy only these catalog services (default: all lab services)."),
        click.option("--backend", type=click.Choice(["dir", "zfs"]), default="dir",
                     show_default=True,
                     help="Delegate datasets as plain directories, or zfs datasets in a "
                          "file-backed pool per server (zfs-fuse; needs root)."),
        click.option("--store", type=click.Choice(["etcd", "sqlite"]), default=None,
                     help="Where the DC store lives: etcd, one member per headnode on its "
                          "address with its data in its root (the default when etcd is "
                          "installed), or sqlite, a file in the root of a one-server lab "
                          "(refused for more servers)."),
        click.option("--isolation", type=click.Choice(["loopback", "netns"]), default=None,
                     help="How servers are kept apart: netns, every server in its own network "
                          "namespace on a private network (127.A.B.0/N of --net becomes "
                          "10.A.B.0/N), joined by a bridge the host has a leg on, so that `lab "
                          "partition`, `heal` and `degrade` can cut and slow its network; or "
                          "loopback, every server on its own loopback address of --net. "
                          "Default: $SDCADM_LAB_ISOLATION, else netns as root (with ip, "
                          "nsenter and nft installed), else loopback. An existing lab keeps "
                          "its own."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _services(value):
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def _state(directory):
    return load_state(lab_dir(directory))


@click.group()
def lab():
    """The lab: a real DC of several servers on this machine.

    Each server is an agent on its own loopback address with its own root
    directory; one sshd serves the lab; the catalog's services run as real
    processes. Use it to run, measure and rehearse everything sdcadm does.
    """


@lab.command("up")
@dir_option
@shape_options
@click.option("--heartbeat-interval", default=1.0, show_default=True, type=Seconds(0.05, 60),
              help="Seconds between agent heartbeats.")
@click.option("--timeout", default=120.0, show_default=True, type=Seconds(1),
              help="Seconds to wait for every instance to become healthy.")
@click.option("--zfs-size", default="1G", show_default=True, metavar="SIZE",
              help="Size of each server's pool file (zfs backend).")
@click.option("--unregistered", default=0, show_default=True, type=count(0, 64), metavar="N",
              help="Leave the last N compute nodes not set up when building the lab: their "
                   "agents register them, as a new server's agent does; they run nothing "
                   "until `sdcadm server setup cnX`.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the lab as JSON.")
def up_cmd(directory, headnodes, computenodes, net, services, backend, store, isolation,
           heartbeat_interval, timeout, zfs_size, unregistered, as_json):
    """Build the lab (or revive an existing one) and wait until it is healthy.

    Each server's root (<dir>/<hostname>) holds everything it uses: its
    config, its copies of the agent token and restore-data key, its own SSH
    key and known_hosts, its images, and on a headnode its etcd member's
    data. Servers share nothing but the network (see docs/lab.md).

    A new lab's DC is built as an operator builds one, with sdcadm's own
    commands typed on hn0 (each printed as it runs): dc init, server setup,
    image import, create (one per server), server headnode-setup. A build
    that fails leaves the lab's files and logs; `sdcadm lab destroy` then
    removes it.
    """
    from sdcadm.lab import ctl

    started = time.monotonic()
    services = _services(services)
    state = ctl.up(lab_dir(directory), net, headnodes, computenodes, services,
                   heartbeat_interval=heartbeat_interval, timeout=timeout,
                   observer=printer(quiet=as_json), backend=backend, pool_size=zfs_size,
                   store=store, unregistered=unregistered, isolation=isolation)
    if as_json:
        click.echo(json.dumps(state.to_dict(), indent=2))
        return
    click.echo(f"lab up at {state.dir} ({len(state.servers)} servers, store on {state.store}, "
               f"{time.monotonic() - started:.1f}s)")
    click.echo(f"to use it: eval \"$(sdcadm lab env --dir {state.dir} hn0)\"")


@lab.command("down")
@dir_option
def down_cmd(directory):
    """Stop every process of the lab (agents, instances, sshd); keep its files."""
    from sdcadm.lab import ctl

    count = ctl.down(lab_dir(directory), observer=printer())
    click.echo(f"lab down: stopped {count} process group(s)")


@lab.command("destroy")
@dir_option
def destroy_cmd(directory):
    """Stop the lab and delete its directory."""
    from sdcadm.lab import ctl

    path = lab_dir(directory)
    ctl.destroy(path, observer=printer())
    click.echo(f"lab at {path} destroyed")


@lab.command("kill")
@dir_option
@click.argument("server")
def kill_cmd(directory, server):
    """Kill SERVER abruptly, as a power cut: SIGKILL its agent, all its
    instances and its etcd member, and move its root out of reach (to
    <dir>/.powered-off/SERVER) until `lab start SERVER`: its disk is gone, so
    anything that still reads it fails loudly."""
    from sdcadm.lab import ctl

    killed = ctl.kill(_state(directory), server)
    click.echo(f"killed {server} ({len(killed)} process group(s))" if killed
               else f"{server} was not running")


@lab.command("power-off")
@dir_option
@click.argument("server")
def power_off_cmd(directory, server):
    """Power SERVER off: SIGKILL every process of it, frozen ones included.

    The lab's fence agent, the equivalent of an IPMI power-off: its agent,
    its instances and anything else running under its root die at once,
    whether they answer or are stopped (SIGSTOP). Exits 0 only once none is
    left. Every lab server's configuration names it as `fencing.command`, so
    `sdcadm service restore --dead SERVER` runs it. `lab start SERVER` powers
    it on again.
    """
    from sdcadm.lab.fence import power_off

    killed = power_off(_state(directory), server)
    click.echo(f"{server} powered off ({len(killed)} process(es) killed)")


@lab.command("start")
@dir_option
@click.argument("server")
def start_cmd(directory, server):
    """Start SERVER again (after `lab kill` or `lab down`): its root back in
    place, its etcd member (headnodes), its agent."""
    from sdcadm.lab import ctl

    state = _state(directory)
    ctl.start_sshd(state, [state.server(server)["hostname"]])
    pid = ctl.start(state, server)
    click.echo(f"{server} agent running (pid {pid})")


@lab.command("status")
@dir_option
@click.option("-j", "--json", "as_json", is_flag=True, help="JSON array, one object per server.")
def status_cmd(directory, as_json):
    """What the lab runs: per server, its agent, its etcd member (headnodes),
    whether it is powered off (`lab kill`), what the store sees, and its
    network faults (`lab partition` / `degrade`; JSON: namespace, faults)."""
    from tabulate import tabulate

    from sdcadm.lab import ctl

    rows = ctl.status(_state(directory))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from sdcadm.lab.faults import describe

    table = [[r["hostname"], r["role"], r["admin_ip"], r["agent_pid"] or "-",
              r["etcd_pid"] or "-", "off" if r["powered_off"] else "on", r["status"],
              f"{r['running']}/{r['instances']}", describe(r["faults"])] for r in rows]
    click.echo(tabulate(table, ["HOSTNAME", "ROLE", "ADMIN-IP", "AGENT-PID", "ETCD-PID", "POWER",
                                "STATUS", "RUNNING", "NETWORK"], tablefmt="plain"))


@lab.command("env")
@dir_option
@click.argument("server", default="hn0")
def env_cmd(directory, server):
    """Print `export SDCADM_CONFIG=...` to act as if on SERVER (default hn0).

    Use as: eval "$(sdcadm lab env hn1)". In a netns lab too: the host has a
    leg on the lab's bridge, so the CLI reaches every server from here (but
    not a server partitioned from everyone: use `lab exec` to act from
    inside it).
    """
    state = _state(directory)
    entry = state.server(server)
    click.echo(f"export SDCADM_CONFIG={state.config_path(entry['hostname'])}")


@lab.command("watch")
@dir_option
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--interval", default=0.1, show_default=True, type=Seconds(0.01, 60),
              metavar="SECONDS", help="Seconds between probes of every instance.")
@click.option("--duration", default=None, type=Seconds(0), metavar="SECONDS",
              help="Stop after this many seconds (default: at Ctrl-C).")
@click.option("--from", "sides", default=None, metavar="SIDE,...",
              help="Where to probe from: 'host' and/or server names (their network "
                   "namespaces). Default: the host and, in a netns lab, every server.")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="At the end, print the summary as one JSON object on stdout.")
def watch_cmd(directory, services, interval, duration, sides, as_json):
    """Measure availability: probe every instance's /ping ten times a second.

    One row per service (all services, or SERVICE...) and side, one
    character per tick: '.' up (at least one instance answered), 'x' down.
    In a netns lab every server probes too, from inside its namespace, so a
    split brain is seen from both sides: a partitioned server's singletons
    answer inside it while their restored copies answer outside. The store
    is re-read every second, so instances moved or restored elsewhere are
    followed. The live timeline is drawn on stderr when it is a terminal. At
    the end (Ctrl-C or --duration), per service and side: probes, failed
    probes, outages, the longest outage and the total downtime; and per
    singleton the most processes seen serving it at once, from any side.

    Exit status 1 when a singleton was seen served by two processes at once.
    """
    import shutil
    import sys

    from sdcadm.catalog import load_catalog
    from sdcadm.lab.watch import Watcher, timeline_rows

    state = _state(directory)
    singletons = {s.name for s in load_catalog().services.values() if s.singleton}
    watcher = Watcher(state, services or None, interval=interval, sides=_sides(state, sides),
                      singletons=singletons)
    live = sys.stderr.isatty()
    width = max(10, shutil.get_terminal_size((100, 20)).columns - 28)
    drawn = 0
    watcher.start()
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while True:
            remaining = interval if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(interval, remaining))
            if live:
                rows = timeline_rows(watcher.snapshot(), width)
                up = f"\033[{drawn}F" if drawn else ""
                click.echo(up + "".join(f"\033[K{r}\n" for r in rows), nl=False, err=True)
                drawn = len(rows)
    except KeyboardInterrupt:
        pass
    summary = watcher.stop()
    split = {name: n for name, n in summary.get("max_concurrent", {}).items() if n > 1}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_watch(watcher, summary, width, live)
    if split:
        raise click.ClickException(
            "split brain: " + ", ".join(f"{name} served by {n} processes at once"
                                        for name, n in sorted(split.items())))


def _sides(state, value):
    """{side: network namespace} of ``--from`` (the host is always probed)."""
    if value is None:
        every = {s["hostname"]: state.namespace(s["hostname"]) for s in state.servers}
        return {host: ns for host, ns in every.items() if ns is not None}
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise click.UsageError("--from names no side: give 'host' and/or server names")
    sides = {}
    for name in names:
        if name == "host":
            continue
        host = state.server(name)["hostname"]  # NotFound names the lab's servers
        ns = state.namespace(host)
        if ns is None:
            raise click.UsageError(f"--from {name}: a loopback lab's servers share the host's "
                                   "network; probing from one is probing from the host "
                                   "(use --from host, or a lab built with --isolation netns)")
        sides[host] = ns
    return sides


def _print_watch(watcher, summary, width, live):
    from tabulate import tabulate

    from sdcadm.lab.watch import timeline_rows

    if not live:
        click.echo("\n".join(timeline_rows(watcher.snapshot(), width)))
    seen = [("host", summary["services"])] + [
        (side, v["services"]) for side, v in sorted(summary.get("sides", {}).items())]
    table = [[name, side, s["probes"], s["failed"], s["outages"],
              f"{s['longest_outage_s']:.2f}s", f"{s['downtime_s']:.2f}s"]
             for name in sorted(summary["services"]) for side, stats in seen
             for s in [stats.get(name)] if s is not None]
    click.echo(tabulate(table, ["SERVICE", "FROM", "PROBES", "FAILED", "OUTAGES", "LONGEST",
                                "DOWNTIME"], tablefmt="plain", disable_numparse=True))
    most = summary.get("max_concurrent", {})
    if most:
        click.echo("singletons, most processes serving one at once: "
                   + ", ".join(f"{name} {n}" for name, n in sorted(most.items())))
    click.echo(f"watched for {summary['duration_s']:.1f}s")


@lab.command("drill")
@dir_option
@shape_options
@click.option("--timeout", default=120.0, show_default=True, type=Seconds(1),
              help="Seconds to wait for the lab and for each restored instance.")
@click.option("--fault", type=click.Choice(["kill", "partition"]), default="kill",
              show_default=True,
              help="How hn0 is lost: kill (a power cut), or partition (root: a netns lab; hn0 "
                   "cut off the network, its processes running; probes from every namespace "
                   "measure max_concurrent_singletons).")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="Print one JSON object (store_backend, rto_s, rpo_s, services_restored, "
                   "canaries_verified, canaries_lost_after_last_sync, fencing_verified, "
                   "store_recovery_s, store_revision_lost, max_concurrent_singletons, ...).")
@click.option("--lose", metavar="HN,...", default=None,
              help="Headnodes to kill (default: hn0). Losing a majority (--lose hn0,hn1 of 3) "
                   "loses the etcd store's quorum: `sdcadm store recover` then rebuilds it on "
                   "the survivor before the restore.")
@click.option("--heal", is_flag=True,
              help="After the restore, heal back to three headnodes with the operator's "
                   "commands: hn0 powered off for good, `server delete hn0 --force`, "
                   "`server headnode-setup cn0`, `post-setup ha-*`, a restore-data sync, then "
                   "`check-health` and `status` until both exit 0 (each step timed; JSON: heal).")
def drill_cmd(directory, headnodes, computenodes, net, services, backend, store, isolation,
              timeout, fault, as_json, lose, heal):
    """Rehearse losing the first headnode, and measure the recovery.

    Brings up the lab (rebuilding it if an earlier drill restored it), writes
    canaries into every stateful service, syncs restore data, writes more
    canaries, kills hn0 abruptly (with its etcd member, its root moved out of
    reach), restores everything on hn1 with
    `sdcadm service restore --all --dead hn0`, checks every canary written
    before the last sync, brings hn0 back and checks that it stays fenced.
    Prints the restore time of each service and in total, the data-loss
    window, the canaries verified and whether fencing held. Exit 1 if any
    check failed. The lab keeps running afterwards (`sdcadm lab down`).

    With --lose hn0,hn1 the store loses its quorum: both are killed, the
    store is recovered on hn2 from the snapshots the headnodes kept
    (`sdcadm store recover`), and everything is restored there; the lost
    headnodes stay off (their etcd members belong to the old cluster).

    With --fault partition, hn0 is cut off instead (a netns lab; its
    processes keep running) and the drill also reports when its singletons
    stopped, seen from inside it, and the most copies of one singleton ever
    seen answering at once from any namespace (must be 1).

    With --heal (a kill of hn0, a lab with a compute node) the drill goes on
    to heal the DC as an operator would (docs/recovery.md, "Healing"): hn0 is
    deleted (with its etcd member), cn0 becomes a headnode, the HA services
    get their third peer on it, and `sdcadm status` must exit 0.
    """
    from sdcadm.errors import SdcadmError
    from sdcadm.lab import drill

    services = _services(services)
    result = drill.run_drill(lab_dir(directory), net, headnodes, computenodes, services,
                             observer=printer(quiet=as_json), timeout=timeout, backend=backend,
                             store=store, fault=fault, isolation=isolation,
                             lose=[h.strip() for h in lose.split(",") if h.strip()]
                             if lose else None, heal=heal)
    click.echo(drill.to_json(result) if as_json else "\n".join(drill.render(result)))
    if not result.ok:
        raise SdcadmError("the drill found problems (see above)")


@lab.command("exec", context_settings={"ignore_unknown_options": True,
                                       "allow_interspersed_args": False})
@dir_option
@click.argument("server")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(directory, server, command):
    """Run COMMAND as if logged in on SERVER: in its network namespace (netns
    lab), in its root directory, with SDCADM_CONFIG naming its config.

    Example: sdcadm lab exec hn0 -- sdcadm server ls. Exits with COMMAND's
    status. Works on a partitioned server (that is what it is for: to see
    the partition from its side), not on a powered-off one.
    """
    import os

    from sdcadm.lab.build import exec_argv

    argv, env, cwd = exec_argv(_state(directory), server, command)
    os.chdir(cwd)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        from sdcadm.errors import LabError

        raise LabError(f"cannot run {command[0]!r} on {server}: {e.strerror}",
                       hint="give a command on PATH, or its full path") from None


@lab.command("partition")
@dir_option
@click.argument("server")
@click.option("--from", "peers", default=None, metavar="SERVER,...",
              help="Cut SERVER off from these servers only (both directions); the others, "
                   "and the host, still reach it. Default: from everyone, the host included.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print SERVER's faults as JSON.")
def partition_cmd(directory, server, peers, as_json):
    """Cut SERVER's network (netns lab only): its processes keep running.

    Frames to and from its port on the lab's bridge are dropped (nftables,
    in the lab's own namespace), so its agent, etcd member, sshd and
    instances run on, each reaching only what is inside its namespace.
    Recorded in lab.json: `lab heal SERVER` undoes it, `lab down` too.
    """
    from sdcadm.lab import faults

    peer_list = _services(peers) if peers is not None else None
    if peers is not None and not peer_list:
        from sdcadm.errors import UsageError

        raise UsageError("--from names no server", hint="--from hn1,hn2")
    state = _state(directory)
    fault = faults.partition(state, server, peer_list)
    _print_fault(state, server, fault, as_json)


@lab.command("heal")
@dir_option
@click.argument("server")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print SERVER's faults as JSON.")
def heal_cmd(directory, server, as_json):
    """Undo every network fault of SERVER (partition and degradation)."""
    from sdcadm.lab import faults

    state = _state(directory)
    faults.heal(state, server)
    _print_fault(state, server, {}, as_json)


@lab.command("degrade")
@dir_option
@click.argument("server")
@click.option("--delay", "delay_ms", default=0, type=click.IntRange(0, 60000),
              metavar="MS", help="Delay every frame to and from SERVER by MS milliseconds "
                                 "(tc netem on both ends of its link: the RTT grows by "
                                 "2 x MS; the kernel needs netem).")
@click.option("--loss", "loss_pct", default=0, type=click.IntRange(0, 100), metavar="PCT",
              help="Drop PCT percent of the frames to and from SERVER, each "
                   "direction (nftables).")
@click.option("--rate", "rate_kbit", default=0, type=click.IntRange(0, 10_000_000),
              metavar="KBIT", help="Limit SERVER's link to KBIT kbit/s each way (tc: netem's "
                                   "rate with --delay, else tbf, which every kernel with tc "
                                   "has).")
@click.option("--clear", is_flag=True, help="Undo the degradation (a partition stays).")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print SERVER's faults as JSON.")
def degrade_cmd(directory, server, delay_ms, loss_pct, rate_kbit, clear, as_json):
    """Slow SERVER's link down and/or make it lose frames (netns lab only).

    A new degradation replaces the old one whole. Recorded in lab.json;
    `--clear`, `lab heal SERVER` or `lab down` undo it.
    """
    from sdcadm.lab import faults

    state = _state(directory)
    fault = faults.degrade(state, server, delay_ms, loss_pct, clear, rate_kbit)
    _print_fault(state, server, fault, as_json)


def _print_fault(state, server, fault, as_json):
    from sdcadm.lab.faults import describe

    host = state.server(server)["hostname"]
    if as_json:
        click.echo(json.dumps({"server": host, **fault}, indent=2))
    else:
        click.echo(f"{host}: {describe(fault)}")

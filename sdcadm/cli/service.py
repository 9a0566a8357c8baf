"""`sdcadm service ...`: operations on core services.

More subcommands (``migrate``, ``restore``) live in their own modules and are
registered in ``SUBCOMMANDS`` (name -> "module:attribute").
"""

import json
import sys
import threading
import time

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.main import LazyGroup

SUBCOMMANDS = {
    "migrate": "sdcadm.cli.service_procs:migrate",
    "restore": "sdcadm.cli.service_procs:restore",
}

EXIT_UNREACHABLE = 3


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
    from sdcadm.config import read_token
    from sdcadm.restore_data.client import sync_headnodes

    names = state.check_services(services)
    config = state.config
    token = read_token(config.agent.token_file, config.path)
    headnodes = [s for s in state.store.list_servers() if s.headnode]
    if not headnodes:
        click.echo("sdcadm: error: the DC has no headnode", err=True)
        return 1
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
    return _exit_code(results)


def _exit_code(results):
    problems = [kind for r in results for kind, _ in r.problems]
    if not problems:
        return 0
    return EXIT_UNREACHABLE if set(problems) == {"unreachable"} else 1


def _print_results(results, elapsed):
    from sdcadm.cli.output import OutputOptions, render

    rows = []
    for r in results:
        if not r.reachable or (r.error and not r.services):
            rows.append({"headnode": r.hostname, "service": None,
                         "status": "unreachable" if not r.reachable else "failed",
                         "duration": None, "error": r.error})
        for name, res in sorted(r.services.items()):
            rows.append({"headnode": r.hostname, "service": name, "status": res["status"],
                         "duration": f"{res.get('duration') or 0:.1f}s",
                         "error": res.get("error")})
        if r.reachable and not r.services and not r.error:
            rows.append({"headnode": r.hostname, "service": None, "status": "ok",
                         "duration": None, "error": "nothing to pull"})
    render(rows, OutputOptions(columns=["headnode", "service", "status", "duration", "error"]))
    failed = [r for r in results if not r.ok]
    for r in failed:
        click.echo(f"sdcadm: {r.hostname}: " + "; ".join(text for _, text in r.problems), err=True)
    click.echo(f"restore data synced on {len(results) - len(failed)} of {len(results)} "
               f"headnode(s) ({elapsed:.1f}s)", err=True)


class HeadnodeProgress:
    """One progress line per headnode on stderr: redrawn in place on a
    terminal, otherwise a line per step (throttled)."""

    MIN_INTERVAL = 1.0

    def __init__(self, hostnames, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.hostnames = list(hostnames)
        self.lines = {h: "waiting" for h in self.hostnames}
        self._last = {}
        self._lock = threading.Lock()
        self._drawn = False

    def update(self, hostname, event):
        text = _describe(event)
        if text is None:
            return
        with self._lock:
            self.lines[hostname] = text
            if self.tty:
                self._redraw()
                return
            now = time.monotonic()
            final = event.get("event") != "Progress" or event.get("done") == event.get("total")
            if final or now - self._last.get(hostname, 0.0) >= self.MIN_INTERVAL:
                self._last[hostname] = now
                self.stream.write(f"[{hostname}] {text}\n")
                self.stream.flush()

    def _redraw(self):
        width = 0
        try:
            import shutil

            width = shutil.get_terminal_size().columns
        except OSError:
            pass
        out = []
        if self._drawn:
            out.append(f"\033[{len(self.hostnames)}F")
        for h in self.hostnames:
            line = f"{h}: {self.lines[h]}"
            out.append("\033[K" + (line[: width - 1] if width > 1 else line) + "\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = True

    def close(self):
        pass


def _describe(event):
    kind = event.get("event")
    if kind == "Progress":
        count = ""
        if event.get("total"):
            done, total = event.get("done") or 0, event["total"]
            count = f" {_bar(done, total)} {done}/{total}"
        elif event.get("done") is not None:
            from sdcadm.cli.restore_data import format_bytes

            count = f" {format_bytes(event['done'])}"
        return f"{event.get('message', '')}{count}"
    if kind == "ServiceResult":
        extra = f": {event['error']}" if event.get("error") else ""
        return f"{event['service']}: {event['status']}{extra}"
    if kind == "SyncSummary":
        if event.get("error"):
            return f"failed: {event['error']}"
        statuses = event.get("services") or {}
        bad = {k: v for k, v in statuses.items() if v != "ok"}
        if not statuses:
            return "done: nothing to pull"
        return "done: " + (", ".join(f"{k} {v}" for k, v in sorted(bad.items()))
                           if bad else f"{len(statuses)} service(s) ok")
    return None


def _bar(done, total, width=20):
    filled = int(width * min(done, total) / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"

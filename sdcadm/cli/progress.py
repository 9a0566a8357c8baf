"""Rendering progress events on stderr for people (silent when -j is asked).

Events are rendered by their type (``describe`` dispatches on the class), so a
new event class gets its own line here, or none.
"""

import functools
import shutil
import sys
import threading
import time

import click

from sdcadm.cli.output import format_bytes
from sdcadm.progress import Progress
from sdcadm.restore_data.events import ServiceResult, SyncSummary


def printer(quiet=False):
    """An observer that prints Progress events as '[step d/t] message' on stderr."""
    if quiet:
        return None
    interactive = sys.stderr.isatty()

    def show(event):
        count = f" {event.done}/{event.total}" if event.total else ""
        line = f"[{event.step}{count}] {event.message}"
        if interactive and event.total and event.done != event.total:
            click.echo("\r\033[K" + line, nl=False, err=True)
        else:
            click.echo(("\r\033[K" if interactive else "") + line, err=True)

    return show


@functools.singledispatch
def describe(event):
    """One line of text for a progress event; None: nothing worth showing."""
    return None


@describe.register
def _(event: Progress):
    count = ""
    if event.total:
        done = event.done or 0
        count = f" {_bar(done, event.total)} {done}/{event.total}"
    elif event.done is not None:
        count = f" {format_bytes(event.done)}"
    return f"{event.message}{count}"


@describe.register
def _(event: ServiceResult):
    extra = f": {event.error}" if event.error else ""
    if event.warning:
        extra += f" (warning: {event.warning})"
    return f"{event.service}: {event.status}{extra}"


@describe.register
def _(event: SyncSummary):
    if event.error:
        return f"failed: {event.error}"
    statuses = event.services or {}
    bad = {k: v for k, v in statuses.items() if v != "ok"}
    if not statuses:
        return "done: nothing to pull"
    return "done: " + (", ".join(f"{k} {v}" for k, v in sorted(bad.items()))
                       if bad else f"{len(statuses)} service(s) ok")


def _bar(done, total, width=20):
    filled = int(width * min(done, total) / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


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
        text = describe(event)
        if text is None:
            return
        with self._lock:
            self.lines[hostname] = text
            if self.tty:
                self._redraw()
                return
            now = time.monotonic()
            final = not isinstance(event, Progress) or event.done == event.total
            if final or now - self._last.get(hostname, 0.0) >= self.MIN_INTERVAL:
                self._last[hostname] = now
                self.stream.write(f"[{hostname}] {text}\n")
                self.stream.flush()

    def _redraw(self):
        width = 0
        try:
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

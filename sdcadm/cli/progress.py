"""Rendering progress events on stderr for people (silent when -j is asked)."""

import sys

import click


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

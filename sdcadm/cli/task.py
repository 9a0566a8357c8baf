"""`sdcadm task ...`: the record of every procedure run (migrate, restore, restart, ...)."""

import json

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.options import count
from sdcadm.cli.output import format_time, output_options, render
from sdcadm.errors import AmbiguousName, NotFound, UsageError
from sdcadm.uuids import is_uuid

TASK_FIELDS = ["uuid", "name", "state", "created", "started", "finished", "elapsed", "progress",
               "error", "steps"]
STEP_FIELDS = ["name", "procedure", "state", "attempt", "started", "finished", "elapsed_s",
               "verified", "result", "error", "checkpoint", "log"]
MIN_PREFIX = 4
SEARCH_LIMIT = 10_000


def format_seconds(value):
    return f"{value:.1f}s" if isinstance(value, (int, float)) else value


def format_result(value):
    """A step result as ``key=value ...`` (nested values as JSON)."""
    if not isinstance(value, dict):
        return value
    return " ".join(f"{k}={v if not isinstance(v, (dict, list)) else json.dumps(v)}"
                    for k, v in value.items()) or None


def task_row(task):
    """A Task as a listing row: its fields plus elapsed seconds and step progress."""
    end = task.finished if task.finished else None
    done = sum(s.get("state") == "succeeded" for s in task.steps)
    return {"uuid": task.uuid, "name": task.name, "state": task.state, "created": task.created,
            "started": task.started, "finished": task.finished,
            "elapsed": round(end - task.started, 3) if end and task.started else None,
            "progress": f"{done}/{len(task.steps)}", "error": task.error, "steps": task.steps}


def find_task(store, ref):
    """A task by UUID or by a unique prefix of at least 4 characters."""
    if is_uuid(ref):
        return store.get_task(ref)
    ref = ref.lower()
    if len(ref) < MIN_PREFIX:
        raise UsageError(f"task {ref!r}: give its UUID or at least {MIN_PREFIX} of its first "
                         "characters")
    found = [t for t in store.list_tasks(limit=SEARCH_LIMIT) if t.uuid.startswith(ref)]
    if not found:
        raise NotFound(f"no task with UUID starting with {ref!r}", hint="see `sdcadm task ls`")
    if len(found) > 1:
        raise AmbiguousName(f"{ref!r} is the start of {len(found)} task UUIDs",
                            hint="give more characters")
    return found[0]


@click.group()
def task():
    """Records of procedure runs: what ran, when, each step's result or error."""


@task.command("ls")
@click.option("--limit", default=50, show_default=True, type=count(1, 10_000),
              help="Show at most this many tasks, newest first.")
@output_options(["uuid", "name", "state", "created", "elapsed", "progress"], TASK_FIELDS,
                formats={"created": format_time, "started": format_time,
                         "finished": format_time, "elapsed": format_seconds},
                headers={"progress": "STEPS"})
@pass_state
def ls(state, limit, output):
    """List tasks, newest first.

    STATE is queued, running (or killed while running), succeeded or failed.
    STEPS: steps succeeded / steps planned. ELAPSED: from start to end of
    the last run. A failed task is finished by running the same command again.
    """
    render([task_row(t) for t in state.store.list_tasks(limit=limit)], output)


@task.command("get")
@click.argument("uuid", metavar="TASK")
@output_options(["name", "state", "elapsed_s", "result", "error"], STEP_FIELDS,
                formats={"started": format_time, "finished": format_time,
                         "elapsed_s": format_seconds, "result": format_result,
                         "checkpoint": format_result},
                headers={"elapsed_s": "ELAPSED"})
@pass_state
def get(state, uuid, output):
    """Show one task (by UUID, or a unique prefix of it) and its steps.

    Prints the task's fields, its log file(s), then a table of its steps. With
    -j: the whole task as one JSON object. With -H: only the steps.
    """
    found = find_task(state.store, uuid)
    if output.json:
        click.echo(json.dumps(found.to_dict(), indent=2, default=str))
        return
    if not output.no_header:
        row = task_row(found)
        logs = list(dict.fromkeys(s["log"] for s in found.steps if s.get("log")))
        for key in ("uuid", "name", "state", "created", "started", "finished", "elapsed", "error"):
            value = row[key]
            if key in ("created", "started", "finished"):
                value = format_time(value)
            elif key == "elapsed":
                value = format_seconds(value)
            click.echo(f"{key + ':':<10}{value if value is not None else '-'}")
        for path in logs:
            click.echo(f"{'log:':<10}{path}")
        click.echo()
    render(found.steps, output)

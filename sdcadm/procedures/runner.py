"""The one runner of procedures: lock, prepare, plan, confirm, execute, record.

``run_procedures(procs, ctx, ...)``:

1. without ``dry_run``: take the DC-wide lock (waiting up to ``lock_timeout``
   seconds and saying so on stderr) and keep renewing it in a thread; from
   then on ``ctx.store`` is the store guarded by the lock's fencing token, so
   every write of the run is refused once another owner took the lock;
2. look for this command's unfinished Task (same name = procedure name + key)
   to resume;
3. ``prepare()`` every procedure; if none has anything to do, say so (exit 0);
4. print "This will make the following changes:" and every summary; with
   ``dry_run`` stop here (no lock, no Task, no log);
5. ask "Would you like to continue? [y/N]" unless ``yes`` (without a terminal
   that is an error telling to pass -y);
6. open the run's log file, record the Task (queued -> running), run every
   step in order with progress events, recording each step's result or error;
7. Task succeeded (or failed: ``ProcedureFailed`` with the step, the error, the
   log and how to resume); print reports and the elapsed time; release the lock.
"""

import copy
import json
import time
import traceback
from dataclasses import asdict, dataclass, field

from sdcadm.errors import ProcedureFailed, SdcadmError
from sdcadm.model import Task
from sdcadm.procedures.base import Declined
from sdcadm.procedures.console import Console
from sdcadm.procedures.events import StepFailed, StepFinished, StepStarted
from sdcadm.procedures.lock import DEFAULT_TIMEOUT, DEFAULT_TTL, LOCK_NAME, DcLock
from sdcadm.procedures.log import RunLog, log_path
from sdcadm.progress import notify
from sdcadm.uuids import new_uuid

RESUME_SCAN = 200  # newest tasks looked at when searching one to resume


@dataclass
class RunResult:
    """What a run did; ``to_dict()`` is the ``-j`` output of procedure commands."""

    state: str                  # succeeded | failed | nothing-to-do | dry-run
    name: str
    task: str | None = None     # Task UUID
    log: str | None = None      # the run's log file
    elapsed_s: float = 0.0
    resumed: bool = False       # continued an unfinished Task
    error: str | None = None
    procedures: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def task_name(procs):
    return "; ".join(p.title for p in procs)


def _file_name(procs):
    return "+".join(dict.fromkeys(p.name for p in procs))


def _resume_within(procs):
    limits = [p.resume_within for p in procs if p.resume_within is not None]
    return min(limits) if limits else None


def find_unfinished(store, name, within, now):
    """The newest Task called ``name`` if it did not succeed and ran less than
    ``within`` seconds ago (None: any age); else None."""
    for task in store.list_tasks(limit=RESUME_SCAN):
        if task.name != name:
            continue
        if task.state == "succeeded":
            return None
        last = task.finished or task.started or task.created
        if within is not None and now - last > within:
            return None
        return task
    return None


def run_procedures(procs, ctx, yes=False, dry_run=False, observer=None, lock_ttl=DEFAULT_TTL,
                   lock_timeout=DEFAULT_TIMEOUT, console=None):
    """Run ``procs`` (in order, as one Task) with ``ctx`` (a ProcedureContext).

    Returns a RunResult; raises ProcedureFailed (with ``.result``; its
    subclass ProcedureUnreachable, exit 3, when a server could not be reached) when a step
    fails, Declined when the operator says no, NeedsConfirmation without a
    terminal and without ``yes``, LockWaitTimeout when the lock stays taken,
    and whatever SdcadmError a prepare() raised.
    """
    procs = list(procs)
    if not procs:
        raise ValueError("run_procedures needs at least one procedure")
    console = console or Console()
    ctx.yes, ctx.dry_run = yes, dry_run
    ctx.log, ctx.task, ctx.previous_task = RunLog(clock=ctx.now), None, None
    if observer is not None:
        ctx.observer = observer
    name = task_name(procs)
    started = time.monotonic()
    if dry_run:
        return _dry_run(procs, ctx, console, name, started)
    store = ctx.store
    lock = DcLock(store, ttl=lock_ttl, warn=console.warn)
    ctx.lock_token = lock.acquire(lock_timeout)
    ctx.lock = lock
    ctx.store = store.guarded(LOCK_NAME, ctx.lock_token)
    try:
        lock.start_renewing()
        return _run_locked(procs, ctx, console, name, started)
    finally:
        lock.release()
        ctx.lock, ctx.store = None, store
        ctx.log.close()


def _dry_run(procs, ctx, console, name, started):
    held = ctx.store.get_lock(LOCK_NAME)
    if held and held[1] > ctx.store.now():
        console.warn(f"note: the DC lock is held by {held[0]}; the plan may change before "
                     "this can run")
    ctx.previous_task = find_unfinished(ctx.store, name, _resume_within(procs), ctx.now())
    plans = _prepare_all(procs, ctx)
    result = RunResult("dry-run", name, procedures=_describe(procs, plans))
    if not plans:
        _say_nothing_to_do(procs, console)
        result.state = "nothing-to-do"
    else:
        _show_plan(procs, plans, ctx, console)
        console.info("Dry run: nothing was changed.")
    result.elapsed_s = round(time.monotonic() - started, 3)
    return result


def _run_locked(procs, ctx, console, name, started):
    ctx.previous_task = find_unfinished(ctx.store, name, _resume_within(procs), ctx.now())
    ctx.log.event("run-start", name=name, owner=ctx.lock.owner, lock_token=ctx.lock_token,
                  resumes=ctx.previous_task.uuid if ctx.previous_task else None)
    plans = _prepare_all(procs, ctx)
    result = RunResult("nothing-to-do", name, procedures=_describe(procs, plans))
    if not plans:
        _say_nothing_to_do(procs, console)
        result.elapsed_s = round(time.monotonic() - started, 3)
        return result
    _show_plan(procs, plans, ctx, console)
    if not ctx.yes and not console.confirm():
        raise Declined("aborted at the confirmation prompt; nothing was changed")
    started = time.monotonic()  # elapsed time: from the confirmation, not the prompt

    prev = ctx.previous_task  # kept as it was: ctx.previous() reads its steps
    task = (Task.from_dict(copy.deepcopy(prev.to_dict())) if prev
            else Task(uuid=new_uuid(), name=name, created=ctx.now()))
    task.state, task.error, task.finished = "queued", None, None
    task.steps = [{"name": s.name, "procedure": p.title, "state": "pending"}
                  for p, steps in plans for s in steps]
    path = ctx.log.open(log_path(ctx.config.log_dir, _file_name(procs), ctx.now(), task.uuid))
    result.task, result.log, result.resumed = task.uuid, str(path), ctx.previous_task is not None
    ctx.store.put_task(task)
    console.info(f"Log: {path}")
    ctx.task = task
    task.state, task.started = "running", ctx.now()
    ctx.store.put_task(task)
    ctx.log.event("task", task=task.uuid, state="running", resumed=result.resumed)
    try:
        _execute(plans, ctx, str(path))
    except BaseException as e:
        elapsed = time.monotonic() - started
        if task.state != "failed":  # the runner itself failed (e.g. the store), not a step
            task.state, task.finished, task.error = "failed", ctx.now(), _error_text(e)
            try:
                ctx.store.put_task(task)
            except SdcadmError:
                pass  # the store is the problem; the log still has it all
        result.state, result.error = "failed", task.error
        result.elapsed_s = round(elapsed, 3)
        result.procedures = _describe(procs, plans, task)
        ctx.log.event("run-end", state="failed", error=task.error, elapsed_s=result.elapsed_s)
        if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit: let it through
            console.warn(f"interrupted after {elapsed:.1f}s; task {task.uuid} is marked failed. "
                         "Run the same command again to finish it.")
            raise
        raise ProcedureFailed.class_for(e)(
            f"{name}: {task.error} (after {elapsed:.1f}s)",
            hint=f"the log is {path}; once the cause is fixed, run the same command again: "
                 f"it resumes task {task.uuid}, re-checking the steps already done",
            result=result) from e
    task.state, task.finished = "succeeded", ctx.now()
    ctx.store.put_task(task)
    result.state = "succeeded"
    result.elapsed_s = round(time.monotonic() - started, 3)
    result.procedures = _describe(procs, plans, task)
    ctx.log.event("run-end", state="succeeded", elapsed_s=result.elapsed_s)
    for proc, _ in plans:
        step_results = {r["name"]: r.get("result") for r in task.steps
                        if r["procedure"] == proc.title}
        for line in proc.report(step_results):
            console.info(line)
    console.info(f"Completed in {result.elapsed_s:.1f}s (task {task.uuid}).")
    return result


# -- preparing and showing ------------------------------------------------------------------

def _prepare_all(procs, ctx):
    """[(procedure, [Step])] of the procedures with something to do."""
    plans = []
    for proc in procs:
        ctx.procedure = proc
        proc.nothing_to_do = None
        if proc.prepare(ctx) is False and not proc.nothing_to_do:
            proc.nothing_to_do = "nothing to do"
        steps = [] if proc.nothing_to_do else list(proc.steps())
        if not proc.nothing_to_do and not steps:
            proc.nothing_to_do = "nothing to do"
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"{type(proc).__name__}: step names must be unique: {names}")
        ctx.log.event("prepared", procedure=proc.title, nothing_to_do=proc.nothing_to_do,
                      summary=None if proc.nothing_to_do else list(proc.summarize()),
                      steps=names)
        if steps:
            plans.append((proc, steps))
    ctx.procedure = None
    return plans


def _say_nothing_to_do(procs, console):
    for proc in procs:
        if proc.nothing_to_do and proc.nothing_to_do != "nothing to do":
            console.info(f"{proc.title}: {proc.nothing_to_do}")
    console.info("Nothing to do.")


def _show_plan(procs, plans, ctx, console):
    console.info("This will make the following changes:")
    for proc, _ in plans:
        for line in proc.summarize():
            console.info(f"    {line}")
    prev = ctx.previous_task
    if prev is not None:
        why = f": {prev.error}" if prev.error else ""
        console.info(f"This resumes task {prev.uuid} ({prev.state}{why}); steps it already "
                     "did are checked again, not blindly skipped.")
    for proc in procs:
        if proc.nothing_to_do:
            console.info(f"({proc.title}: {proc.nothing_to_do}; left alone)")


def _describe(procs, plans, task=None):
    planned = {id(p) for p, _ in plans}
    out = []
    for proc in procs:
        steps = ([dict(r) for r in task.steps if r["procedure"] == proc.title] if task
                 else [{"name": s.name, "state": "pending"}
                       for p, ss in plans if p is proc for s in ss])
        out.append({"name": proc.name, "title": proc.title,
                    "nothing_to_do": proc.nothing_to_do if id(proc) not in planned else None,
                    "summary": list(proc.summarize()) if id(proc) in planned else [],
                    "steps": steps})
    return out


# -- executing ------------------------------------------------------------------------------

def _execute(plans, ctx, path):
    task = ctx.task
    total = len(task.steps)
    index = 0
    for proc, steps in plans:
        ctx.procedure = proc
        for step in steps:
            record = task.steps[index]
            index += 1
            ctx.step = step.name
            _run_step(proc, step, record, ctx, f"({index}/{total})", path)
    ctx.procedure = ctx.step = None


def _run_step(proc, step, record, ctx, counter, path):
    task = ctx.task
    previous = ctx.previous(step.name, proc.title)
    record.update(state="running", started=ctx.now(), log=path,
                  attempt=(previous or {}).get("attempt", 0) + 1)
    ctx.store.put_task(task)
    ctx.log.event("step-start", procedure=proc.title, step=step.name,
                  previous_state=previous and previous.get("state"))
    notify(ctx.observer, StepStarted(proc.name, f"{counter} {step.name}", procedure=proc.title))
    t0 = time.monotonic()
    try:
        ctx.check_lock()
        verified = False
        if previous and previous.get("state") == "succeeded" and step.verify is not None:
            verified = bool(step.verify(ctx, previous.get("result")))
        result = previous.get("result") if verified else _jsonable(step.fn(ctx), step)
    except BaseException as e:
        elapsed = time.monotonic() - t0
        error = _error_text(e)
        record.update(state="failed", finished=ctx.now(), elapsed_s=round(elapsed, 3),
                      error=error)
        task.state, task.finished = "failed", ctx.now()
        task.error = f"step {step.name!r} failed: {error}"
        try:
            ctx.store.put_task(task)
        except SdcadmError as store_error:  # keep the step's error, the one that matters
            ctx.log.warning("cannot record the failure in the store", error=str(store_error))
        ctx.log.event("step-error", procedure=proc.title, step=step.name, error=error,
                      elapsed_s=round(elapsed, 3),
                      traceback=None if isinstance(e, SdcadmError) else traceback.format_exc())
        notify(ctx.observer, StepFailed(proc.name, f"{counter} {step.name}: failed: {error}",
                                        procedure=proc.title, elapsed=elapsed, error=error))
        raise
    elapsed = time.monotonic() - t0
    record.update(state="succeeded", finished=ctx.now(), elapsed_s=round(elapsed, 3),
                  result=result, error=None, verified=verified)
    # Not written here: the next write of the task carries it (the next step's
    # start, or the run's end, or its failure), one store round trip fewer
    # between two steps. Until then the store shows this step running: a
    # resumed run does it again, as every step is idempotent.
    ctx.log.event("step-end", procedure=proc.title, step=step.name, result=result,
                  verified=verified, elapsed_s=round(elapsed, 3))
    how = "verified (done by an earlier run)" if verified else f"done in {elapsed:.1f}s"
    notify(ctx.observer, StepFinished(proc.name, f"{counter} {step.name}: {how}",
                                      procedure=proc.title, elapsed=elapsed, verified=verified,
                                      result=result))


def _error_text(e):
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, SdcadmError):
        return str(e)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _jsonable(result, step):
    if result is None:
        return None
    if not isinstance(result, dict):
        raise TypeError(f"step {step.name!r} returned {type(result).__name__}; "
                        "a step returns a dict (its result) or None")
    return json.loads(json.dumps(result, default=str))

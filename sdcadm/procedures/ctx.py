"""``ProcedureContext``: what a procedure's prepare() and steps receive.

Built by the caller with ``config`` and ``store``; the runner fills in the
rest as the run goes (``yes``, ``dry_run``, ``observer``, the run's ``log``,
the ``task`` being recorded, the DC lock's fencing token and the previous
unfinished Task it resumes, if any).
"""

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sdcadm.procedures.log import RunLog
from sdcadm.progress import Progress, notify


@dataclass
class ProcedureContext:
    config: Any
    store: Any
    observer: Callable | None = None
    log: RunLog = field(default_factory=RunLog)
    now: Callable[[], float] = time.time
    yes: bool = False
    dry_run: bool = False
    task: Any = None                 # the model.Task being recorded (None while preparing)
    lock_token: int | None = None    # fencing token of the DC lock
    previous_task: Any = None        # the unfinished Task this run resumes, or None
    procedure: Any = None            # the procedure being prepared or run
    step: str | None = None          # the step being run
    lock: Any = None                 # the runner's DcLock (check_lock())

    def progress(self, message, done=None, total=None):
        """Report progress from inside a step (shown as ``[procedure d/t] message``)."""
        where = self.procedure.name if self.procedure else "procedure"
        notify(self.observer, Progress(where, message, done, total))

    def checkpoint(self, **data):
        """Record facts of the running step in the Task now (merged into the step
        record's ``checkpoint`` dict), so that a re-run after a crash finds them
        in ``previous(step)["checkpoint"]`` (e.g. the name of a snapshot taken)."""
        if self.task is None or self.step is None:
            raise RuntimeError("checkpoint() is for steps, while the runner runs them")
        record = next(r for r in self.task.steps if r["name"] == self.step
                      and r.get("procedure") == self.procedure.title)
        record.setdefault("checkpoint", {}).update(data)
        self.store.put_task(self.task)
        self.log.event("checkpoint", procedure=self.procedure.title, step=self.step, data=data)

    def previous(self, step_name, procedure=None):
        """The record of ``step_name`` in the Task being resumed, or None.

        A dict with ``name``, ``procedure``, ``state`` (succeeded, failed,
        running: killed, pending: never started), ``result``, ``error``,
        ``checkpoint``, ``attempt``, ``started``, ``finished``.
        """
        if self.previous_task is None:
            return None
        proc = procedure or (self.procedure.name if self.procedure else None)
        for record in self.previous_task.steps:
            if record.get("name") == step_name and record.get("procedure", proc) == proc:
                return record
        return None

    def check_lock(self):
        """Raise LockLost if the DC lock was lost; long steps call it between sub-steps."""
        if self.lock is not None:
            self.lock.check()

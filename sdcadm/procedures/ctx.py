"""``ProcedureContext``: what a procedure's prepare() and steps receive.

Everything a procedure reads or talks to comes through it, so that its
decisions can be made by pure functions over what it gathered
(``procedures/planning/``) and a test can hand in fakes:

* ``config`` and ``store``: this server's configuration and the DC store;
* ``catalog``: the core-services catalog;
* ``restore_data()``: opens this server's restore data (a ``RestoreData``);
* ``agents``: makes agent clients (``agents.client(url, timeout)``) and holds
  the agents' token (``agents.token``, read on first use);
* ``prober``: health probes (``probe(url, timeout)``, ``probe_many(urls, timeout)``);
* ``fencer``: runs fence agents (``fencer.run(argv, timeout)``, a
  ``transport.fence.CommandFencer``);
* ``now``: the wall clock (seconds since the epoch), for ages and timestamps.

``ProcedureContext.for_config(config, store)`` builds the real ones, once,
where the context is made (the CLI, the lab's drill, benches, tests). The
runner fills in the rest as the run goes (``yes``, ``dry_run``, ``observer``,
the run's ``log``, the ``task`` being recorded, the DC lock's fencing token
and the previous unfinished Task it resumes, if any).
"""

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sdcadm.catalog import load_catalog
from sdcadm.health import HttpProber
from sdcadm.procedures.agent_client import AgentClients
from sdcadm.procedures.log import RunLog
from sdcadm.progress import Progress, notify
from sdcadm.transport.fence import CommandFencer


def open_restore_data(config):
    """This server's restore data (imported on demand: only restore reads it,
    and the CLI pays at start-up only for what a command uses)."""
    from sdcadm.restore_data.access import RestoreData

    return RestoreData(config)


@dataclass
class ProcedureContext:
    config: Any
    store: Any
    observer: Callable | None = None
    log: RunLog = field(default_factory=RunLog)
    now: Callable[[], float] = time.time
    catalog: Any = None              # the core-services Catalog
    restore_data: Callable[[], Any] | None = None   # () -> this server's RestoreData
    agents: Any = None               # AgentClients: .client(url, timeout), .token, .check()
    prober: Any = None               # HttpProber: .probe(url, timeout), .probe_many(urls, timeout)
    fencer: Any = field(default_factory=CommandFencer)  # .run(argv, timeout) -> FenceOutcome
    yes: bool = False
    dry_run: bool = False
    task: Any = None                 # the model.Task being recorded (None while preparing)
    lock_token: int | None = None    # fencing token of the DC lock
    previous_task: Any = None        # the unfinished Task this run resumes, or None
    procedure: Any = None            # the procedure being prepared or run
    step: str | None = None          # the step being run
    lock: Any = None                 # the runner's DcLock (check_lock())

    @classmethod
    def for_config(cls, config, store, **overrides):
        """A context with the real catalog, restore data, agent clients and
        prober of ``config``; ``overrides`` replace any field (a fake, a clock)."""
        parts = {"catalog": None, "restore_data": functools.partial(open_restore_data, config),
                 "agents": AgentClients(config), "prober": HttpProber()}
        parts.update(overrides)
        if parts["catalog"] is None:
            parts["catalog"] = load_catalog(config.catalog)
        return cls(config=config, store=store, **parts)

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

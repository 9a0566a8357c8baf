"""Procedures: prepare -> summarize -> confirm -> execute, locked, logged, resumable.

A procedure is a class (``base.Procedure``) that gathers facts in
``prepare(ctx)``, describes what it will change in ``summarize()`` and does it
in ordered, idempotent ``steps()``. One runner (``runner.run_procedures``)
drives every procedure the same way: DC-wide lock, plan, confirmation, a Task
record in the store, a log file, progress events, elapsed time. See
docs/procedures.md for the contract.

    from sdcadm.procedures import Procedure, ProcedureContext, Step, run_procedures
"""

from sdcadm.errors import ProcedureFailed, ProcedureUnreachable
from sdcadm.procedures.base import (
    Declined,
    LockLost,
    LockWaitTimeout,
    NeedsConfirmation,
    Procedure,
    Step,
)
from sdcadm.procedures.ctx import ProcedureContext
from sdcadm.procedures.runner import RunResult, run_procedures

__all__ = [
    "Declined", "LockLost", "LockWaitTimeout", "NeedsConfirmation", "Procedure",
    "ProcedureContext", "ProcedureFailed", "ProcedureUnreachable", "RunResult", "Step",
    "run_procedures",
]

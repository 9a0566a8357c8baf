"""Procedures: prepare -> summarize -> confirm -> execute, locked, logged, resumable.

A procedure is a class (``base.Procedure``) that gathers facts in
``prepare(ctx)``, describes what it will change in ``summarize()`` and does it
in ordered, idempotent ``steps()``. One runner (``runner.run_procedures``)
drives every procedure the same way: DC-wide lock, plan, confirmation, a Task
record in the store, a log file, progress events, elapsed time. See
docs/procedures.md for the contract.

    from sdcadm.procedures import Procedure, ProcedureContext, Step, run_procedures
"""

# Names are imported when first used (PEP 562): a command that needs only
# ``sdcadm.procedures.agent_client`` (`server ls` asking its agent) does not
# pay for the runner and the context (~0.1 s of imports).
_WHERE = {
    "ProcedureFailed": "sdcadm.errors", "ProcedureUnreachable": "sdcadm.errors",
    "Declined": "sdcadm.procedures.base", "LockLost": "sdcadm.procedures.base",
    "LockWaitTimeout": "sdcadm.procedures.base", "NeedsConfirmation": "sdcadm.procedures.base",
    "Procedure": "sdcadm.procedures.base", "Step": "sdcadm.procedures.base",
    "ProcedureContext": "sdcadm.procedures.ctx",
    "RunResult": "sdcadm.procedures.runner", "run_procedures": "sdcadm.procedures.runner",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value

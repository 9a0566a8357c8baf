"""What a procedure is: ``Procedure``, its ``Step``s, and the runner's errors.

The contract (docs/procedures.md has the long form):

* ``name``: short kebab-case word (``instance-restart``); with ``key()`` (the
  arguments, as text) it names the Task (``instance-restart sapi0``) so that a
  re-run of the same command finds the unfinished Task it resumes.
* ``prepare(ctx)``: gather facts through ``ctx.store`` and transports; raise a
  clear ``SdcadmError`` when the procedure is not viable (collect every
  problem, report them together); return False (or call
  ``self.mark_nothing_to_do(reason)``) when there is nothing to do. It runs
  under the DC lock (except for a dry run) and must change nothing.
* ``summarize()``: the lines shown under "This will make the following changes:".
* ``steps()``: the ordered ``Step(name, fn, verify=None)`` list; or override
  ``execute(ctx)`` for a single step named "execute".
* Every step is idempotent: running it again after it succeeded, failed
  half-way or was killed converges to the same result. ``fn(ctx)`` returns a
  JSON-able dict (or None) recorded as the step's result, e.g. measurements.
  On resume, a step that succeeded before is *not* skipped blindly: its
  ``verify(ctx, previous_result)`` is asked whether its effect still holds
  (True: recorded as verified, not run again), and without ``verify`` the
  step simply runs again.
* ``report(results)``: lines printed after success, from ``{step name: result}``.
"""

from dataclasses import dataclass
from typing import Callable

from sdcadm.errors import LockHeld, LockLost, SdcadmError

DEFAULT_RESUME_WITHIN = 24 * 3600.0


@dataclass(frozen=True)
class Step:
    """One idempotent unit of work. ``fn(ctx) -> dict | None``;
    ``verify(ctx, previous_result) -> bool`` (optional) re-checks a step that
    succeeded in an earlier, unfinished run of the same Task."""

    name: str
    fn: Callable
    verify: Callable | None = None


class Procedure:
    """Base class of every procedure; see the module docstring for the contract."""

    name = None
    # An unfinished Task older than this (seconds since it last ran) is not
    # resumed: a new Task starts. None: any age.
    resume_within = DEFAULT_RESUME_WITHIN

    nothing_to_do = None  # a reason (text) once prepare() found nothing to do

    def key(self):
        """The arguments as text: the same command line gives the same key."""
        return ""

    @property
    def title(self):
        if not self.name:
            raise TypeError(f"{type(self).__name__} has no name")
        key = self.key()
        return f"{self.name} {key}" if key else self.name

    def mark_nothing_to_do(self, reason="nothing to do"):
        self.nothing_to_do = reason
        return False

    def prepare(self, ctx):
        """Gather facts; raise SdcadmError if not viable; return False if nothing to do."""
        return None

    def summarize(self):
        """Lines describing the changes, shown before confirmation."""
        return [self.title]

    def steps(self):
        """The ordered steps. Default: one step running ``execute(ctx)``."""
        if type(self).execute is Procedure.execute:
            raise NotImplementedError(
                f"{type(self).__name__} defines neither steps() nor execute()")
        return [Step("execute", self.execute)]

    def execute(self, ctx):
        """Do everything in one step (alternative to steps())."""
        raise NotImplementedError

    def report(self, results):
        """Lines printed after success; ``results``: {step name: result dict or None}."""
        return []


# -- errors of the runner (SdcadmError subclasses: the CLI maps them) -----------------------
# (ProcedureFailed, raised when a step fails, is in sdcadm.errors: its classes carry
# the exit code, 3 when a server could not be reached.)

class NeedsConfirmation(SdcadmError):
    """Confirmation is needed but cannot be asked: stdin is not a terminal."""


class Declined(SdcadmError):
    """The operator did not confirm; nothing was changed."""


class LockWaitTimeout(LockHeld):
    """Gave up waiting for the DC-wide lock."""

    def __init__(self, name, owner, expires_at, waited, expires_in):
        SdcadmError.__init__(
            self,
            f"the DC lock {name!r} is held by {owner} (expires in {expires_in:.0f}s); "
            f"gave up after waiting {waited:.0f}s",
            hint="wait for that operation to finish and run this again, or wait longer "
                 "with --lock-timeout SECONDS")
        self.name, self.owner, self.expires_at = name, owner, expires_at


__all__ = ["Declined", "LockLost", "LockWaitTimeout", "NeedsConfirmation", "Procedure",
           "Step"]  # LockLost lives in errors.py (the store raises it too)

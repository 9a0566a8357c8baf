"""The one exception tree of sdcadm.

Each class carries the process exit code; the message says what went wrong and
how to fix it. Only ``sdcadm.cli.main.main()`` (and the agent's ``main()``)
turn these into exit codes; library code raises and never exits.
"""


class SdcadmError(Exception):
    """Something went wrong."""

    exit_code = 1
    # True when the command has already printed what went wrong (a table of
    # failures, a JSON report): main() then only turns the class into its exit code.
    reported = False

    def __init__(self, message=None, *, hint=None):
        self.message = message or (self.__doc__ or "").strip()
        self.hint = hint
        super().__init__(self.message)

    def __str__(self):
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(SdcadmError):
    """The command line was not understood."""

    exit_code = 2


class ConfigError(SdcadmError):
    """The configuration is invalid."""

    def __init__(self, source, problems, *, hint=None):
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration in {self.source}:\n{lines}", hint=hint)


class ValidationError(SdcadmError):
    """A document does not match its schema."""

    def __init__(self, kind, source, problems, *, hint=None):
        self.kind = kind
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {kind} in {self.source}:\n{lines}", hint=hint)


class CatalogError(SdcadmError):
    """The core-services catalog is inconsistent."""


class NotFound(SdcadmError):
    """No such object."""


class AmbiguousName(SdcadmError):
    """A name matches more than one object."""


class InvalidUUID(UsageError):
    """A value that should be a UUID is not one."""


class InvalidName(UsageError):
    """A value that should be a service name is not one."""


class StoreError(SdcadmError):
    """The DC state store failed."""


class StoreUnreachable(StoreError):
    """The DC state store cannot be reached."""


class Conflict(StoreError):
    """A compare-and-swap lost: someone else changed the record first."""


class LockHeld(StoreError):
    """The DC-wide lock is held by someone else."""

    def __init__(self, name, owner, expires_at, expires_in=None):
        # expires_in: seconds left by the store's clock (callers' clocks may differ)
        self.name, self.owner, self.expires_at = name, owner, expires_at
        self.expires_in = expires_in
        super().__init__(
            f"lock {name!r} is held by {owner} until {expires_at:.0f} (unix time)",
            hint="wait for that operation to finish, or let the lock expire",
        )


class LockLost(StoreError):
    """The DC-wide lock was lost while a procedure ran (it expired and was taken):
    the store refuses the writes made under the old lock."""


class TransportError(SdcadmError):
    """A remote operation failed."""


class HostKeyError(TransportError):
    """A server's SSH host key is unknown or does not match known_hosts."""


class AuthError(TransportError):
    """Authentication failed."""


class Unreachable(TransportError):
    """A server could not be reached."""

    exit_code = 3


class ReportedFailure(SdcadmError):
    """Something failed; the command's own output says what."""

    reported = True


class ReportedUnreachable(Unreachable):
    """Some servers could not be reached, and nothing else failed; the
    command's own output names them."""

    reported = True


class RemoteCommandFailed(TransportError):
    """A command run on a server exited non-zero."""

    def __init__(self, host, argv, returncode, stderr):
        self.host, self.argv, self.returncode, self.stderr = host, argv, returncode, stderr
        tail = (stderr or "").strip().splitlines()[-5:]
        detail = ("\n    " + "\n    ".join(tail)) if tail else ""
        super().__init__(f"{argv[0]} on {host} exited {returncode}{detail}")


class DatasetError(SdcadmError):
    """A dataset operation failed."""


class ReplicaDiverged(DatasetError):
    """The replica and its source have no common snapshot, or the replica was modified."""


class RestoreDataBroken(SdcadmError):
    """This headnode's restore data would not restore what it claims to."""


class FenceFailed(SdcadmError):
    """A server could not be fenced: nothing was moved off it."""


class ImageError(SdcadmError):
    """An image file is invalid or unsafe."""


# -- zfs's stderr mapped to types (sdcadm.transport.zfs.map_error): here, not
# in transport/zfs.py, so that the whole tree reads in one place.

class ZfsError(DatasetError):
    """A zfs command failed."""

    def __init__(self, message, *, argv=None, stderr="", hint=None):
        self.argv = list(argv or [])
        self.stderr = stderr
        super().__init__(message, hint=hint)


class ZfsNotFound(ZfsError):
    """The dataset or snapshot does not exist."""


class ZfsExists(ZfsError):
    """The dataset or snapshot already exists."""


class ZfsBusy(ZfsError):
    """The dataset is busy (held, has clones or children, or mounted in use)."""


class ZfsHasClones(ZfsBusy):
    """The dataset or snapshot has clones depending on it."""


class ZfsNoSuchHold(ZfsError):
    """The snapshot has no hold with that tag."""


class ZfsHoldExists(ZfsError):
    """The snapshot already has a hold with that tag."""


class ZfsStreamError(ZfsError):
    """A send stream was cut short or is invalid."""


class ZfsReceiveDiverged(ReplicaDiverged):
    """The receiving dataset cannot take this incremental stream."""

    def __init__(self, message, *, argv=None, stderr="", hint=None):
        self.argv = list(argv or [])
        self.stderr = stderr
        super().__init__(message, hint=hint)


class AgentError(SdcadmError):
    """The agent could not do what was asked."""


class RequestError(SdcadmError):
    """A request to the agent's API was refused (the HTTP layer answers it
    with ``status`` and the error word ``error``)."""

    def __init__(self, status, error, message, *, headers=None):
        self.status, self.error, self.headers = status, error, dict(headers or {})
        super().__init__(message)


class LabError(SdcadmError):
    """The lab DC could not be set up or driven."""


class UnhealthyError(SdcadmError):
    """Some instances are not healthy."""


class ProcedureFailed(SdcadmError):
    """A procedure step failed; the Task records which and why.

    ``result``: the runner's RunResult of the failed run (the ``-j`` output).
    """

    def __init__(self, message, *, hint=None, result=None):
        super().__init__(message, hint=hint)
        self.result = result

    @staticmethod
    def class_for(cause):
        """The failure class whose exit code tells what failed the step: a server
        that could not be reached (exit 3) or anything else (exit 1)."""
        return ProcedureUnreachable if isinstance(cause, Unreachable) else ProcedureFailed


class ProcedureUnreachable(ProcedureFailed):
    """A procedure step failed because a server could not be reached."""

    exit_code = Unreachable.exit_code

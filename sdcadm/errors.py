"""The one exception tree of sdcadm.

Each class carries the process exit code; the message says what went wrong and
how to fix it. Only ``sdcadm.cli.main.main()`` (and the agent's ``main()``)
turn these into exit codes; library code raises and never exits.
"""


class SdcadmError(Exception):
    """Something went wrong."""

    exit_code = 1

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


class ImageError(SdcadmError):
    """An image file is invalid or unsafe."""


class AgentError(SdcadmError):
    """The agent could not do what was asked."""


class LabError(SdcadmError):
    """The lab DC could not be set up or driven."""


class UnhealthyError(SdcadmError):
    """Some instances are not healthy."""

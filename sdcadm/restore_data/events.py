"""Typed events of a restore-data sync (besides ``sdcadm.progress.Progress``).

The agent streams them as NDJSON (``to_dict()``); the CLI renders them.
"""

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class _Event:
    def to_dict(self):
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class InstanceResult(_Event):
    """What one instance's sync did (nested in ServiceResult)."""

    uuid: str
    alias: str
    source: str | None          # source server hostname
    status: str                 # ok | failed | diverged | unreachable
    error: str | None = None
    snapshot: str | None = None  # the dataset copy now current (None: no dataset)
    bytes: int = 0
    bytes_moved: int = 0
    duration: float = 0.0
    last_success: float | None = None


@dataclass(frozen=True)
class ServiceResult(_Event):
    """One service synced (or not): its status is the worst of its instances'."""

    service: str
    status: str                 # ok | failed | diverged | unreachable | busy
    error: str | None = None
    duration: float = 0.0
    instances: tuple = field(default_factory=tuple)   # InstanceResult dicts

    @property
    def ok(self):
        return self.status == "ok"


@dataclass(frozen=True)
class SyncSummary(_Event):
    """The end of a sync: per service status, and whether all went well."""

    receiver: str
    hostname: str
    ok: bool
    services: dict = field(default_factory=dict)    # name -> status
    pruned: tuple = field(default_factory=tuple)    # "service/uuid" removed
    started: float = 0.0
    finished: float = 0.0
    error: str | None = None

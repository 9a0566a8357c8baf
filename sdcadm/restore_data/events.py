"""Typed events of a restore-data sync, in the one hierarchy of
``sdcadm.progress`` (besides its ``Progress``).

The agent streams them as NDJSON (``to_dict()``); its clients read them back
with ``Event.from_dict()`` and the CLI renders them by type.
"""

from dataclasses import dataclass, field

from sdcadm.progress import Event


@dataclass(frozen=True)
class InstanceResult(Event):
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
    vanished: int = 0            # files gone from the live source while copied (kept: a warning)
    warning: str | None = None


@dataclass(frozen=True)
class ServiceResult(Event):
    """One service synced (or not): its status is the worst of its instances'."""

    service: str
    status: str                 # ok | failed | diverged | unreachable | busy
    error: str | None = None
    duration: float = 0.0
    instances: tuple = field(default_factory=tuple)   # InstanceResult dicts
    vanished: int = 0            # sum of the instances' (a warning, not a failure)
    warning: str | None = None

    @property
    def ok(self):
        return self.status == "ok"


@dataclass(frozen=True)
class SyncSummary(Event):
    """The end of a sync: per service status, and whether all went well."""

    receiver: str
    hostname: str
    ok: bool
    services: dict = field(default_factory=dict)    # name -> status
    pruned: tuple = field(default_factory=tuple)    # "service/uuid" removed
    started: float = 0.0
    finished: float = 0.0
    error: str | None = None
    store: dict | None = None   # the store snapshot of this cycle (StoreSnapshotResult.to_dict())

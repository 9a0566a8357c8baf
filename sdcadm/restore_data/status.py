"""The restore-data status record kept in the DC store (one per receiving
headnode and instance), so `sdcadm status` and `restore-data ls` can tell,
from any headnode, what every headnode can restore and as of when."""

from dataclasses import dataclass

from sdcadm.model import Record

STATUSES = ("ok", "failed", "diverged", "unreachable")


@dataclass
class RestoreStatus(Record):
    receiver: str              # server UUID of the headnode holding the copy
    service: str
    instance: str              # instance UUID
    alias: str = ""
    source: str | None = None  # server UUID the instance lived on when pulled
    snapshot: str | None = None
    guid: str | None = None
    bytes: int = 0             # size of the current copy of the delegate dataset
    duration: float = 0.0      # seconds the last attempt took
    last_success: float | None = None
    last_attempt: float = 0.0
    status: str = "ok"
    error: str | None = None

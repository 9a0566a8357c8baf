"""Typed progress events, shared by the CLI, the agent's NDJSON API and tests.

Work reports through ``notify(observer, event)``; a broken observer is logged
and ignored, never allowed to break the work it watches.
"""

import logging
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """A step of long work: ``done`` of ``total`` (either may be None)."""

    step: str
    message: str
    done: int | None = None
    total: int | None = None

    def to_dict(self):
        return {"event": type(self).__name__, **asdict(self)}


def notify(observer, event):
    if observer is None:
        return
    try:
        observer(event)
    except Exception:  # noqa: BLE001 - an observer must not break the work
        log.exception("progress observer failed on %r", event)

"""Typed progress events, shared by the CLI, the agent's NDJSON API and tests.

Every event is a frozen dataclass deriving from ``Event``; ``to_dict()`` is
its JSON form (``{"event": <class name>, ...fields}``) and
``Event.from_dict()`` turns that form back into the typed event, so a client
of the agent's stream handles the same classes as the agent itself.

Work reports through ``notify(observer, event)``; a broken observer is logged
and ignored, never allowed to break the work it watches.
"""

import dataclasses
import logging
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

_KINDS = {}


@dataclass(frozen=True)
class Event:
    """Something long work reports; subclasses are found by name in JSON."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _KINDS[cls.__name__] = cls

    def to_dict(self):
        return {"event": type(self).__name__, **asdict(self)}

    @staticmethod
    def from_dict(doc):
        """The typed event of a ``to_dict()`` document; None when its kind is
        unknown (a newer peer) or its fields do not fit (a broken one). Unknown
        fields are ignored; JSON lists become tuples where the field holds one."""
        cls = _KINDS.get(doc.get("event")) if isinstance(doc, dict) else None
        if cls is None:
            return None
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in doc:
                value = doc[f.name]
                if isinstance(value, list) and f.default_factory is tuple:
                    value = tuple(value)
                values[f.name] = value
        try:
            return cls(**values)
        except TypeError:
            log.warning("ignoring a malformed %s event: %r", cls.__name__, doc)
            return None


@dataclass(frozen=True)
class Progress(Event):
    """A step of long work: ``done`` of ``total`` (either may be None)."""

    step: str
    message: str
    done: int | None = None
    total: int | None = None


def notify(observer, event):
    if observer is None:
        return
    try:
        observer(event)
    except Exception:  # noqa: BLE001 - an observer must not break the work
        log.exception("progress observer failed on %r", event)

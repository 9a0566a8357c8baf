"""JSON-lines logging for the agent: one object per line, on stderr.

Every record carries the time, level, logger, message and this server's
UUID, plus whatever was passed in ``extra=`` (``instance``, ``alias``,
``event``, ``error``, ...), so a log can be filtered with ``jq``.
"""

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, server_uuid):
        super().__init__()
        self.server_uuid = server_uuid

    def format(self, record):
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "server_uuid": self.server_uuid,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, sort_keys=False)


def setup_logging(server_uuid, stream=None, level=logging.INFO):
    """Send every ``sdcadm`` logger's records to ``stream`` as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(server_uuid))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class Throttled:
    """Log a recurring problem when it starts, when its message changes and then
    at most every ``every`` seconds; log once when it clears. Keeps a store
    outage from filling the log at the reconcile rate."""

    def __init__(self, logger, every=30.0, clock=time.monotonic):
        self.logger, self.every, self.clock = logger, every, clock
        self._active = {}  # key -> (message, last logged)

    def problem(self, key, message, level=logging.WARNING, **extra):
        now = self.clock()
        last = self._active.get(key)
        if last is None or last[0] != message or now - last[1] >= self.every:
            self.logger.log(level, message, extra={"event": key, **extra})
            self._active[key] = (message, now)

    def clear(self, key, message, **extra):
        if self._active.pop(key, None) is not None:
            self.logger.info(message, extra={"event": f"{key}-cleared", **extra})

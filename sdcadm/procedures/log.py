"""The log of one procedure run: JSON lines, one file per run.

``<log_dir>/<name>-<UTC timestamp>-<task uuid8>.log``. Records written before
the file exists (while preparing) are kept in memory and written first once
it is opened, so the file tells the whole story; a dry run never opens one.
Every record: ``time`` (ISO 8601 UTC), ``event`` and its fields; each line is
flushed as written, so ``tail -f`` follows a run and a killed run keeps
everything up to the kill.
"""

import json
import logging
import os
import re
import time
from pathlib import Path

from sdcadm.errors import SdcadmError

log = logging.getLogger(__name__)


def utc_stamp(ts):
    """Unix time -> ``20240102T030405Z`` (for file names)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))


def iso_time(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def log_path(log_dir, name, ts, task_uuid):
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "procedure"
    return Path(log_dir) / f"{safe}-{utc_stamp(ts)}-{task_uuid[:8]}.log"


class RunLog:
    """Structured log of one run. ``event(kind, **fields)``; ``info(msg, **fields)``."""

    def __init__(self, clock=time.time):
        self.path = None
        self._clock = clock
        self._file = None
        self._buffer = []

    def open(self, path):
        """Create the file (and its directory) and write what was logged so far."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as e:
            raise SdcadmError(
                f"cannot write the procedure log {path}: {e.strerror}",
                hint="set log_dir in the configuration (or SDCADM_LOG_DIR) to a writable "
                     "directory") from None
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self.path = path
        for line in self._buffer:
            self._file.write(line)
        self._buffer = []
        self._file.flush()
        return path

    def event(self, kind, **fields):
        record = {"time": iso_time(self._clock()), "event": kind, **fields}
        line = json.dumps(record, default=str, sort_keys=False) + "\n"
        log.debug("%s", line.rstrip())
        if self._file is None:
            self._buffer.append(line)
            return
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as e:  # a full disk must not turn a good run into a failed one
            log.warning("cannot write to %s: %s", self.path, e)

    def info(self, msg, **fields):
        self.event("info", msg=msg, **fields)

    def warning(self, msg, **fields):
        self.event("warning", msg=msg, **fields)

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def read_log(path):
    """The records of a log file (for tests and `task get`)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

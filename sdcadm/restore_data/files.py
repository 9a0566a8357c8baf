"""Cross-process locks and tolerant reads of restore data (its atomic writes
are ``sdcadm.fsutil``'s).

Locks are ``fcntl.flock`` on lock files: they exclude other processes *and*
other threads (each ``FileLock`` opens its own file description), and vanish
with the process that held them.
"""

import errno
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from sdcadm.errors import SdcadmError
from sdcadm.fsutil import _unlink


class LockBusy(SdcadmError):
    """Someone else holds the lock."""


def remove_tree(path):
    """Remove a file or a directory tree; missing is fine."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        _unlink(path)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


class FileLock:
    """``with FileLock(path, timeout=..., shared=False):`` -- an flock on ``path``.

    Waits up to ``timeout`` seconds (0: try once), then raises LockBusy naming
    ``what``. Works across processes and across threads of one process.
    """

    def __init__(self, path, *, timeout=0.0, shared=False, what=None, poll=0.05):
        self.path, self.timeout, self.shared = Path(path), float(timeout), shared
        self.what, self.poll = what or str(path), poll
        self._fd = None

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, mode)
                self._fd = fd
                return self
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockBusy(f"{self.what} is busy (another sync or verify holds {self.path})",
                               hint="wait for it to finish and try again")
            time.sleep(self.poll)

    def release(self):
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def read_json(path):
    """The parsed JSON at ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None

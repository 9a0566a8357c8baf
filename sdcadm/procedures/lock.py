"""The DC-wide lock held while a procedure runs: wait for it, keep it, give it back.

The store's lock has an expiry (``ttl``, by the store's clock), so a crashed
holder cannot block the DC forever; while a run lasts, a background thread renews it every ``ttl / 3``
seconds. The owner is ``<hostname>:<pid>:<uuid>``: a lock left behind by a
process of this host that no longer exists is taken over at once instead of
waiting for it to expire (its pid is checked with ``kill(pid, 0)``).
"""

import logging
import os
import socket
import threading
import time

from sdcadm.errors import LockHeld, LockLost, StoreError
from sdcadm.procedures.base import LockWaitTimeout
from sdcadm.uuids import new_uuid

log = logging.getLogger(__name__)

LOCK_NAME = "dc"
DEFAULT_TTL = 30.0
DEFAULT_TIMEOUT = 60.0
WAIT_REPORT_EVERY = 10.0


def make_owner():
    return f"{socket.gethostname()}:{os.getpid()}:{new_uuid()}"


def owner_is_dead(owner, hostname=None):
    """True if ``owner`` names a process of this host that no longer runs."""
    hostname = hostname or socket.gethostname()
    parts = owner.split(":")
    if len(parts) < 3 or ":".join(parts[:-2]) != hostname:
        return False
    try:
        pid = int(parts[-2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class DcLock:
    """The lock, its waiting and its renewal thread. ``warn(text)`` tells the operator."""

    def __init__(self, store, ttl=DEFAULT_TTL, owner=None, name=LOCK_NAME, warn=None,
                 sleep=time.sleep):
        self.store, self.ttl, self.name = store, float(ttl), name
        self.owner = owner or make_owner()
        self.warn = warn or (lambda text: None)
        self.sleep = sleep
        self.token = None
        self.lost = None  # the reason, once lost
        self._stop = threading.Event()
        self._thread = None

    # -- taking it -------------------------------------------------------------------
    def acquire(self, timeout=DEFAULT_TIMEOUT):
        """Take the lock, waiting up to ``timeout`` seconds; return the fencing token."""
        started = time.monotonic()
        reported = (None, -WAIT_REPORT_EVERY)
        while True:
            try:
                self.token = self.store.acquire_lock(self.name, self.owner, self.ttl)
                return self.token
            except LockHeld as e:
                if owner_is_dead(e.owner):
                    self.warn(f"taking over the lock held by {e.owner}: "
                              "that process is gone from this host")
                    self.store.release_lock(self.name, e.owner)
                    continue
                waited = time.monotonic() - started
                expires_in = max(0.0, e.expires_in or 0.0)
                if waited >= timeout:
                    raise LockWaitTimeout(self.name, e.owner, e.expires_at, waited,
                                          expires_in) from None
                if e.owner != reported[0] or waited - reported[1] >= WAIT_REPORT_EVERY:
                    self.warn(f"waiting for lock held by {e.owner} "
                              f"(expires in {expires_in:.0f}s)")
                    reported = (e.owner, waited)
                self.sleep(max(0.02, min(0.5, timeout - waited, expires_in + 0.01)))

    # -- keeping it ------------------------------------------------------------------
    def start_renewing(self):
        self._thread = threading.Thread(target=self._renew_loop, name="sdcadm-lock", daemon=True)
        self._thread.start()

    def _renew_loop(self):
        interval = self.ttl / 3
        last_ok = time.monotonic()
        while not self._stop.wait(interval):
            try:
                token = self.store.acquire_lock(self.name, self.owner, self.ttl)
            except LockHeld as e:
                self.lost = f"the lock expired and was taken by {e.owner}"
                log.error("lost the DC lock: %s", self.lost)
                return
            except StoreError as e:
                log.warning("cannot renew the DC lock: %s", e)
                if time.monotonic() - last_ok > self.ttl:
                    self.lost = f"could not renew it for {self.ttl:.0f}s: {e}"
                    return
                continue
            if token != self.token:
                self.lost = "it expired and was taken by another process in the meantime"
                return
            last_ok = time.monotonic()

    def check(self):
        """Raise LockLost if the lock was lost (called between steps)."""
        if self.lost:
            raise LockLost(f"lost the DC lock: {self.lost}",
                           hint="another operation may have started; check `sdcadm task ls` "
                                "before running this again")

    # -- giving it back --------------------------------------------------------------
    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.token is None:
            return
        try:
            self.store.release_lock(self.name, self.owner)
        except StoreError as e:
            log.warning("cannot release the DC lock (it expires in %.0fs): %s", self.ttl, e)
        self.token = None

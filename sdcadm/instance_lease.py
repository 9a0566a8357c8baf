"""Instance leases: a singleton instance may acknowledge a write only while
its agent says the DC store still confirms that this server owns it.

Standard library only, no other sdcadm import: a service copies this one file
next to its code (the lab workload does, see ``sdcadm/lab/images.py``) and
calls::

    import instance_lease
    guard = instance_lease.LeaseGuard.from_env()
    ...  # make the write durable (fsync)
    if not guard.valid():
        answer 503 and stop serving
    answer 2xx

The contract (docs/recovery.md, "Instance leases and the dead margin"):

* The agent gives a leased instance the path of its lease file in
  ``SDC_INSTANCE_LEASE`` (``zones/<uuid>/lease``). The variable is set when
  the process starts and cannot change under it. An instance started without
  it is not leased: HA and non-singleton instances, which may run on several
  servers at once, get no lease and ``valid()`` is always true for them.
* The file is one JSON object, rewritten atomically (temporary file, then
  ``rename``) by the agent each time the store confirms ownership::

      {"version": 1, "clock": "boottime", "boot_id": "<kernel boot id>",
       "instance": "<uuid>", "deadline": 8311.25}

  ``deadline`` is a reading of the clock ``clock`` of this machine: the
  agent's last confirmation plus the lease. ``CLOCK_BOOTTIME`` (Linux) is
  CLOCK_MONOTONIC that also counts time spent suspended, so a machine that
  slept through its lease wakes up expired; both are per machine, which is
  right because an instance always runs on its agent's server. ``boot_id``
  ties the reading to one boot (the clock restarts at 0 with every boot).
* Fail safe: a leased instance whose file is missing, unreadable, larger
  than ``MAX_BYTES``, not this format, of another clock, boot or instance, or
  whose deadline is not a finite number or lies more than ``MAX_AHEAD``
  seconds ahead (no agent grants that) holds **no** valid lease.
* A lease of deadline 0 is revoked: the agent writes it before it stops an
  instance or when the store says the instance lives elsewhere now.

The check narrows the window in which a process that froze (SIGSTOP, a VM
paused, a long GC) can acknowledge after its lease to the instant between the
check and the send; the agent closes the rest by SIGKILLing leased processes
at the lease's end, frozen ones included.
"""

import json
import math
import os
import tempfile
import threading
import time

ENV = "SDC_INSTANCE_LEASE"
ENV_UUID = "SDC_INSTANCE_UUID"
VERSION = 1
MAX_BYTES = 4096
MAX_AHEAD = 86400.0     # no agent grants a lease of a day
REVOKED = 0.0

if hasattr(time, "CLOCK_BOOTTIME"):
    CLOCK_NAME, _CLOCK = "boottime", time.CLOCK_BOOTTIME
else:  # pragma: no cover - not Linux: monotonic, which may stop while suspended
    CLOCK_NAME, _CLOCK = "monotonic", time.CLOCK_MONOTONIC


def now():
    """The lease clock of this machine, in seconds."""
    return time.clock_gettime(_CLOCK)


_BOOT_ID = []


def boot_id():
    """This boot's id (Linux), "" where there is none. Read once: no process
    outlives its boot, and a leased instance checks its lease on every request."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _BOOT_ID.append(f.read().strip())
        except OSError:
            _BOOT_ID.append("")
    return _BOOT_ID[0]


def encode(deadline, instance):
    return json.dumps({"version": VERSION, "clock": CLOCK_NAME, "boot_id": boot_id(),
                       "instance": instance, "deadline": float(deadline)}) + "\n"


def write(path, deadline, instance):
    """Atomically make ``path`` hold a lease of ``instance`` until ``deadline``
    (a ``now()`` reading). Not fsynced: after a crash or reboot the boot id
    voids the file anyway. Raises OSError."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".lease.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(encode(deadline, instance))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read(path, instance=None):
    """``(deadline, None)`` of the lease at ``path``, or ``(None, reason)``
    when the file cannot be trusted. ``instance``: the uuid it must name."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror or e}"
    if len(raw) > MAX_BYTES:
        return None, f"{path} is larger than {MAX_BYTES} bytes"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, f"{path} is not a JSON lease"
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return None, f"{path} is not a version {VERSION} lease"
    if doc.get("clock") != CLOCK_NAME or doc.get("boot_id") != boot_id():
        return None, f"{path} was written for another clock or boot"
    if instance and doc.get("instance") != instance:
        return None, f"{path} is the lease of another instance"
    deadline = doc.get("deadline")
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) \
            or not math.isfinite(deadline):
        return None, f"{path}: the deadline is not a number"
    return float(deadline), None


def remaining(path, instance=None, at=None):
    """Seconds left on the lease at ``path`` (<= 0: expired, revoked or not
    trustworthy) and the reason when it is not valid."""
    deadline, reason = read(path, instance)
    at = now() if at is None else at
    if deadline is None:
        return 0.0, reason
    left = deadline - at
    if left > MAX_AHEAD:
        return 0.0, f"{path}: the deadline lies {left:.0f} s ahead, more than any lease"
    if left <= 0:
        return left, "the lease expired" if deadline != REVOKED else "the lease was revoked"
    return left, None


class LeaseGuard:
    """An instance's view of its lease. ``path`` None: not leased (valid)."""

    def __init__(self, path=None, instance=None, clock=now):
        self.path, self.instance, self.clock = path, instance, clock
        self.reason = None    # why the last check found it invalid

    @classmethod
    def from_env(cls, environ=None):
        environ = os.environ if environ is None else environ
        return cls(environ.get(ENV) or None, environ.get(ENV_UUID) or None)

    @property
    def leased(self):
        return self.path is not None

    def valid(self):
        """True while the lease holds (always for an instance not leased).
        Once false it stays false: a fenced instance never serves again."""
        return self.left() > 0

    def left(self):
        """Seconds the lease still holds (infinite when not leased; 0 once
        it does not hold, and from then on)."""
        if self.path is None:
            return math.inf
        if self.reason is not None:
            return 0.0
        left, reason = remaining(self.path, self.instance, self.clock())
        if left <= 0:
            self.reason = reason or "the lease expired"
            return 0.0
        return left

    def watch(self, on_expiry, interval=0.5):
        """Call ``on_expiry(reason)`` once, from a daemon thread, as soon as
        the lease is found invalid, so an idle instance stops too: checked at
        its deadline (to the clock reading) and every ``interval`` s before
        it (a revocation; any request finds that at once anyway). No thread
        for an instance not leased."""
        if self.path is None:
            return None

        def loop():
            while True:
                left = self.left()
                if left <= 0:
                    break
                time.sleep(min(interval, left))
            on_expiry(self.reason)

        thread = threading.Thread(target=loop, name="instance-lease", daemon=True)
        thread.start()
        return thread


def lease_valid(path=None, instance=None):
    """One check: the lease at ``path`` (default: ``$SDC_INSTANCE_LEASE``,
    whose absence means not leased, so valid) holds now."""
    if path is None:
        path = os.environ.get(ENV) or None
        instance = instance or os.environ.get(ENV_UUID) or None
    return LeaseGuard(path, instance).valid()

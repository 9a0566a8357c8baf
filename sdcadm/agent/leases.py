"""Instance leases, the agent's side: grant, renew, revoke, and end them on time.

Each running singleton instance holds a lease (``sdcadm/instance_lease.py``
has the file format and the instance's side): a deadline on this machine's
lease clock, ``confirmed + lease``, where ``confirmed`` is when the last
heartbeat and the last ownership read that both succeeded had started. The
supervisor renews it after each pass that reached the store; nothing else
does.

The ``LeaseKeeper`` thread ends leases on time whatever the supervisor is
doing (a pass can hang for ``store.timeout`` in a store call): from
``deadline - stop_lead`` it stops every leased process whose lease was not
renewed, **all at once**: SIGTERM to all, SIGKILL to each survivor at its
lease's end (at most ``stop_timeout`` after the SIGTERM). Signals go through
pidfds, so a pid reused after the supervisor reaped cannot be hit.
"""

import logging
import os
import threading
from dataclasses import dataclass

from sdcadm import instance_lease
from sdcadm.agent import process

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One leased process."""

    name: str
    pidfd: int
    deadline: float
    stopping: bool = False
    attached: float = 0.0    # clock() when attached: a read older than this says nothing of it


def stop_due(deadlines, now, stop_lead, stop_timeout):
    """The leased processes to stop now, and when each is SIGKILLed.

    ``deadlines``: {key: lease deadline} of the processes not already being
    stopped. Returns {key: kill_at} for those within ``stop_lead`` of their
    deadline: SIGTERM now, SIGKILL at the deadline, or ``stop_timeout`` after
    now if that comes first. Pure: the keeper's decision, unit-tested.
    """
    return {key: min(deadline, now + stop_timeout)
            for key, deadline in deadlines.items() if deadline - stop_lead <= now}


class LeaseKeeper:
    def __init__(self, layout, lease, stop_lead, stop_timeout, clock=instance_lease.now):
        self.layout, self.lease = layout, lease
        self.stop_lead, self.stop_timeout = stop_lead, stop_timeout
        self.clock = clock
        self.confirmed = None        # clock() reading of the last confirmation
        self._entries = {}           # uuid -> Entry
        self._granted = {}           # uuid -> the deadline grant() wrote, until attach()
        self._cond = threading.Condition()

    # -- what the supervisor asks ------------------------------------------------
    def path(self, uuid):
        return self.layout.zone(uuid) / "lease"

    def deadline(self):
        return None if self.confirmed is None else self.confirmed + self.lease

    def held(self):
        """The lease holds, and not within ``stop_lead`` of its end: singletons
        may be started."""
        deadline = self.deadline()
        return deadline is not None and self.clock() < deadline - self.stop_lead

    def ending(self):
        """It was held once and is now within ``stop_lead`` of its end, or over."""
        deadline = self.deadline()
        return deadline is not None and self.clock() >= deadline - self.stop_lead

    def renew(self, confirmed, owned):
        """The store confirmed ownership at ``confirmed`` (a clock() reading)
        of the instances ``owned``: extend their leases. A leased instance not
        in ``owned`` lives elsewhere now: its lease is revoked."""
        with self._cond:
            self.confirmed = confirmed if self.confirmed is None else max(self.confirmed, confirmed)
            deadline = self.deadline()
            for uuid, entry in self._entries.items():
                if entry.stopping:
                    continue
                if uuid not in owned and entry.attached > confirmed:
                    # Started after this ownership read began (e.g. just restored
                    # here): the read cannot tell; the supervisor's next one will.
                    continue
                new = deadline if uuid in owned else instance_lease.REVOKED
                if new == entry.deadline:
                    # The file says so already: a pass's renewal counts from the
                    # last heartbeat (no later), so most passes change nothing,
                    # and a restore's passes come many a second.
                    continue
                if self._write(uuid, new):
                    entry.deadline = new  # what the instance reads, no more
            self._cond.notify_all()

    def grant(self, uuid):
        """Write the lease of an instance about to start; return its path."""
        path = self.path(uuid)
        deadline = self.deadline() or instance_lease.REVOKED
        instance_lease.write(path, deadline, uuid)
        with self._cond:
            self._granted[uuid] = deadline
        return path

    def attach(self, uuid, name, pid, deadline=None):
        """Keep the lease of process ``pid`` of instance ``uuid``: from now on
        it is stopped when its lease ends. ``deadline`` None: the current one
        (a just-started process); a process left by a previous agent run
        keeps the deadline of its file until this agent renews it."""
        pidfd = process.open_pidfd(pid, uuid)
        if pidfd is None:
            return
        if deadline is None:
            # What ``grant`` wrote for it: renewals compare with the file's
            # deadline, so the entry must hold exactly that.
            with self._cond:
                deadline = self._granted.pop(uuid, None)
            if deadline is None:  # not granted: grant it now
                deadline = self.deadline() or instance_lease.REVOKED
                if not self._write(uuid, deadline):
                    deadline = instance_lease.REVOKED
        with self._cond:
            self._drop(uuid)
            self._entries[uuid] = Entry(name, pidfd, deadline, attached=self.clock())
            self._cond.notify_all()

    def attach_stale(self, uuid, name, pid):
        deadline, _ = instance_lease.read(self.path(uuid), uuid)
        self.attach(uuid, name, pid, deadline if deadline is not None else instance_lease.REVOKED)

    def release(self, uuid, revoke=True):
        """The process of ``uuid`` is being stopped (``revoke``: its lease
        ends now, so it stops acknowledging before SIGTERM) or has exited."""
        with self._cond:
            self._drop(uuid)
        if revoke and self.path(uuid).exists():
            self._write(uuid, instance_lease.REVOKED)

    def leased(self):
        with self._cond:
            return set(self._entries)

    # -- the keeper thread ---------------------------------------------------------
    def run(self, stop):
        while not stop.is_set():
            try:
                if not self.stop_expired():
                    with self._cond:
                        self._cond.wait(self._sleep())
            except Exception:  # a bug must not end lease enforcement
                log.exception("lease keeper crashed; retrying", extra={"event": "lease-keeper-crash"})
                stop.wait(0.1)

    def stop_expired(self):
        """Stop, in parallel, every leased process due; True if some were."""
        with self._cond:
            now = self.clock()
            due = stop_due({u: e.deadline for u, e in self._entries.items() if not e.stopping},
                           now, self.stop_lead, self.stop_timeout)
            targets, names = {}, []
            for uuid, kill_at in due.items():
                entry = self._entries[uuid]
                entry.stopping = True
                targets[os.dup(entry.pidfd)] = kill_at  # ours: release() may close the entry's
                names.append(entry.name)
        if not targets:
            return False
        log.warning("lease of %d singleton instance(s) ending, not renewed by the store: "
                    "stopping them all at once (%s)", len(targets), ", ".join(sorted(names)),
                    extra={"event": "lease-expired-stop", "instances": sorted(due)})
        try:
            process.stop_all(targets, self.clock)
        finally:
            for fd in targets:
                os.close(fd)
        return True

    def _sleep(self):
        now = self.clock()
        dues = [e.deadline - self.stop_lead - now for e in self._entries.values() if not e.stopping]
        return max(0.0, min(dues + [0.5]))

    def _drop(self, uuid):
        entry = self._entries.pop(uuid, None)
        if entry is not None:
            os.close(entry.pidfd)

    def _write(self, uuid, deadline):
        """Write a lease file; False (logged) when it could not be written."""
        try:
            instance_lease.write(self.path(uuid), deadline, uuid)
            return True
        except OSError as e:
            # The instance then finds its lease invalid (or it runs out): safe.
            log.error("cannot write the lease of instance %s: %s", uuid, e,
                      extra={"event": "lease-write-failed", "instance": uuid})
            return False

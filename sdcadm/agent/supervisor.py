"""The instance supervisor: make this server run what the store assigns to it.

Every pass: gather facts (the store's instances for this server, or the cached
copy when the store cannot be reached), reap processes that died, ask the
pure ``plan()`` what to do, have ``actions.py`` do it, and write changed
states back. Only this thread mutates the slots (and its provisioning pool, each
worker the slot of its own instance); the API reads the snapshot
published after each step.

Fencing: nothing is provisioned or started unless the store confirmed, less
than ``lease`` seconds ago, that this (unfenced) server owns the instance.
So a restarted agent starts nothing before it has reached the store, and an
agent cut off from the store for longer than the heartbeat timeout (after
which the server may be declared dead and its instances restored elsewhere)
keeps what runs but restarts nothing.

Instance leases (``agent/leases.py``): after each pass that reached the
store, and after each heartbeat (``confirm_leases``, from the heartbeat
thread, so that a long pass -- a slow provision, a stop waiting out its
timeout -- never lets them run out; the heartbeat reads ownership in its own
round trip, ``Store.beat``, so a slow store costs the lease one round trip,
not three), the singletons this server owns get
their lease renewed to ``c + lease``, ``c`` the start of the older of the
last heartbeat and the ownership read. The lease keeper thread stops them,
all at once, when it runs out; this loop stops them too (``StopAll``) and
starts no singleton while the lease is not held.
"""

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sdcadm import instance_lease
from sdcadm.agent import process, provision
from sdcadm.agent.actions import Actions
from sdcadm.agent.backoff import after_exit
from sdcadm.agent.delegate_datasets import DirDelegateDatasets
from sdcadm.agent.leases import LeaseKeeper
from sdcadm.agent.log import Throttled
from sdcadm.agent.plan import concurrent_steps, plan, staging, state_updates
from sdcadm.agent.slot import Slot
from sdcadm.errors import NotFound, StoreError

log = logging.getLogger(__name__)

# Instances provisioned at once in a pass: the image copy, its sha256, the
# unpacking and a seed's clone wait on disk and on zfs as much as on a CPU.
PROVISION_WORKERS = 4
# How long an instance provisioned ahead of its move (``request_stage``) waits
# for it; then, never started here, it is destroyed.
STAGE_WAIT = 600.0
STAGING_NICE = 19


def _lowest_priority():
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STAGING_NICE)
    except (OSError, AttributeError):
        pass  # not Linux, or not allowed: staging only runs at the usual priority


class Supervisor:
    def __init__(self, me, layout, image_source, stores, cache, metrics, *, lease,
                 instance_port=8080, stop_timeout=process.STOP_TIMEOUT, clock=time.time,
                 seeder=None, singletons=frozenset(), datasets=None,
                 max_image_bytes=None, lease_stop_lead=None, beat_started=None,
                 lease_clock=instance_lease.now, fetch_image=None):
        self.me, self.layout = me, layout
        self.singletons = frozenset(singletons)  # services stopped when the lease is lost
        self.leases = LeaseKeeper(layout, lease,
                                  lease * 0.2 if lease_stop_lead is None else lease_stop_lead,
                                  stop_timeout, clock=lease_clock)
        # lease-clock start of the last heartbeat that succeeded (None: none yet)
        self.beat_started = beat_started or (lambda: lease_clock())
        self.actions = Actions(layout, image_source, datasets or DirDelegateDatasets(), metrics,
                               seeder=seeder, instance_port=instance_port,
                               stop_timeout=stop_timeout, max_image_bytes=max_image_bytes,
                               leases=self.leases, singletons=self.singletons,
                               fetch_image=fetch_image)
        self.stores, self.cache, self.metrics = stores, cache, metrics
        self.lease = lease
        self.clock = clock
        self.slots = {}
        self.desired = []            # the last known desired instances (store or cache)
        self.images = {}             # image uuid -> Image record last seen
        self.server = None           # this server's record, once read
        self.confirmed_at = None     # when the store last answered
        self.store_ok = False
        self.last_error = None
        self.passes = 0
        self.wake = threading.Event()
        self._requests = set()
        self._stage_requests = []    # Instances a restore will move here next (request_stage)
        self._lock = threading.Lock()
        self._published = []
        self._problems = Throttled(log)
        self._workers = None         # provisions side by side (concurrent_steps)
        self._stagers = None         # provisions ahead of a move, at low CPU priority

    # -- start-up ----------------------------------------------------------------
    def load(self):
        """Learn the instances on disk (and their running processes) and the cache."""
        for uuid in self.layout.zone_uuids():
            slot = self.slots[uuid] = Slot(uuid)
            slot.payload = provision.read_payload(self.layout, uuid)
            if slot.payload:
                slot.instance = provision.instance_of(slot.payload)
            pid = process.read_pidfile(self.layout.pidfile(uuid))
            if pid and process.pid_is_instance(pid, uuid):
                slot.stale_pid = pid
                if slot.instance is not None and slot.instance.service in self.singletons:
                    self.leases.attach_stale(uuid, slot.name, pid)
            slot.state = "running" if slot.stale_pid else "stopped"
        self.desired, self.images, saved_at = self.cache.load(self.me)
        log.info("agent knows %d instance(s) on disk, %d from the cache (saved at %s)",
                 len(self.slots), len(self.desired), saved_at,
                 extra={"event": "load", "running": sorted(u for u, s in self.slots.items()
                                                           if s.stale_pid)})
        self._publish()

    # -- the loop ------------------------------------------------------------------
    def run(self, stop, interval):
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug in one pass must not stop supervision
                log.exception("reconcile pass crashed; retrying", extra={"event": "reconcile-crash"})
            self.wake.wait(interval)
            self.wake.clear()

    def request_restart(self, uuid):
        """Ask for an instance to be restarted (from the API thread)."""
        with self._lock:
            if uuid not in self.slots:
                return False
            self._requests.add(uuid)
        self.wake.set()
        return True

    def request_stage(self, instances):
        """Provision ``instances`` (their records as they will be once moved
        here) ahead of the move, without starting them: a restore asks for
        its next dependency level while it waits for the current one, so
        that the move only has to start them (from the API thread)."""
        with self._lock:
            self._stage_requests.extend(instances)
        self.wake.set()

    def run_once(self):
        now = self.clock()
        desired, elsewhere = self._gather(now)
        self._reap(now)
        may_start = self.may_start(now)
        self._restart_requested(may_start)
        views = {u: s.view() for u, s in self.slots.items()}
        fenced = self.server is not None and self.server.fenced
        lease_lost = self.confirmed_at is not None and (
            now - self.confirmed_at > self.lease or self.leases.ending())
        actions = plan(desired, views, self.me, now=now, elsewhere=elsewhere,
                       may_start=may_start, fenced=fenced, lease_lost=lease_lost,
                       lease_held=self.leases.held(), singletons=self.singletons)
        for step in concurrent_steps(actions):
            if len(step) == 1:
                self._do(step[0])
            else:
                list(self._pool().map(self._do, step))
            self._publish()
        views = {u: s.view() for u, s in self.slots.items()}
        if self.store_ok:
            self._set_states(state_updates(desired, views, self.me))
        self._stage(now)  # after this pass's starts: they are what a restore waits for now
        self.passes += 1
        self.metrics.reconciles.inc()
        self._publish()

    def _stage(self, now):
        if self.server is not None and self.server.fenced:
            with self._lock:
                self._stage_requests = []  # a fenced server prepares nothing
            return
        if not self.store_ok or self.server is None:
            return  # kept for a pass that reaches the store
        with self._lock:
            requested = list(self._stage_requests)
        actions = staging(requested, {u: s.view() for u, s in self.slots.items()}, self.me)
        missing = {a.instance.image for a in actions} - set(self.images)
        if missing:
            try:
                self.images.update({i.uuid: i for i in self.stores.get().list_images()
                                    if i.uuid in missing})
            except StoreError as e:
                log.info("staging waits for the store (images): %s", e,
                         extra={"event": "staging-deferred"})
                return  # kept for the next pass
        with self._lock:
            self._stage_requests = self._stage_requests[len(requested):]
        if not actions:
            return
        list(self._staging_pool().map(self._do, [[a] for a in actions]))
        for action in actions:
            slot = self.slots.get(action.instance.uuid)
            if slot is None:
                continue
            slot.staged_until = now + STAGE_WAIT
            # A failure here is told (seed_refusal reads slot.failure) but
            # must not hold back the provision that the move itself asks for.
            slot.failures, slot.not_before = 0, 0.0
        log.info("provisioned %d instance(s) ahead of their move here: %s", len(actions),
                 ", ".join(a.instance.alias for a in actions),
                 extra={"event": "instances-staged",
                        "instances": [a.instance.uuid for a in actions]})
        self._publish()

    def _do(self, unit):
        """One instance's actions, in order (from this thread or the pool's:
        each touches only its own slot; Actions.do raises nothing)."""
        for action in unit:
            self.actions.do(action, self.slots, self.images, self.clock())

    def _pool(self):
        if self._workers is None:
            self._workers = ThreadPoolExecutor(PROVISION_WORKERS, thread_name_prefix="provision")
        return self._workers

    def _staging_pool(self):
        """Workers that stage at the lowest CPU priority (Linux sets it per
        thread, and the copies and checks they run inherit it): the level
        being started, whose processes a restore waits for, comes first."""
        if self._stagers is None:
            self._stagers = ThreadPoolExecutor(PROVISION_WORKERS, thread_name_prefix="stage",
                                               initializer=_lowest_priority)
        return self._stagers

    def may_start(self, now):
        if self.server is None or self.server.fenced or not self.server.setup or self.confirmed_at is None:
            return False
        return now - self.confirmed_at <= self.lease

    # -- facts -----------------------------------------------------------------------
    def _gather(self, now):
        started = self.leases.clock()
        try:
            store = self.stores.get()
            server, desired, revision = store.assignment(self.me)
            self._server_known(server)
            known = {d.uuid for d in desired}
            for d in desired:  # moved here: staged no more
                if d.uuid in self.slots and d.server_uuid == self.me:
                    self.slots[d.uuid].staged_until = None
            elsewhere = {}
            for uuid, slot in self.slots.items():
                if slot.staged_until is not None and now < slot.staged_until:
                    continue  # waiting for its move: no read per pass (plan leaves it alone)
                if uuid not in known:
                    try:
                        elsewhere[uuid] = store.get_instance(uuid)
                    except NotFound:
                        elsewhere[uuid] = None
            missing = {d.image for d in desired} - set(self.images)
            if len(missing) > 1:  # e.g. a restore moved several here: one read, not one each
                self.images.update({i.uuid: i for i in store.list_images() if i.uuid in missing})
            elif missing:
                try:
                    image = missing.pop()
                    self.images[image] = store.get_image(image)
                except NotFound:
                    pass
        except StoreError as e:
            self.store_ok, self.last_error = False, str(e)
            self.metrics.store_reachable.set(0)
            self._problems.problem("store-unreachable",
                                   f"DC store unreachable, keeping what runs: {e}")
            return self.desired, {}
        self.store_ok, self.last_error, self.confirmed_at = True, None, now
        self.server = server
        self.metrics.store_reachable.set(1)
        self._problems.clear("store-unreachable", "DC store reachable again")
        if server is not None and server.fenced:
            self._problems.problem("fenced", f"server {self.me} is fenced: starting nothing "
                                   "(clear the fence once the server is known to be safe)")
        else:
            self._problems.clear("fenced", "server is no longer fenced")
        self.desired = desired
        self._renew_leases(desired, server, started)
        self._save_cache(desired, revision, now)
        return desired, elsewhere

    def confirm_leases(self, beat_started, server, desired):
        """Right after a heartbeat that started at ``beat_started`` (a lease
        clock reading) succeeded and read ``server`` and its ``desired``
        instances in the same round trip: renew from there."""
        self._renew_leases(desired, server, beat_started)

    def _renew_leases(self, desired, server, started):
        """Ownership read at ``started``: renew the singletons' leases, from
        the older of that and the last heartbeat (which the others judge this
        server by). A fenced or unknown server renews nothing."""
        beat = self.beat_started()
        if server is None or server.fenced or beat is None:
            return
        owned = {d.uuid for d in desired
                 if d.server_uuid == self.me and d.service in self.singletons}
        self.leases.renew(min(started, beat), owned)

    def _server_known(self, server):
        if server is None:
            self._problems.problem("unknown-server",
                                   f"server {self.me} is not in the DC store: starting nothing "
                                   "until it is registered", level=logging.ERROR)
        else:
            self._problems.clear("unknown-server", "server record found")

    def _save_cache(self, desired, revision, now):
        images = {d.image: self.images[d.image] for d in desired if d.image in self.images}
        try:
            self.cache.save(self.me, desired, images, revision, now)
        except OSError as e:
            self._problems.problem("cache-write", f"cannot write the agent cache {self.cache.path}: {e}")

    def _reap(self, now):
        for slot in self.slots.values():
            if slot.proc is not None:
                status = slot.proc.poll()
                if status is None:
                    continue
                uptime = now - slot.proc.started_at
                self.leases.release(slot.uuid, revoke=False)
                slot.failures, delay = after_exit(slot.failures, uptime)
                slot.proc, slot.restart_pending = None, True
                slot.state, slot.error = "failed", process.describe_exit(status)
                slot.not_before = now + delay
                log.warning("instance %s %s after %.1f s; restarting in %.1f s", slot.name,
                            slot.error, uptime, delay,
                            extra={"event": "instance-exited", "instance": slot.uuid,
                                   "status": status, "retry_in": delay})
            elif slot.stale_pid is not None and not process.pid_is_instance(slot.stale_pid, slot.uuid):
                log.warning("instance %s (process %d of a previous agent run) is gone",
                            slot.name, slot.stale_pid,
                            extra={"event": "instance-exited", "instance": slot.uuid})
                slot.stale_pid, slot.state, slot.error = None, "stopped", "exited"
                self.leases.release(slot.uuid, revoke=False)

    def _restart_requested(self, may_start):
        with self._lock:
            requests, self._requests = self._requests, set()
        for uuid in requests:
            slot = self.slots.get(uuid)
            if slot is None:
                continue
            if slot.proc is None:
                slot.not_before = 0.0  # not running: retry now instead of after the backoff
                continue
            if not may_start:
                log.warning("not restarting %s: ownership not confirmed by the store",
                            slot.name, extra={"event": "restart-refused", "instance": uuid})
                continue
            log.info("restarting %s on request", slot.name,
                     extra={"event": "restart-requested", "instance": uuid})
            self.actions.stop(slot)
            slot.state, slot.restart_pending, slot.not_before = "stopped", True, 0.0

    # -- writing back -------------------------------------------------------------------
    def _set_states(self, actions):
        """Write back the states of a pass in one transaction."""
        if not actions:
            return
        try:
            owned = self.stores.get().set_instance_states(
                [(a.instance.uuid, a.state, self.me, a.instance.generation) for a in actions])
        except StoreError as e:
            log.debug("cannot write the states of %d instance(s): %s", len(actions), e)
            return
        for action, owner in zip(actions, owned):
            if not owner:
                d = action.instance
                log.warning("state %s of instance %s not written: the store says this server no "
                            "longer owns it at generation %d", action.state, d.alias, d.generation,
                            extra={"event": "state-refused", "instance": d.uuid})

    # -- what the API shows -------------------------------------------------------------
    def _publish(self):
        rows, seen = [], set()
        for slot in self.slots.values():
            seen.add(slot.uuid)
            # provisioned ahead of a restore's move here, not this server's yet
            state = ("staged" if slot.staged_until is not None and slot.state == "provisioning"
                     else slot.state)
            rows.append(self._row(slot.instance, slot.uuid, state, slot.pid, slot.restarts,
                                  slot.error, slot.failure, slot.spawned_at))
        for d in self.desired:
            if d.uuid not in seen:
                rows.append(self._row(d, d.uuid, d.state, None, 0, None))
        rows.sort(key=lambda r: (r["service"] or "", r["alias"] or "", r["uuid"]))
        counts = {}
        for row in rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        self.metrics.set_instance_counts(counts)
        with self._lock:
            self._published = rows

    def _row(self, instance, uuid, state, pid, restarts, error, failure=None, spawned_at=None):
        return {
            "uuid": uuid,
            "alias": instance.alias if instance else None,
            "service": instance.service if instance else None,
            "state": state,
            "pid": pid,
            "restarts": restarts,
            "generation": instance.generation if instance else None,
            "url": self.actions.url(instance) if instance else None,
            "error": error,
            # the event of the failure when failed, e.g. provision-failed, restore-data-refused
            "failure": failure if state == "failed" else None,
            # when its process was last started (this server's wall clock;
            # a restore run here splits its time with it)
            "spawned_at": spawned_at,
        }

    def instances(self):
        with self._lock:
            return [dict(r) for r in self._published]


"""The instance supervisor: make this server run what the store assigns to it.

Every pass: gather facts (the store's instances for this server, or the cached
copy when the store cannot be reached), reap processes that died, ask the
pure ``plan()`` what to do, do it, and write changed states back. Only this
thread mutates the slots; the API reads the snapshot published after each
step.

Fencing: nothing is provisioned or started unless the store confirmed, less
than ``lease`` seconds ago, that this (unfenced) server owns the instance.
So a restarted agent starts nothing before it has reached the store, and an
agent cut off from the store for longer than the heartbeat timeout (after
which the server may be declared dead and its instances restored elsewhere)
keeps what runs but restarts nothing.
"""

import logging
import threading
import time

from sdcadm.agent import process, provision
from sdcadm.agent.backoff import after_exit, restart_delay
from sdcadm.agent.log import Throttled
from sdcadm.agent.plan import (
    Depose,
    Destroy,
    Local,
    Provision,
    Record,
    Start,
    Stop,
    plan,
    runtime_key,
    state_updates,
)
from sdcadm.agent.seed import seed_source
from sdcadm.errors import (AgentError, DatasetError, ImageError, NotFound, SdcadmError, StoreError,
                           ValidationError)

log = logging.getLogger(__name__)


class Slot:
    """The agent's record of one instance on this server."""

    def __init__(self, uuid):
        self.uuid = uuid
        self.payload = None        # the payload it is provisioned from (None: not provisioned)
        self.instance = None       # the Instance last seen (payload's, then the store's)
        self.proc = None           # InstanceProcess when it is our running child
        self.stale_pid = None      # a previous agent's process still running it
        self.state = "provisioning"
        self.error = None
        self.restarts = 0
        self.failures = 0          # consecutive failed starts / deaths (backoff)
        self.not_before = 0.0
        self.restart_pending = False

    @property
    def pid(self):
        return self.proc.pid if self.proc else self.stale_pid

    def view(self):
        payload_instance = provision.instance_of(self.payload) if self.payload else None
        return Local(
            uuid=self.uuid,
            generation=payload_instance.generation if payload_instance else 0,
            spec=runtime_key(payload_instance) if payload_instance else None,
            alive=self.pid is not None,
            child=self.proc is not None,
            state=self.state,
            not_before=self.not_before,
        )


class Supervisor:
    def __init__(self, me, layout, image_source, stores, cache, metrics, *, lease,
                 instance_port=8080, stop_timeout=process.STOP_TIMEOUT, clock=time.time,
                 seeder=None, singletons=frozenset(), datasets=None):
        from sdcadm.agent.datasets import DirDatasets

        self.me, self.layout, self.image_source = me, layout, image_source
        self.datasets = datasets or DirDatasets()  # delegate datasets: dir or zfs
        self.singletons = frozenset(singletons)  # services stopped when the lease is lost
        self.seeder = seeder         # agent.seed.Seeder: restore/migrate seeding (headnodes)
        self.stores, self.cache, self.metrics = stores, cache, metrics
        self.lease, self.instance_port, self.stop_timeout = lease, instance_port, stop_timeout
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
        self._lock = threading.Lock()
        self._published = []
        self._problems = Throttled(log)

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

    def run_once(self):
        now = self.clock()
        desired, elsewhere = self._gather(now)
        self._reap(now)
        may_start = self.may_start(now)
        self._restart_requested(may_start)
        views = {u: s.view() for u, s in self.slots.items()}
        fenced = self.server is not None and self.server.fenced
        lease_lost = self.confirmed_at is not None and now - self.confirmed_at > self.lease
        for action in plan(desired, views, self.me, now=now, elsewhere=elsewhere,
                           may_start=may_start, fenced=fenced, lease_lost=lease_lost,
                           singletons=self.singletons):
            self._do(action, self.clock())
            self._publish()
        views = {u: s.view() for u, s in self.slots.items()}
        if self.store_ok:
            for action in state_updates(desired, views, self.me):
                self._set_state(action)
        self.passes += 1
        self.metrics.reconciles.inc()
        self._publish()

    def may_start(self, now):
        if self.server is None or self.server.fenced or self.confirmed_at is None:
            return False
        return now - self.confirmed_at <= self.lease

    # -- facts -----------------------------------------------------------------------
    def _gather(self, now):
        try:
            store = self.stores.get()
            desired = store.list_instances(server_uuid=self.me)
            known = {d.uuid for d in desired}
            elsewhere = {}
            for uuid in self.slots:
                if uuid not in known:
                    try:
                        elsewhere[uuid] = store.get_instance(uuid)
                    except NotFound:
                        elsewhere[uuid] = None
            for d in desired:
                if d.image not in self.images:
                    try:
                        self.images[d.image] = store.get_image(d.image)
                    except NotFound:
                        pass
            revision = store.revision()
            server = self._read_server(store)
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
        self._save_cache(desired, revision, now)
        return desired, elsewhere

    def _read_server(self, store):
        try:
            server = store.get_server(self.me)
        except NotFound:
            self._problems.problem("unknown-server",
                                   f"server {self.me} is not in the DC store: starting nothing "
                                   "until it is registered", level=logging.ERROR)
            return None
        self._problems.clear("unknown-server", "server record found")
        return server

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
                slot.failures, delay = after_exit(slot.failures, uptime)
                slot.proc, slot.restart_pending = None, True
                slot.state, slot.error = "failed", process.describe_exit(status)
                slot.not_before = now + delay
                log.warning("instance %s %s after %.1f s; restarting in %.1f s", _name(slot),
                            slot.error, uptime, delay,
                            extra={"event": "instance-exited", "instance": slot.uuid,
                                   "status": status, "retry_in": delay})
            elif slot.stale_pid is not None and not process.pid_is_instance(slot.stale_pid, slot.uuid):
                log.warning("instance %s (process %d of a previous agent run) is gone",
                            _name(slot), slot.stale_pid,
                            extra={"event": "instance-exited", "instance": slot.uuid})
                slot.stale_pid, slot.state, slot.error = None, "stopped", "exited"

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
                            _name(slot), extra={"event": "restart-refused", "instance": uuid})
                continue
            log.info("restarting %s on request", _name(slot),
                     extra={"event": "restart-requested", "instance": uuid})
            self._stop(slot)
            slot.state, slot.restart_pending, slot.not_before = "stopped", True, 0.0

    # -- actions -----------------------------------------------------------------------
    def _do(self, action, now):
        try:
            if isinstance(action, Destroy):
                self._destroy(action)
            elif isinstance(action, Depose):
                self._depose(action)
            elif isinstance(action, Provision):
                self._provision(action.instance, now)
            elif isinstance(action, Start):
                self._start(action.instance, now)
            elif isinstance(action, Record):
                self._record(action.instance)
            elif isinstance(action, Stop):
                self._stop_wanted(action.instance)
        except (SdcadmError, OSError) as e:
            uuid = getattr(action, "uuid", None) or action.instance.uuid
            log.error("%s of instance %s failed: %s", type(action).__name__.lower(), uuid, e,
                      extra={"event": "action-failed", "instance": uuid})

    def _destroy(self, action):
        slot = self.slots[action.uuid]
        self._stop(slot)
        self.datasets.destroy(self.layout, action.uuid)
        provision.destroy(self.layout, action.uuid)
        del self.slots[action.uuid]
        log.info("instance %s was removed from the store: stopped and destroyed", _name(slot),
                 extra={"event": "instance-destroyed", "instance": action.uuid})

    def _depose(self, action):
        slot = self.slots[action.uuid]
        self._stop(slot)
        self.datasets.before_depose(self.layout, action.uuid)
        where = provision.depose(self.layout, action.uuid)
        self.datasets.after_depose(self.layout, action.uuid, where)
        del self.slots[action.uuid]
        kept = f"its zone is kept untouched in {where}" if where else "it had no zone on disk"
        log.warning("instance %s now belongs to server %s (generation %d): stopped; %s",
                    _name(slot), action.owner, action.generation, kept,
                    extra={"event": "instance-deposed", "instance": action.uuid,
                           "owner": action.owner, "generation": action.generation})

    def _provision(self, instance, now):
        slot = self.slots.setdefault(instance.uuid, Slot(instance.uuid))
        slot.instance = instance
        image = self.images.get(instance.image)
        self._stop(slot)
        slot.payload, slot.state = None, "provisioning"
        try:
            if image is None:
                raise ImageError(f"image {instance.image} is not in the DC store",
                                 hint="import the image, or fix the instance's image")
            if self.seeder is not None and seed_source(instance):
                self.seeder.prepare(instance)
            elif seed_source(instance):
                raise AgentError("this server cannot seed instances from restore data "
                                 "(no restore data configured)")
            payload = provision.provision(self.layout, instance, image, self.image_source)
            if instance.delegate_dataset:
                # After the image checked out: a bad image leaves nothing under zones/.
                self.datasets.create(self.layout, instance.uuid)
            slot.payload = payload
        except (ImageError, ValidationError, OSError, NotFound, AgentError, DatasetError) as e:
            if isinstance(e, ImageError):
                # Re-read the record next time: it may be fixed by re-importing.
                self.images.pop(instance.image, None)
            self._failed(slot, f"provisioning failed: {_reason(e)}", now, "provision-failed")
            return
        log.info("instance %s provisioned from image %s (%s@%s)", _name(slot), image.uuid,
                 image.name, image.version,
                 extra={"event": "instance-provisioned", "instance": instance.uuid})

    def _start(self, instance, now):
        slot = self.slots.get(instance.uuid)
        if slot is None or slot.payload is None:
            return  # provisioning failed this pass
        slot.instance = instance
        if slot.stale_pid is not None:
            log.info("stopping %s's process %d left by a previous agent run, to start it again "
                     "in this agent's process group", _name(slot), slot.stale_pid,
                     extra={"event": "stale-stop", "instance": instance.uuid})
            self._stop(slot)
        try:
            proc = self._spawn(slot, instance, now)
        except (ImageError, ValidationError, AgentError, OSError) as e:
            self._failed(slot, f"start failed: {_reason(e)}", now, "start-failed")
            return
        slot.proc, slot.state, slot.error = proc, "running", None
        if slot.restart_pending:
            slot.restarts += 1
            slot.restart_pending = False
            self.metrics.restarts.labels(alias=instance.alias).inc()
        log.info("instance %s started, pid %d, at %s", _name(slot), proc.pid, self._url(instance),
                 extra={"event": "instance-started", "instance": instance.uuid, "pid": proc.pid,
                        "restarts": slot.restarts})

    def _spawn(self, slot, instance, now):
        manifest = provision.read_manifest(self.layout, instance.uuid)
        env = process.instance_env({
            "ip": instance.admin_ip,
            "port": self._port(instance),
            "uuid": instance.uuid,
            "alias": instance.alias,
            "service": instance.service,
            "data": str(self.layout.data(instance.uuid)) if instance.delegate_dataset else "",
        }, extra=slot.payload.get("env"))
        argv = process.resolve_command(manifest["command"], env["PATH"])
        proc = process.spawn(argv, self.layout.zone_root(instance.uuid), env,
                             self.layout.stdout_log(instance.uuid), now)
        provision.write_pidfile(self.layout, instance.uuid, proc.pid)
        return proc

    def _stop_wanted(self, instance):
        slot = self.slots[instance.uuid]
        self._stop(slot)
        slot.instance = instance
        slot.state, slot.error, slot.restart_pending, slot.failures = "stopped", None, False, 0
        log.info("instance %s stopped: the store wants it stopped", _name(slot),
                 extra={"event": "instance-stopped-wanted", "instance": instance.uuid})

    def _record(self, instance):
        slot = self.slots[instance.uuid]
        slot.payload = provision.record(self.layout, instance, slot.payload["image"])
        slot.instance = instance
        log.info("instance %s is now at generation %d", _name(slot), instance.generation,
                 extra={"event": "instance-generation", "instance": instance.uuid,
                        "generation": instance.generation})

    def _set_state(self, action):
        d = action.instance
        try:
            owner = self.stores.get().set_instance_state(d.uuid, action.state, self.me, d.generation)
        except StoreError as e:
            log.debug("cannot write state of %s: %s", d.uuid, e)
            return
        if not owner:
            log.warning("state %s of instance %s not written: the store says this server no "
                        "longer owns it at generation %d", action.state, d.alias, d.generation,
                        extra={"event": "state-refused", "instance": d.uuid})

    # -- helpers -------------------------------------------------------------------------
    def _stop(self, slot):
        if slot.proc is not None:
            status = slot.proc.stop(self.stop_timeout)
            log.info("instance %s stopped (%s)", _name(slot), process.describe_exit(status),
                     extra={"event": "instance-stopped", "instance": slot.uuid})
            slot.proc = None
        if slot.stale_pid is not None:
            process.stop_pid(slot.stale_pid, slot.uuid, self.stop_timeout)
            slot.stale_pid = None
        provision.remove_pidfile(self.layout, slot.uuid)

    def _failed(self, slot, reason, now, event):
        slot.failures += 1
        delay = restart_delay(slot.failures)
        slot.state, slot.error, slot.not_before = "failed", reason, now + delay
        log.error("instance %s: %s (retrying in %.1f s)", _name(slot), reason, delay,
                  extra={"event": event, "instance": slot.uuid, "reason": reason, "retry_in": delay})

    def _port(self, instance):
        return instance.port or self.instance_port

    def _url(self, instance):
        return f"http://{instance.admin_ip}:{self._port(instance)}"

    # -- what the API shows -------------------------------------------------------------
    def _publish(self):
        rows, seen = [], set()
        for slot in self.slots.values():
            seen.add(slot.uuid)
            rows.append(self._row(slot.instance, slot.uuid, slot.state, slot.pid, slot.restarts,
                                  slot.error))
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

    def _row(self, instance, uuid, state, pid, restarts, error):
        return {
            "uuid": uuid,
            "alias": instance.alias if instance else None,
            "service": instance.service if instance else None,
            "state": state,
            "pid": pid,
            "restarts": restarts,
            "generation": instance.generation if instance else None,
            "url": self._url(instance) if instance else None,
            "error": error,
        }

    def instances(self):
        with self._lock:
            return [dict(r) for r in self._published]


def _name(slot):
    alias = slot.instance.alias if slot.instance else "?"
    return f"{alias} ({slot.uuid})"


def _reason(error):
    """One line for a log or the API: the message, its hint, and for schema
    problems every problem found."""
    return " ".join(str(error).split())

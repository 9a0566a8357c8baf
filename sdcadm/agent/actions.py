"""The side effects of the supervisor's plan: one handler per ``plan.py`` action.

``plan()`` decides, with plain data; this module does -- zones on disk
(``provision``), instance processes (``process``), delegate datasets,
seeding from restore data. The supervisor owns the slots and the image
records it read from the store and hands them in, so the handlers keep no
state of their own. A failed action is logged and recorded in its slot
(state ``failed``, with a backoff), never raised into the supervisor's loop:
the next pass plans again from what is then true.
"""

import logging
import os
import time

from sdcadm import instance_lease
from sdcadm.agent import process, provision
from sdcadm.agent.backoff import restart_delay
from sdcadm.agent.plan import Depose, Destroy, Provision, RecordGeneration, Start, Stop, StopAll
from sdcadm.agent.seed import seed_source
from sdcadm.agent.slot import Slot
from sdcadm.errors import (AgentError, DatasetError, ImageError, NotFound, RestoreDataBroken,
                           SdcadmError, ValidationError)

log = logging.getLogger(__name__)


class Actions:
    """Carries out plan() actions on this server's zones and processes."""

    def __init__(self, layout, image_source, datasets, metrics, *, seeder=None,
                 instance_port=8080, stop_timeout=process.STOP_TIMEOUT, max_image_bytes=None,
                 leases=None, singletons=frozenset(), clock=None, fetch_image=None):
        self.layout, self.image_source = layout, image_source
        self.fetch_image = fetch_image  # image_fetch.PeerImages.fetch (None: local only)
        self.leases = leases         # agent.leases.LeaseKeeper (None: no instance leases)
        self.singletons = frozenset(singletons)
        self.lease_clock = clock or (leases.clock if leases else time.monotonic)
        self.datasets = datasets     # delegate_datasets: dir or zfs
        self.seeder = seeder         # agent.seed.Seeder: restore/migrate seeding (headnodes)
        self.metrics = metrics
        self.instance_port, self.stop_timeout = instance_port, stop_timeout
        self.max_image_bytes = max_image_bytes   # None: images.MAX_UNPACKED

    def do(self, action, slots, images, now):
        """Carry out one action. ``slots`` ({uuid: Slot}) and ``images``
        ({uuid: Image}) are the supervisor's, changed in place."""
        try:
            if isinstance(action, Destroy):
                self.destroy(slots, action)
            elif isinstance(action, Depose):
                self.depose(slots, action)
            elif isinstance(action, Provision):
                self.provision(slots, images, action.instance, now)
            elif isinstance(action, Start):
                self.start(slots, action.instance, now)
            elif isinstance(action, RecordGeneration):
                self.record_generation(slots, action.instance)
            elif isinstance(action, Stop):
                self.stop_wanted(slots, action.instance)
            elif isinstance(action, StopAll):
                self.stop_all(slots, action)
        except (SdcadmError, OSError) as e:
            uuid = _uuid_of(action)
            log.error("%s of instance %s failed: %s", type(action).__name__.lower(), uuid, e,
                      extra={"event": "action-failed", "instance": uuid})
        except Exception:  # a bug in one action must not cost the others their pass
            uuid = _uuid_of(action)
            log.exception("%s of instance %s crashed", type(action).__name__.lower(), uuid,
                          extra={"event": "action-crashed", "instance": uuid})

    # -- one handler per action --------------------------------------------------
    def destroy(self, slots, action):
        slot = slots[action.uuid]
        self.stop(slot)
        self.datasets.destroy(self.layout, action.uuid)
        provision.destroy(self.layout, action.uuid)
        del slots[action.uuid]
        log.info("instance %s was removed from the store: stopped and destroyed", slot.name,
                 extra={"event": "instance-destroyed", "instance": action.uuid})

    def depose(self, slots, action):
        slot = slots[action.uuid]
        self.stop(slot)
        self.datasets.before_depose(self.layout, action.uuid)
        where = provision.depose(self.layout, action.uuid)
        self.datasets.after_depose(self.layout, action.uuid, where)
        del slots[action.uuid]
        kept = f"its zone is kept untouched in {where}" if where else "it had no zone on disk"
        log.warning("instance %s now belongs to server %s (generation %d): stopped; %s",
                    slot.name, action.owner, action.generation, kept,
                    extra={"event": "instance-deposed", "instance": action.uuid,
                           "owner": action.owner, "generation": action.generation})

    def provision(self, slots, images, instance, now):
        slot = slots.setdefault(instance.uuid, Slot(instance.uuid))
        slot.instance = instance
        image = images.get(instance.image)
        self.stop(slot)
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
            payload = provision.provision(self.layout, instance, image, self.image_source,
                                          max_bytes=self.max_image_bytes, fetch=self.fetch_image)
            if instance.delegate_dataset:
                # After the image checked out: a bad image leaves nothing under zones/.
                self.datasets.create(self.layout, instance.uuid)
            slot.payload = payload
        except (ImageError, ValidationError, OSError, NotFound, AgentError, DatasetError,
                RestoreDataBroken) as e:
            if isinstance(e, ImageError):
                # Re-read the record next time: it may be fixed by re-importing.
                images.pop(instance.image, None)
            # A refused copy is named apart: waiting will not fix it, so a
            # procedure waiting for the instance stops waiting (restore.py).
            event = ("restore-data-refused" if isinstance(e, RestoreDataBroken)
                     else "provision-failed")
            self.failed(slot, f"provisioning failed: {_reason(e)}", now, event)
            return
        except Exception as e:  # noqa: BLE001 - one instance fails, not the pass
            log.exception("provisioning of %s crashed", slot.name,
                          extra={"event": "provision-crashed", "instance": instance.uuid})
            self.failed(slot, f"provisioning failed: internal error ({type(e).__name__}: {e}); "
                              "see the agent log", now, "provision-failed")
            return
        log.info("instance %s provisioned from image %s (%s@%s)", slot.name, image.uuid,
                 image.name, image.version,
                 extra={"event": "instance-provisioned", "instance": instance.uuid})

    def start(self, slots, instance, now):
        slot = slots.get(instance.uuid)
        if slot is None or slot.payload is None:
            return  # provisioning failed this pass
        slot.instance = instance
        if slot.stale_pid is not None:
            log.info("stopping %s's process %d left by a previous agent run, to start it again "
                     "in this agent's process group", slot.name, slot.stale_pid,
                     extra={"event": "stale-stop", "instance": instance.uuid})
            self.stop(slot)
        try:
            proc = self._spawn(slot, instance, now)
        except (ImageError, ValidationError, AgentError, OSError) as e:
            self.failed(slot, f"start failed: {_reason(e)}", now, "start-failed")
            return
        slot.proc, slot.state, slot.error = proc, "running", None
        slot.spawned_at = time.time()
        slot.staged_until = None  # it ran here: from now on a move away deposes it, data kept
        if slot.restart_pending:
            slot.restarts += 1
            slot.restart_pending = False
            self.metrics.restarts.labels(alias=instance.alias).inc()
        log.info("instance %s started, pid %d, at %s", slot.name, proc.pid, self.url(instance),
                 extra={"event": "instance-started", "instance": instance.uuid, "pid": proc.pid,
                        "restarts": slot.restarts})

    def _spawn(self, slot, instance, now):
        manifest = provision.read_manifest(self.layout, instance.uuid)
        env = process.instance_env({
            "ip": instance.admin_ip,
            "port": self.port(instance),
            "uuid": instance.uuid,
            "alias": instance.alias,
            "service": instance.service,
            "data": str(self.layout.data(instance.uuid)) if instance.delegate_dataset else "",
        }, extra=slot.payload.get("env"))
        argv = process.resolve_command(manifest["command"], env["PATH"])
        leased = self.leases is not None and instance.service in self.singletons
        if leased:
            env[instance_lease.ENV] = str(self.leases.grant(instance.uuid))
        proc = process.spawn(argv, self.layout.zone_root(instance.uuid), env,
                             self.layout.stdout_log(instance.uuid), now)
        provision.write_pidfile(self.layout, instance.uuid, proc.pid)
        if leased:
            self.leases.attach(instance.uuid, slot.name, proc.pid)
        return proc

    def stop_wanted(self, slots, instance):
        slot = slots[instance.uuid]
        self.stop(slot)
        slot.instance = instance
        slot.state, slot.error, slot.restart_pending, slot.failures = "stopped", None, False, 0
        log.info("instance %s stopped: the store wants it stopped", slot.name,
                 extra={"event": "instance-stopped-wanted", "instance": instance.uuid})

    def stop_all(self, slots, action):
        """Stop the instances of ``action`` in parallel: their leases revoked,
        SIGTERM to every process, SIGKILL to each survivor after
        ``stop_timeout``, or at its lease's end if that comes first."""
        now = self.lease_clock()
        deadline = self.leases.deadline() if self.leases else None
        targets, stopping = {}, []
        for instance in action.instances:
            slot = slots.get(instance.uuid)
            if slot is None:
                continue
            slot.instance = instance
            stopping.append(slot)
            if self.leases is not None:
                self.leases.release(slot.uuid)
            pid = slot.proc.pid if slot.proc is not None and slot.proc.poll() is None \
                else slot.stale_pid
            fd = process.open_pidfd(pid, slot.uuid) if pid else None
            if fd is not None:
                kill_at = now + self.stop_timeout
                if deadline is not None and instance.service in self.singletons:
                    kill_at = min(kill_at, deadline)
                targets[fd] = kill_at
        try:
            if targets:
                process.stop_all(targets, self.lease_clock, self.stop_timeout)
        finally:
            for fd in targets:
                os.close(fd)
        for slot in stopping:
            self.stop(slot)  # reaps what died and forgets pids; at once for the dead
            slot.state, slot.error, slot.restart_pending = "stopped", None, False
        log.warning("%d instance(s) stopped at once (%s): %s", len(stopping), action.reason,
                    ", ".join(s.name for s in stopping),
                    extra={"event": "instances-stopped", "reason": action.reason,
                           "instances": [s.uuid for s in stopping]})

    def record_generation(self, slots, instance):
        slot = slots[instance.uuid]
        slot.payload = provision.record(self.layout, instance, slot.payload["image"])
        slot.instance = instance
        log.info("instance %s is now at generation %d", slot.name, instance.generation,
                 extra={"event": "instance-generation", "instance": instance.uuid,
                        "generation": instance.generation})

    # -- shared with the supervisor ----------------------------------------------
    def stop(self, slot):
        """Stop the slot's process, ours or a previous agent's; forget its pid.
        Its lease (if any) is revoked first: it stops acknowledging before it
        is asked to stop."""
        if self.leases is not None:
            self.leases.release(slot.uuid)
        if slot.proc is not None:
            status = slot.proc.stop(self.stop_timeout)
            log.info("instance %s stopped (%s)", slot.name, process.describe_exit(status),
                     extra={"event": "instance-stopped", "instance": slot.uuid})
            slot.proc = None
        if slot.stale_pid is not None:
            process.stop_pid(slot.stale_pid, slot.uuid, self.stop_timeout)
            slot.stale_pid = None
        provision.remove_pidfile(self.layout, slot.uuid)

    def failed(self, slot, reason, now, event):
        slot.failures += 1
        delay = restart_delay(slot.failures)
        slot.state, slot.error, slot.not_before = "failed", reason, now + delay
        slot.failure = event
        log.error("instance %s: %s (retrying in %.1f s)", slot.name, reason, delay,
                  extra={"event": event, "instance": slot.uuid, "reason": reason, "retry_in": delay})

    def port(self, instance):
        return instance.port or self.instance_port

    def url(self, instance):
        return f"http://{instance.admin_ip}:{self.port(instance)}"


def _uuid_of(action):
    if isinstance(action, StopAll):
        return ",".join(i.uuid for i in action.instances)
    return getattr(action, "uuid", None) or action.instance.uuid


def _reason(error):
    """One line for a log or the API: the message, its hint, and for schema
    problems every problem found."""
    return " ".join(str(error).split())

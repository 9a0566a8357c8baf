"""``sdcadm service migrate SRC DST``: controlled evacuation of a server.

As RFD 67 prescribes, a new instance is created on DST and the old one
destroyed (new UUID, next free alias, new admin address), one service at a
time in dependency order. How is the planner's decision
(``planning.migrate_method``):

* make before break (HA services, whose peers hold the data, and services
  that are neither singletons nor stateful): create the new instance on DST,
  wait until healthy, destroy the old one: no probe ever fails;
* stop first (singletons: two must never answer at once): the old instance is
  stopped (``params.desired_state``) and its process gone before the new one
  is created on DST; with a delegate dataset DST pulls a copy while the old
  instance still runs, and the final incremental copy once it is stopped, and
  the new instance is seeded from it (a zero-copy clone on DST). The service
  is down from the stop until the new instance answers.

Downtime is measured by probing the service from outside throughout (the
first failed probe of the old instance to the first good probe of the new)
and reported. HA services are not doubled on a DST that already has one;
``migrate: skip`` services (nat) are left alone. The new instance's UUID is
derived from the old one and DST, so a re-run after a crash finds what it
already made and finishes the job; no step ever leaves two instances of a
singleton running.
"""

import threading
import time

from sdcadm.availability import fold_outages
from sdcadm.errors import Conflict, NotFound, RestoreDataBroken, SdcadmError
from sdcadm.health import probe
from sdcadm.model import ADMIN_NETWORK
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning import (
    MigrateFacts,
    ip_owned_by,
    migrate_summary,
    migrated_instance,
    plan_migration,
)
from sdcadm.procedures.waits import POLL_CONNECT, wait_for, wait_healthy_unless

HEALTH_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class Outage:
    """Probe a service (up when any of its URLs answers) in a thread while a
    migration runs; ``measure()`` folds the samples into the downtime clients
    saw (``sdcadm.availability.fold_outages``)."""

    def __init__(self, urls, interval=0.05, probe=probe):
        self.urls, self.interval, self.probe = list(urls), interval, probe
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, url):
        self.urls.append(url)

    def saw_up(self):
        """The caller itself saw the service answer (closes an open outage then)."""
        self.samples.append((time.monotonic(), "svc", True))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            started = time.monotonic()  # stamped when sent: what the service was then
            ok = any(self.probe(u + "/ping", timeout=0.5, connect_timeout=POLL_CONNECT) is None
                     for u in list(self.urls))
            self.samples.append((started, "svc", ok))
            self._stop.wait(self.interval)

    def measure(self):
        """probes, failed_probes, downtime_s (the longest outage: from the first
        failed probe to the next good one) and resolution_s: the longest time
        between two probes, how far off the downtime may be either way."""
        stats = fold_outages(self.samples).get("svc")
        if stats is None:
            return {"probes": 0, "failed_probes": 0, "downtime_s": 0.0, "resolution_s": 0.0}
        times = sorted(t for t, _, _ in self.samples)
        spacing = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        return {"probes": stats.probes, "failed_probes": stats.failed,
                "downtime_s": round(stats.longest, 3), "resolution_s": round(spacing, 3)}


class MigrateServices(Procedure):
    name = "service-migrate"

    def __init__(self, src, dst, services=(), all_services=False, timeout=HEALTH_TIMEOUT):
        self.src_ref, self.dst_ref = src, dst
        self.services, self.all_services = list(services), all_services
        self.timeout = timeout
        self.plan = None

    def key(self):
        what = "--all" if self.all_services else " ".join(self.services)
        return f"{self.src_ref} {self.dst_ref} {what}"

    @property
    def src(self):
        return self.plan.src

    @property
    def dst(self):
        return self.plan.dst

    # -- prepare: gather the facts, let the planner decide ----------------------------------
    def prepare(self, ctx):
        store = ctx.store
        facts = MigrateFacts(store.find_server(self.src_ref), store.find_server(self.dst_ref),
                             store.list_instances(), ctx.now(),
                             ctx.config.agent.heartbeat_timeout)
        self.plan = plan_migration(ctx.catalog, self.services, self.all_services, facts)
        ctx.agents.check()
        if self.plan.nothing_to_do:
            return self.mark_nothing_to_do(self.plan.nothing_to_do)
        return True

    def summarize(self):
        return migrate_summary(self.plan)

    def steps(self):
        return [Step(f"migrate {m.old.alias}", self._step(m), self._done(m))
                for m in self.plan.moves]

    # -- one service -------------------------------------------------------------------------
    def _done(self, m):
        def done(ctx, previous):
            try:
                new = ctx.store.get_instance(m.new_uuid)
            except NotFound:
                return False
            try:
                ctx.store.get_instance(m.old.uuid)
                return False
            except NotFound:
                return ctx.prober.probe(new.url + "/ping", timeout=1.0) is None
        return done

    def _step(self, m):
        def migrate(ctx):
            store = ctx.store
            old = _get(store, m.old.uuid)
            new = _get(store, m.new_uuid)
            urls = [u for u in (old.url if old else None, new.url if new else None) if u]
            with Outage(urls, probe=ctx.prober.probe) as outage:
                if m.stop_first and new is None and old is not None:
                    old = self._stop_old(ctx, m, old)
                if new is None:
                    new = self._create(ctx, m, old)
                    outage.add(new.url)
                agent = ctx.agents.client(self.dst.agent_url, timeout=2.0)
                _, refused = wait_healthy_unless(
                    new.url + "/ping", self.timeout, f"{new.alias} on {self.dst.hostname}",
                    probe=ctx.prober.probe, refusal=lambda: agent.seed_refusal(new.uuid))
                if refused:
                    raise RestoreDataBroken(
                        f"{self.dst.hostname}'s agent refused to seed {new.alias} ({m.service}) "
                        f"from its restore data: {refused}",
                        hint=f"sync it again with `sdcadm service sync-restore-data {m.service}`"
                             " and re-run the same command")
                outage.saw_up()
                if old is not None:
                    self._destroy(ctx, old)
            measured = outage.measure()
            ctx.progress(f"{m.old.alias} -> {new.alias}: downtime {measured['downtime_s']:.2f}s "
                         f"({measured['failed_probes']} failed probe(s))")
            return {"service": m.service, "old": m.old.alias, "new": new.alias, "new_uuid": new.uuid,
                    "ip": new.admin_ip, "stateful": m.stateful, "stop_first": m.stop_first,
                    **measured}

        return migrate

    def _sync(self, ctx, m, what):
        from sdcadm.restore_data.client import sync_one

        started = time.monotonic()
        result = sync_one(self.dst, ctx.agents.token, services=[m.service])
        if not result.ok:
            raise SdcadmError(f"{what} sync of {m.service} to {self.dst.hostname} failed: "
                              + "; ".join(text for _, text in result.problems),
                              hint="see `sdcadm restore-data ls`; re-run migrate when fixed")
        done = result.services.get(m.service)
        if done is not None and done.warning:
            # A busy instance renamed files during the copy taken while it ran:
            # expected; the final sync, taken once it is stopped, is exact.
            ctx.progress(f"{m.old.alias}: {what} sync: warning: {done.warning}")
        return time.monotonic() - started

    def _stop_old(self, ctx, m, old):
        """Stop the old instance (its process gone) before the new one exists;
        a stateful one is synced while it runs and once more once stopped."""
        if old.params.get("desired_state") != "stopped":
            if m.stateful:
                ctx.progress(f"{m.old.alias}: syncing its dataset to {self.dst.hostname} "
                             "while it runs")
                self._sync(ctx, m, "first")
            params = dict(old.params, desired_state="stopped")
            old = ctx.store.move_instance(old.uuid, old.generation, params=params)
            ctx.agents.wake(self.src.agent_url, timeout=5.0)
        ctx.progress(f"{m.old.alias}: stopping it on {self.src.hostname}")
        old, _ = wait_for(lambda: _stopped(ctx.store, old.uuid), STOP_TIMEOUT,
                          f"{m.old.alias} to stop on {self.src.hostname}", interval=0.02)
        if m.stateful:
            ctx.progress(f"{m.old.alias}: final incremental sync")
            self._sync(ctx, m, "final")
        return old

    def _create(self, ctx, m, old):
        store = ctx.store
        ip = (ip_owned_by(store.get_network(ADMIN_NETWORK).allocations, m.new_uuid)
              or store.allocate_ip(ADMIN_NETWORK, m.new_uuid))
        new = migrated_instance(m, old, self.dst.uuid, ip)
        try:
            store.create_instance(new)
        except Conflict:
            new = store.get_instance(m.new_uuid)
        ctx.agents.wake(self.dst.agent_url, timeout=5.0)
        ctx.progress(f"{m.new_alias}: created on {self.dst.hostname} at {ip}")
        return new

    def _destroy(self, ctx, old):
        # Stopped first, and its address given back only once its process is
        # gone: the next instance created gets the lowest free address, and the
        # old process still answering there would pass for it (and make it fail
        # to bind). Stopping is "make it so", so a re-run after a kill redoes it.
        old = _get(ctx.store, old.uuid)
        if old is None:
            return
        if old.params.get("desired_state") != "stopped":
            old = ctx.store.move_instance(old.uuid, old.generation,
                                          params=dict(old.params, desired_state="stopped"))
            ctx.agents.wake(self.src.agent_url, timeout=5.0)
        wait_for(lambda: _stopped(ctx.store, old.uuid), STOP_TIMEOUT,
                 f"{old.alias} to stop on {self.src.hostname}", interval=0.02)
        try:
            ctx.store.delete_instance(old.uuid)
        except NotFound:
            return
        # Quarantined: a client still pointing at the old address must not
        # reach another service that takes it a second later.
        ctx.store.release_ip(ADMIN_NETWORK, old.admin_ip,
                             quarantine=ctx.config.admin_ip_quarantine)
        ctx.agents.wake(self.src.agent_url, timeout=5.0)
        ctx.progress(f"{old.alias}: destroyed on {self.src.hostname}")

    def report(self, results):
        lines = []
        for r in results.values():
            if r:
                lines.append(f"{r['old']} -> {r['new']} ({r['service']}, "
                             f"{'stateful' if r['stateful'] else 'stateless'}, "
                             f"{'stop first' if r.get('stop_first') else 'make before break'}"
                             "): downtime "
                             f"{r['downtime_s']:.2f}s, {r['failed_probes']} of {r['probes']} "
                             "probes failed")
        return lines + [f"skipped {s}" for s in self.plan.skipped]


def _get(store, uuid):
    try:
        return store.get_instance(uuid)
    except NotFound:
        return None


def _stopped(store, uuid):
    inst = store.get_instance(uuid)
    return inst if inst.state == "stopped" else None

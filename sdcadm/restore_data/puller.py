"""One restore-data sync cycle on a headnode (DESIGN section 4).

``Puller(config, store_getter, backend).sync(services=None, reseed=False,
observer=None)``:

1. read the DC model from the store (``sources.Facts``) and write ``dc.json``
   (when its revision changed); take a snapshot of the store itself into
   ``store/`` (etcd: ``store_snapshot``);
2. plan (``sources.plan_cycle``): the instances of non-HA services on other
   servers, grouped by service;
3. sync up to ``restore_data.concurrency`` services at once
   (``service_sync``): stage the metadata (``staging``), pull each delegate
   dataset (``datasync``), commit the metadata and the manifest at once;
4. prune copies of instances gone from the plan for ``prune_grace`` seconds
   (``prune``);
5. report per-instance status to the store and the agent's metrics
   (``reporting``).

A failure (source unreachable, diverged replica, refused copy, bad image)
keeps the last good copy and its manifest entry; the status says why.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from sdcadm.errors import StoreError
from sdcadm.fsutil import write_json_atomic
from sdcadm.progress import Progress, notify
from sdcadm.restore_data.datasync import DatasetSync
from sdcadm.restore_data.events import SyncSummary
from sdcadm.restore_data.files import read_json
from sdcadm.restore_data.instance_sync import InstanceSync
from sdcadm.restore_data.layout import restore_layout
from sdcadm.restore_data.prune import Pruner
from sdcadm.restore_data.reporting import StatusReporter
from sdcadm.restore_data.service_sync import ServiceSync
from sdcadm.restore_data.sources import Facts, plan_cycle
from sdcadm.restore_data.staging import InstanceStager
from sdcadm.restore_data.store_snapshot import StoreSnapshotter


class Puller:
    def __init__(self, config, store_getter, backend=None, *, catalog=None, metrics=None,
                 transport_factory=None, clock=time.time):
        self.config = config
        self.me = config.server_uuid
        self.hostname = config.hostname or self.me
        self.layout = restore_layout(config)
        self._store = store_getter
        self._backend = backend
        self._catalog = catalog
        self.transport_factory = transport_factory or self._ssh
        self.clock = clock
        reporter = StatusReporter(store_getter, self.me, metrics)
        datasets = DatasetSync(config, self.layout, self._get_backend, self.me, clock)
        # The factory is looked up on each call, so it can be replaced after start.
        instances = InstanceSync(InstanceStager(config, self.layout), datasets,
                                 lambda host: self.transport_factory(host), clock)
        self.service_sync = ServiceSync(self.layout, self.me, self.hostname, instances, datasets,
                                    reporter, clock)
        self.pruner = Pruner(config, self.layout, self._get_backend, reporter, clock)
        self.store_snapshots = StoreSnapshotter(config, self.layout, clock)

    # -- collaborators, made on first use (not every server pulls) -------------------
    def _get_backend(self):
        if self._backend is None:
            from sdcadm.datasets import get_backend

            self._backend = get_backend(self.config)
        return self._backend

    @property
    def catalog(self):
        if self._catalog is None:
            from sdcadm.catalog import load_catalog

            self._catalog = load_catalog(self.config.catalog)
        return self._catalog

    def _ssh(self, host):
        from sdcadm.transport.ssh import SSHTransport

        ssh = self.config.ssh
        return SSHTransport(host, port=ssh.port, user=ssh.user, identity=ssh.identity,
                            known_hosts=ssh.known_hosts, connect_timeout=ssh.connect_timeout)

    # -- one cycle -------------------------------------------------------------------
    def sync(self, services=None, reseed=False, observer=None, lock_timeout=0.0):
        """Run one cycle; return a SyncSummary (also sent to ``observer`` last).

        ``services``: only these (default: every service with something to
        pull). ``lock_timeout``: how long to wait for a sync of the same
        service already running elsewhere (0: report it ``busy``)."""
        started = self.clock()
        try:
            facts = Facts(self._store())
        except (StoreError, OSError) as e:
            summary = SyncSummary(self.me, self.hostname, False, started=started,
                                  finished=self.clock(), error=f"cannot read the DC store: {e}")
            notify(observer, summary)
            return summary
        hostname = facts.hostname(self.me, self.hostname)
        self._write_dc_json(facts)
        store = self.store_snapshots.take(facts.revision)
        if store.status != "skipped":
            notify(observer, Progress("restore-data", f"{hostname}: store snapshot {store.status}"
                                      + (f" at revision {store.revision}" if store.revision
                                         else f": {store.error}")))
        full, wanted = plan_cycle(self.me, facts, self.catalog, started,
                                  self.config.agent.heartbeat_timeout, services)
        notify(observer, Progress("restore-data", f"{hostname}: {len(wanted)} service(s) to sync",
                                  0, len(wanted)))
        results = {}
        workers = max(1, int(self.config.restore_data.concurrency))
        with ThreadPoolExecutor(workers, thread_name_prefix="restore-data") as pool:
            futures = {name: pool.submit(self.service_sync.sync, name, items, facts, reseed=reseed,
                                         observer=observer, lock_timeout=lock_timeout)
                       for name, items in sorted(wanted.items())}
            for name, future in futures.items():
                results[name] = future.result()
                notify(observer, results[name])
        pruned = self.pruner.prune(full, facts, observer)
        statuses = {name: r.status for name, r in results.items()}
        # A headnode that cannot keep the store is not ok: the store is what a
        # lone survivor needs first (`sdcadm store recover`).
        ok = all(s == "ok" for s in statuses.values()) and store.status != "failed"
        summary = SyncSummary(self.me, hostname, ok, statuses, tuple(pruned), started,
                              self.clock(), store=store.to_dict())
        notify(observer, summary)
        return summary

    def _write_dc_json(self, facts):
        path = self.layout.dc_json
        old = read_json(path)
        if isinstance(old, dict) and old.get("revision") == facts.revision:
            return
        from sdcadm.schemas import validate

        doc = {
            "version": 1, "revision": facts.revision, "time": self.clock(), "receiver": self.me,
            "servers": [s.to_dict() for s in facts.servers],
            "services": [s.to_dict() for s in facts.services.values()],
            "instances": [i.to_dict() for i in facts.instances],
            "images": [i.to_dict() for i in facts.images.values()],
            "networks": [n.to_dict() for n in facts.networks],
        }
        validate("restore_dc", doc, path)
        write_json_atomic(path, doc)

"""The agent's Prometheus metrics, in a registry of their own (so that several
agents, or tests, in one process never collide in the global registry)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sdcadm.model import INSTANCE_STATES


class AgentMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.heartbeats = Counter("sdcadm_agent_heartbeats", "Heartbeats written to the DC store",
                                  registry=r)
        self.heartbeat_failures = Counter("sdcadm_agent_heartbeat_failures",
                                          "Heartbeats that could not be written", registry=r)
        self.store_reachable = Gauge("sdcadm_agent_store_reachable",
                                     "1 if the last store access succeeded", registry=r)
        self.reconciles = Counter("sdcadm_agent_reconcile_passes", "Instance supervisor passes",
                                  registry=r)
        self.restarts = Counter("sdcadm_agent_instance_restarts",
                                "Instance processes restarted by the agent", ["alias"], registry=r)
        self.instances = Gauge("sdcadm_agent_instances", "Supervised instances by state", ["state"],
                               registry=r)
        for state in INSTANCE_STATES:
            self.instances.labels(state=state).set(0)
        self._restore_data_metrics(r)

    def _restore_data_metrics(self, r):
        labels = ["service", "source"]
        self.restore_last_success = Gauge(
            "sdcadm_restore_data_last_success_timestamp_seconds",
            "Unix time of the last good restore-data sync", labels, registry=r)
        self.restore_bytes = Gauge("sdcadm_restore_data_bytes",
                                   "Size of the current copy of the delegate dataset", labels,
                                   registry=r)
        self.restore_moved = Counter("sdcadm_restore_data_transferred_bytes",
                                     "Bytes pulled over the wire by restore-data syncs", labels,
                                     registry=r)
        self.restore_duration = Gauge("sdcadm_restore_data_sync_duration_seconds",
                                      "Seconds the last restore-data sync took", labels,
                                      registry=r)
        self.restore_failures = Counter("sdcadm_restore_data_failures",
                                        "Restore-data syncs that did not succeed",
                                        labels + ["status"], registry=r)

    def record_restore(self, service, source, status, size, duration, last_success, moved=0):
        """One instance's restore-data sync (per service and source server)."""
        labels = {"service": service, "source": source}
        self.restore_duration.labels(**labels).set(duration)
        if moved:
            self.restore_moved.labels(**labels).inc(moved)
        if status == "ok":
            self.restore_bytes.labels(**labels).set(size)
        else:
            self.restore_failures.labels(status=status, **labels).inc()
        if last_success:
            self.restore_last_success.labels(**labels).set(last_success)

    def set_instance_counts(self, counts):
        for state in INSTANCE_STATES:
            self.instances.labels(state=state).set(counts.get(state, 0))

    def render(self):
        return generate_latest(self.registry)

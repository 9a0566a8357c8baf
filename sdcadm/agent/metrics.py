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

    def set_instance_counts(self, counts):
        for state in INSTANCE_STATES:
            self.instances.labels(state=state).set(counts.get(state, 0))

    def render(self):
        return generate_latest(self.registry)

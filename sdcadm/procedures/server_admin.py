"""``sdcadm server delete`` and ``sdcadm server unfence``: heal the DC's list of servers.

``DeleteServer`` removes a server that is gone for good: its HA peer records
(fenced and ``--force`` only), its addresses, its restore-data statuses, then
the server record itself by compare-and-swap on its generation (so a server
that changed since the plan, e.g. was unfenced meanwhile, is not deleted).
``planning/server_plan.py`` decides what is allowed.

On the etcd store, the server's member (named after it, or with a peer URL
on its address) is removed from the cluster before the server record goes:
a lost headnode's member would otherwise count against the quorum for good,
and etcd refuses a new member (``headnode-setup``) while it does not answer.

Each step is idempotent: a re-run after a crash finds records already gone
and goes on.
"""

from sdcadm.errors import NotFound
from sdcadm.model import ADMIN_NETWORK
from sdcadm.procedures import store_member
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning.server_plan import check_unfence, delete_summary, \
    plan_server_delete


class DeleteServer(Procedure):
    name = "server-delete"

    def __init__(self, ref, force=False):
        self.ref, self.force = ref, force
        self.plan = self.member = None

    def key(self):
        return self.ref

    def prepare(self, ctx):
        store = ctx.store
        server = store.find_server(self.ref)
        specs = ctx.catalog.services
        ha_in_store = {s.name for s in store.list_services()
                       if isinstance(s.params, dict) and s.params.get("ha")}

        def is_ha(service):
            spec = specs.get(service)
            return bool(spec.ha) if spec else service in ha_in_store

        self.plan = plan_server_delete(
            server, store.list_servers(), store.list_instances(), _networks(store),
            store.list_restore_status(), is_ha, now=ctx.now(),
            heartbeat_timeout=ctx.config.agent.heartbeat_timeout, force=self.force)
        self.member = None
        if store_member.etcd_store(ctx.config):
            from sdcadm.procedures.planning.member_plan import member_of_server
            from sdcadm.store.etcd_maintenance import cluster_members

            self.member = member_of_server(cluster_members(ctx.config.store.etcd_endpoints),
                                           server.hostname, server.admin_ip)
        return True

    def summarize(self):
        lines = delete_summary(self.plan)
        if self.member is not None:
            lines.append(f"remove its etcd member {self.member['name'] or self.member['id']} "
                         f"({', '.join(self.member['peer_urls'])}) from the store's cluster")
        return lines

    def steps(self):
        plan = self.plan
        steps = [Step(f"delete {p.alias}", self._delete_peer(p)) for p in plan.peers]
        if plan.addresses:
            steps.append(Step("release addresses", self._release))
        if plan.statuses:
            steps.append(Step("drop restore-data statuses", self._drop_statuses))
        if self.member is not None:
            steps.append(Step("remove its etcd member", self._remove_member))
        steps.append(Step(f"delete {plan.server.hostname}", self._delete_server,
                          lambda ctx, previous: _gone(ctx.store, plan.server.uuid)))
        return steps

    def _delete_peer(self, inst):
        def delete(ctx):
            ctx.store.delete_instance(inst.uuid, expected_generation=inst.generation)
            ctx.progress(f"deleted {inst.alias}")

        return delete

    def _release(self, ctx):
        for network, ip in self.plan.addresses:
            ctx.store.release_ip(network, ip, quarantine=ctx.config.admin_ip_quarantine)
        return {"released": [ip for _, ip in self.plan.addresses]}

    def _drop_statuses(self, ctx):
        for receiver, instance in self.plan.statuses:
            ctx.store.delete_restore_status(receiver, instance)

    def _remove_member(self, ctx):
        server = self.plan.server
        return {"removed": store_member.remove(ctx.config, server.hostname, server.admin_ip,
                                               ctx.progress)}

    def _delete_server(self, ctx):
        server = self.plan.server
        if _gone(ctx.store, server.uuid):
            return None
        ctx.store.delete_server(server.uuid, server.generation)
        ctx.progress(f"deleted server {server.hostname}")
        return {"server": server.hostname}

    def report(self, results):
        return [f"server {self.plan.server.hostname} deleted"
                + (" (and its etcd member)" if self.member is not None else "")]


class UnfenceServer(Procedure):
    name = "server-unfence"

    def __init__(self, ref):
        self.ref = ref
        self.server = None

    def key(self):
        return self.ref

    def prepare(self, ctx):
        store = ctx.store
        self.server = store.find_server(self.ref)
        if not check_unfence(self.server, store.list_instances()):
            return self.mark_nothing_to_do(f"{self.server.hostname} is not fenced")
        return True

    def summarize(self):
        return [f"unfence {self.server.hostname}: its agent starts again what the DC store "
                "assigns to it"]

    def execute(self, ctx):
        # Compare-and-swap on the generation read in prepare: a server fenced
        # again (or changed) meanwhile is left as it is.
        server = ctx.store.get_server(self.server.uuid)
        if server.fenced:
            ctx.store.set_fenced(server.uuid, False, self.server.generation)
        return {"server": self.server.hostname}

    def report(self, results):
        return [f"{self.server.hostname} is no longer fenced"]


def _networks(store):
    try:
        return [store.get_network(ADMIN_NETWORK)]
    except NotFound:
        return []


def _gone(store, uuid):
    try:
        store.get_server(uuid)
    except NotFound:
        return True
    return False

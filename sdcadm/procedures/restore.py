"""``sdcadm service restore``: rebuild a dead server's services on this headnode.

Run on a surviving headnode. For every instance of a non-HA service that
lived on a dead server, in dependency order (services with no dependency
among those restored come up together):

1. fence the dead server when the operator named it with ``--dead`` (its
   agent, if it ever comes back, stops everything and starts nothing);
2. move the instance here with one compare-and-swap that bumps its
   generation: same UUID and alias, the old address when the old server is
   fenced (else a recovery address allocated on the admin network), and
   ``params.seed_from`` pointing at itself, so that this server's agent takes
   the image and a zero-copy clone of the last good dataset copy from its
   own restore data — no byte crosses the network at restore time;
3. wait until it answers its health check.

Each step is idempotent: a re-run after a crash finds instances already moved
here (``params.restored_from``) and only waits for them. It reports per
service the restore time (RTO) and the age of the data restored (RPO).
"""

import time
from dataclasses import dataclass, replace

from sdcadm.catalog import load_catalog
from sdcadm.errors import Conflict, NotFound, SdcadmError, Unreachable
from sdcadm.health import probe_many
from sdcadm.procedures.agent import AgentClient, read_token
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning import (
    NotViable,
    check_restorable_servers,
    plan_restore,
    restore_levels,
    select_services,
)
from sdcadm.procedures.waits import wait_for, wait_healthy

ADMIN_NETWORK = "admin"
HEALTH_TIMEOUT = 120.0
FENCE_STOP_TIMEOUT = 30.0


@dataclass
class Target:
    service: str
    instance: object          # the Instance as it is in the store now
    dead: object              # the Server it lived on
    copy: object | None       # InstanceCopy from this headnode's restore data (None: moved already)
    reuse_ip: bool
    moved: bool = False       # already moved here by an earlier run


class RestoreServices(Procedure):
    name = "service-restore"

    def __init__(self, services=(), all_services=False, dead=(), timeout=HEALTH_TIMEOUT):
        self.services, self.all_services = list(services), all_services
        self.dead_refs = list(dead)
        self.timeout = timeout
        self.targets, self.to_fence, self.levels = [], [], []
        self.started = None

    def key(self):
        what = "--all" if self.all_services else " ".join(self.services)
        dead = " ".join(f"--dead {d}" for d in self.dead_refs)
        return f"{what} {dead}".strip()

    # -- prepare ----------------------------------------------------------------------------
    def prepare(self, ctx):
        config, store = ctx.config, ctx.store
        self.me = _this_server(config, store)
        self.heartbeat_timeout = config.agent.heartbeat_timeout
        catalog = load_catalog(config.catalog)
        servers = store.list_servers()
        dead = check_restorable_servers(self.dead_refs, servers, ctx.now(),
                                        config.agent.heartbeat_timeout)
        if any(s.uuid == self.me.uuid for s in dead):
            raise NotViable(f"{self.me.hostname} is this server: restore runs on a surviving "
                            "headnode, not on the dead one")
        by_uuid = {s.uuid: s for s in dead}
        named = {s.uuid for s in dead} if self.dead_refs else set()
        # Fenced already (an earlier, interrupted run) still gets the step: it
        # waits until nothing runs there before any address is taken over.
        self.to_fence = [s for s in dead if s.uuid in named]
        instances = store.list_instances()
        resumed = [i for i in instances if i.server_uuid == self.me.uuid
                   and i.params.get("restored_from") in by_uuid]
        present = {i.service for i in instances if i.server_uuid in by_uuid} | \
                  {i.service for i in resumed}
        services = select_services(catalog, self.services, self.all_services, present)
        fenced_after = {s.uuid for s in dead if s.fenced or s.uuid in named}
        dead_now = [replace(s, fenced=s.uuid in fenced_after) for s in dead]
        items = plan_restore(catalog, dead_now, instances, set(services), self.me.uuid)

        from sdcadm.restore_data.access import RestoreData

        data = RestoreData(config)
        problems, self.targets = [], []
        for item in items:
            try:
                copy = data.instance_copy(item.instance.uuid, item.service)
            except (NotFound, SdcadmError) as e:
                problems.append(f"{item.instance.alias}: {e.message}")
                continue
            if copy.as_of is None:
                problems.append(f"{item.instance.alias}: this headnode never completed a sync of "
                                f"it ({copy.status}: {copy.error})")
                continue
            if item.instance.delegate_dataset and not copy.dataset:
                problems.append(f"{item.instance.alias}: no copy of its delegate dataset here")
                continue
            self.targets.append(Target(item.service, item.instance, by_uuid[item.instance.server_uuid],
                                       copy, item.reuse_ip))
        for inst in resumed:
            if inst.service in services and not any(t.instance.uuid == inst.uuid for t in self.targets):
                self.targets.append(Target(inst.service, inst, by_uuid[inst.params["restored_from"]],
                                           None, False, moved=True))
        if problems:
            raise NotViable("cannot restore from this headnode's restore data:\n"
                            + "\n".join(f"  - {p}" for p in problems),
                            hint="run `sdcadm restore-data ls` and `sdcadm restore-data verify` "
                                 "here, or run the restore on another headnode")
        if not self.targets and all(s.fenced for s in self.to_fence):
            names = ", ".join(s.hostname for s in dead)
            return self.mark_nothing_to_do(f"no instance of {', '.join(services) or 'any service'} "
                                           f"to restore from {names}")
        self.levels = restore_levels(catalog, [t.service for t in self.targets])
        self.token = read_token(config)
        return True

    def summarize(self):
        lines = [f"fence server {s.hostname} ({s.uuid}): it will run nothing until unfenced"
                 if not s.fenced else f"server {s.hostname} is fenced: check that it runs nothing"
                 for s in self.to_fence]
        for t in self._ordered():
            if t.moved:
                lines.append(f"finish restoring {t.instance.alias} ({t.service}) on "
                             f"{self.me.hostname}: wait until healthy")
                continue
            age = time.time() - t.copy.as_of
            data = (f"dataset copy {t.copy.snapshot} as of {age:.0f}s ago"
                    if t.copy.dataset else "no delegate dataset")
            ip = (f"keeping IP {t.instance.admin_ip} ({t.dead.hostname} is fenced)" if t.reuse_ip
                  else "with a new recovery IP on the admin network")
            lines.append(f"restore {t.instance.alias} ({t.service}) from {t.dead.hostname} onto "
                         f"{self.me.hostname}: {data}, {ip}")
        return lines

    def _ordered(self):
        order = {name: i for i, level in enumerate(self.levels) for name in level}
        return sorted(self.targets, key=lambda t: (order.get(t.service, 0), t.instance.alias))

    # -- steps -------------------------------------------------------------------------------
    def steps(self):
        steps = [Step(f"fence {s.hostname}", self._fence_step(s), self._fenced(s))
                 for s in self.to_fence]
        for n, level in enumerate(self.levels, 1):
            targets = [t for t in self._ordered() if t.service in level]
            steps.append(Step(f"restore level {n}: {', '.join(level)}", self._level_step(targets)))
        return steps

    def _fenced(self, server):
        return lambda ctx, previous: ctx.store.get_server(server.uuid).fenced

    def _fence_step(self, server):
        def fence(ctx):
            if self.started is None:
                self.started = time.monotonic()
            ctx.store.set_fenced(server.uuid, True, server.generation)  # CAS: as prepared
            ctx.progress(f"fenced {server.hostname}")
            # A fenced agent that is still alive stops what it runs: wait for it,
            # so that no singleton runs here and there at once.
            stopped, waited = wait_for(
                lambda: self._nothing_runs_on(ctx.store, server.uuid), FENCE_STOP_TIMEOUT,
                f"{server.hostname} to stop its instances (they still answer at the addresses "
                "being taken over: if its agent cannot stop them, power the server off)")
            return {"server": server.hostname, "waited_for_stop_s": round(waited, 3)}

        return fence

    def _nothing_runs_on(self, store, server_uuid):
        # Whatever its agent says (or does not say: hung, cut off), an address
        # still answered is not free to take over: the old process would pass
        # for the restored one, and the restored one could not bind.
        urls = [t.instance.url + "/ping" for t in self.targets
                if t.dead.uuid == server_uuid and t.reuse_ip and not t.moved]
        if any(error is None for error in probe_many(urls, timeout=0.5).values()):
            return False
        server = store.get_server(server_uuid)
        if time.time() - server.last_heartbeat > self.heartbeat_timeout:
            return True  # silent: it runs nothing, or stops everything on its first pass
        if server.agent_url:
            try:
                AgentClient(server.agent_url, self.token, timeout=1.0).ping()
            except Unreachable:
                return True  # its agent is gone (refused or silent): nothing supervises anything
            except SdcadmError:
                pass  # it answers but not to us: judge by what the store says
        return all(i.state != "running" or i.params.get("restored_from")
                   for i in store.list_instances(server_uuid=server_uuid))

    def _level_step(self, targets):
        def restore_level(ctx):
            if self.started is None:
                self.started = time.monotonic()
            level_start = time.monotonic()
            for t in targets:
                if not t.moved:
                    self._move(ctx, t)
            try:
                AgentClient(self.me.agent_url, self.token, timeout=2.0).reconcile()
            except SdcadmError:
                pass  # the agent's own schedule gets there too
            results = {}
            for t in targets:
                inst = ctx.store.get_instance(t.instance.uuid)
                ctx.progress(f"waiting for {inst.alias} at {inst.url}")
                wait_healthy(inst.url + "/ping", self.timeout, f"{inst.alias} to answer at {inst.url}")
                now = time.monotonic()
                results[inst.alias] = {
                    "service": t.service, "instance": inst.uuid, "ip": inst.admin_ip,
                    "from": t.dead.hostname, "level_s": round(now - level_start, 3),
                    "rto_s": round(now - self.started, 3),
                    "rpo_s": (round(ctx.now() - t.copy.as_of, 3) if t.copy else None),
                    "data_as_of": t.copy.as_of if t.copy else None,
                    "snapshot": t.copy.snapshot if t.copy else None,
                }
                ctx.progress(f"{inst.alias} restored ({results[inst.alias]['rto_s']:.2f}s)")
            return {"instances": results}

        return restore_level

    def _move(self, ctx, t):
        store = ctx.store
        inst = store.get_instance(t.instance.uuid)
        if inst.server_uuid == self.me.uuid:
            return inst  # moved by an earlier, interrupted run
        ip = inst.admin_ip if t.reuse_ip else _recovery_ip(store, inst)
        params = {k: v for k, v in inst.params.items() if k != "desired_state"}
        params.update(seed_from={"instance": inst.uuid, "service": inst.service},
                      restored_from=inst.server_uuid)
        try:
            moved = store.move_instance(inst.uuid, inst.generation, server_uuid=self.me.uuid,
                                        admin_ip=ip, state="provisioning", params=params)
        except Conflict:
            again = store.get_instance(inst.uuid)
            if again.server_uuid != self.me.uuid:
                raise
            moved = again
        ctx.log.info("moved", alias=moved.alias, generation=moved.generation, ip=ip)
        ctx.progress(f"{moved.alias} assigned to {self.me.hostname} (generation {moved.generation})")
        return moved

    def report(self, results):
        lines, rows = [], []
        for name, result in results.items():
            for alias, r in ((result or {}).get("instances") or {}).items():
                rows.append((alias, r))
        for alias, r in sorted(rows, key=lambda ar: ar[1]["rto_s"]):
            rpo = f", data {r['rpo_s']:.1f}s old" if r["rpo_s"] is not None else ""
            lines.append(f"{alias} ({r['service']}) restored from {r['from']} at {r['ip']}: "
                         f"RTO {r['rto_s']:.2f}s{rpo}")
        if rows:
            lines.append(f"restored {len(rows)} instance(s) in "
                         f"{max(r['rto_s'] for _, r in rows):.2f}s")
        return lines


def _this_server(config, store):
    if not config.server_uuid:
        raise NotViable("this server's UUID is not configured (server_uuid)",
                        hint="run on a headnode set up by sdcadm; in the lab: "
                             'eval "$(sdcadm lab env hn1)"')
    me = store.get_server(config.server_uuid)
    if not me.headnode:
        raise NotViable(f"{me.hostname} is not a headnode: restore runs on a headnode, which "
                        "holds restore data", hint="ssh to a surviving headnode and run it there")
    return me


def _recovery_ip(store, inst):
    """An address allocated to this instance other than its old one (idempotent:
    a re-run finds the one allocated before)."""
    network = store.get_network(ADMIN_NETWORK)
    for ip, owner in sorted(network.allocations.items()):
        if owner == inst.uuid and ip != inst.admin_ip:
            return ip
    return store.allocate_ip(ADMIN_NETWORK, inst.uuid)

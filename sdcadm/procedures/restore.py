"""``sdcadm service restore``: rebuild a dead server's services on this headnode.

Run on a surviving headnode. For every instance of a non-HA service that
lived on a dead server, in dependency order (services with no dependency
among those restored come up together):

1. fence the dead server when the operator named it with ``--dead``: run its
   fence agent (``fencing.command``, an IPMI power-off in production) and
   move nothing unless it exits 0 in time, or take the operator's word
   (``--confirm-powered-off``); then mark it fenced in the store (its agent,
   if it ever comes back, stops everything and starts nothing) and refuse if
   any address to take over still answers. A silent heartbeat or a probe
   that times out is never taken as proof that nothing runs there;
   without ``--dead`` a merely silent server is refused;
   an instance an interrupted ``service migrate`` had already replaced is
   not restored: the migrate is finished (the replacement kept, the old
   record deleted);
2. move the instance here with one compare-and-swap that bumps its
   generation: same UUID and alias, the old address when the old server is
   fenced (else a recovery address allocated on the admin network), and
   ``params.seed_from`` pointing at itself, so that this server's agent takes
   the image and a zero-copy clone of the last good dataset copy from its
   own restore data — no byte crosses the network at restore time;
3. wait until it answers its health check.

Nothing is restored from a copy that does not match its signed manifest:
``prepare`` checks every copy here (files and a scratch clone of each
dataset, read whole) and leaves a broken one out, so the operator is told
before anything moves; the others are restored and the procedure ends failed
naming the instance and the file. The receiving agent checks again when it
seeds (the copy may change in between) and refuses; the wait for that
instance then stops at once with the agent's reason.

Each step is idempotent: a re-run after a crash finds instances already moved
here (``params.restored_from``) and only waits for them. It reports per
service the restore time (RTO) and the age of the data restored (RPO).
"""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from sdcadm.errors import Conflict, FenceFailed, NotFound, RestoreDataBroken, SdcadmError
from sdcadm.model import ADMIN_NETWORK, Instance
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning import (
    REFUSED_HINT,
    CopyFacts,
    RefusedCopy,
    NotViable,
    RestoreFacts,
    RestoreRequest,
    addresses_to_take_over,
    check_data_age,
    check_restore_host,
    fence_failure,
    fence_methods,
    fence_summary,
    choose_copy,
    copy_problem,
    freshest_summary,
    ip_owned_by,
    level_parts,
    level_targets,
    plan_restore_run,
    read_holdings,
    refused_error,
    restore_scope,
    restore_summary,
    restored_params,
    restored_result,
    unreachable,
)
from sdcadm.procedures.waits import wait_healthy_unless

HEALTH_TIMEOUT = 120.0
FENCE_PROBE_TIMEOUT = 0.5
FENCE_PROBE_CONNECT = 0.2   # a live server on the admin network answers a SYN well within it
HOLDINGS_TIMEOUT = 3.0   # a headnode whose agent does not answer this fast is listed unreachable


class RestoreServices(Procedure):
    name = "service-restore"

    def __init__(self, services=(), all_services=False, dead=(), timeout=HEALTH_TIMEOUT,
                 confirmed_off=(), accept_data_age=False):
        self.request = RestoreRequest(tuple(services), all_services, tuple(dead),
                                      tuple(confirmed_off))
        self.timeout = timeout
        self.accept_data_age = accept_data_age
        self.plan = None
        self.fence = []
        self.started = None
        self.choices, self.peers, self.max_data_age = [], [], None
        self.seeded_as_of = {}   # instance uuid -> as_of of the copy a pull step brought here
        self.dropped = {}        # instance uuid -> RefusedCopy: no copy anywhere passed its checks

    def key(self):
        what = "--all" if self.request.all_services else " ".join(self.request.services)
        dead = " ".join(f"--dead {d}" for d in self.request.dead)
        off = " ".join(f"--confirm-powered-off {d}" for d in self.request.confirmed_off)
        return " ".join(p for p in (what, dead, off) if p)

    # -- prepare: gather the facts, let the planner decide ----------------------------------
    def prepare(self, ctx):
        store = ctx.store
        me = _this_server(ctx.config, store)
        check_restore_host(me)
        self.heartbeat_timeout = ctx.config.agent.heartbeat_timeout
        now = ctx.now()
        facts = RestoreFacts(me, store.list_servers(), store.list_instances(), now,
                             self.heartbeat_timeout)
        scope = restore_scope(ctx.catalog, self.request, facts)
        data = ctx.restore_data() if scope.items else None
        copies = {item.instance.uuid: _copy_facts(data, item) for item in scope.items}
        # Before anything else can refuse for want of a fence agent: a server
        # named with --dead and no way to prove it off is refused here, at once.
        self.fence = fence_methods(scope.to_fence, self.request.confirmed_off,
                                   ctx.config.get("fencing") or {}, facts.servers)
        copies = self._freshest(ctx, scope, copies, me, now)
        self.plan = plan_restore_run(ctx.catalog, scope, copies, me, now)
        if self.plan.nothing_to_do:
            return self.mark_nothing_to_do(self.plan.nothing_to_do)
        ctx.agents.check()
        return True

    def _freshest(self, ctx, scope, copies, me, now):
        """Ask every other reachable headnode for its copies, choose the newest
        per instance, refuse data older than restore.max_data_age; return the
        copy facts the plan is made from (a copy to pull: as the peer described
        it, checked when it arrives)."""
        if not scope.items:
            return copies
        self.max_data_age = float(ctx.config.restore.max_data_age)
        dead = {s.uuid for s in scope.dead}
        self.peers = _ask_headnodes(ctx, [s for s in ctx.store.list_servers()
                                          if s.headnode and s.uuid != me.uuid
                                          and s.uuid not in dead])
        can_pull = ctx.config.datasets.backend == "dir"
        self.choices = []
        for item in scope.items:
            local = copies[item.instance.uuid]
            usable = copy_problem(item.instance, local) is None and not local.broken
            self.choices.append(choose_copy(item.instance.alias, item.service, item.instance.uuid,
                                            now - local.as_of if usable else None, self.peers,
                                            can_pull))
        check_data_age(self.choices, self.max_data_age, self.accept_data_age, me.hostname)
        out = dict(copies)
        for c in self.choices:
            if c.pull:
                best = c.pull[0]
                out[c.instance] = CopyFacts(as_of=now - best.age, snapshot=best.snapshot,
                                            has_dataset=best.snapshot is not None)
        return out

    def summarize(self):
        lines = restore_summary(self.plan)
        at = len(lines) - len(self.plan.refused)    # before the lines of refused copies, last
        return (fence_summary(self.fence) + lines[:at]
                + freshest_summary(self.choices, self.peers, self.max_data_age or 0.0,
                                   self.plan.me.hostname) + lines[at:])

    # -- steps -------------------------------------------------------------------------------
    def steps(self):
        # Pulls first: a copy that fails its checks stops the restore before
        # anything is fenced or moved.
        targets = {t.instance.uuid for t in self.plan.targets if not t.moved}
        steps = [Step(f"pull {c.alias}'s copy from {c.source}", self._pull_step(c))
                 for c in self.choices if c.pull and c.instance in targets]
        steps += [Step(f"fence {m.server.hostname}", self._fence_step(m), self._fenced(m.server))
                  for m in self.fence]
        steps += [Step(f"finish migrate of {f.old.alias} (keep {f.replacement.alias})",
                       self._finish_step(f)) for f in self.plan.finish]
        for n, level in enumerate(self.plan.levels, 1):
            steps.append(Step(f"restore level {n}: {', '.join(level)}",
                              self._level_step(n - 1, level_targets(self.plan, level))))
        if self.plan.refused:
            names = ", ".join(r.alias for r in self.plan.refused)
            steps.append(Step(f"refuse {names}: restore data does not match its manifest",
                              self._refused_step()))
        elif any(c.pull and c.local_age is None for c in self.choices):
            steps.append(Step("refuse what no copy could restore", self._refused_step()))
        return steps

    def _pull_step(self, choice):
        def pull(ctx):
            from sdcadm.restore_data.peer_copy import PeerPull

            if self.started is None:
                self.started = time.monotonic()
            servers = {s.hostname: s for s in ctx.store.list_servers()}
            puller, refused = PeerPull(ctx.restore_data()), []
            ours = (f"ours is {choice.local_age:.0f} s old" if choice.local_age is not None
                    else "we have no usable copy")
            for offer in choice.pull:
                ctx.check_lock()
                ctx.progress(f"pulling {choice.alias}'s copy from {offer.hostname} "
                             f"({offer.age:.0f} s old; {ours})")
                try:
                    got = puller.pull(servers[offer.hostname], choice.service, choice.instance,
                                      offer.last_success)
                except (SdcadmError, OSError, KeyError) as e:
                    refused.append(f"{offer.hostname}: {getattr(e, 'message', None) or e!r}")
                    ctx.progress(f"{offer.hostname}'s copy of {choice.alias} not used: "
                                 f"{refused[-1]}")
                    continue
                self.seeded_as_of[choice.instance] = self.plan.now - offer.age
                return {"instance": choice.alias, "from": offer.hostname,
                        "age_s": round(offer.age, 3), "our_age_s": choice.local_age,
                        "snapshot": got["snapshot"], "bytes_moved": got["bytes_moved"],
                        "timings": got["timings"], "refused": refused}
            return self._keep_ours(ctx, choice, refused)

        return pull

    def _keep_ours(self, ctx, choice, refused):
        """Every newer copy failed its checks: ours, when it is usable and young
        enough (or accepted); else stop here, before anything moved."""
        if choice.local_age is None:
            # No copy anywhere passed its checks: this instance is not restored
            # (the others are), and the restore ends failed naming it.
            self.dropped[choice.instance] = RefusedCopy(choice.service, choice.alias,
                                                        tuple(refused))
            ctx.progress(f"{choice.alias} will not be restored: no copy passed its checks")
            return {"instance": choice.alias, "from": None, "refused": refused}
        if choice.local_age > self.max_data_age and not self.accept_data_age:
            raise NotViable(
                f"no copy of {choice.alias} ({choice.service}) can be used: the newer ones "
                "failed their checks:\n" + "\n".join(f"  - {r}" for r in refused)
                + f"\n  and ours is {choice.local_age:.0f}s old, over restore.max_data_age "
                f"({self.max_data_age:.0f}s)\nnothing was fenced or moved",
                hint="fix or re-sync those copies and run this again, or accept our older "
                     "copy with --accept-data-age")
        ctx.progress(f"keeping this headnode's copy of {choice.alias} "
                     f"({choice.local_age:.0f} s old): the newer ones failed their checks")
        self.seeded_as_of[choice.instance] = self.plan.now - choice.local_age
        return {"instance": choice.alias, "from": self.plan.me.hostname,
                "age_s": choice.local_age, "our_age_s": choice.local_age, "refused": refused}

    def _as_seeded(self, target):
        """``target`` with the age of the copy its pull step actually brought."""
        as_of = self.seeded_as_of.get(target.instance.uuid)
        if as_of is None or target.copy is None:
            return target
        return replace(target, copy=replace(target.copy, as_of=as_of))

    def _refused_step(self):
        def refuse(ctx):
            refused = list(self.plan.refused) + list(self.dropped.values())
            if refused:
                raise refused_error(refused)

        return refuse

    def _fenced(self, server):
        return lambda ctx, previous: ctx.store.get_server(server.uuid).fenced

    def _fence_step(self, method):
        server = method.server

        def fence(ctx):
            if self.started is None:
                self.started = time.monotonic()
            # While the fence agent runs, this server's agent provisions the
            # first level (started only once moved here, after the fence).
            self._stage(ctx, 0)
            if method.confirmed:
                how = "confirmed powered off by the operator"
            else:
                ctx.progress(f"fencing {server.hostname}: running its fence command "
                             f"(at most {method.timeout:g}s)")
                outcome = ctx.fencer.run(method.argv, method.timeout)
                if not outcome.ok:
                    raise fence_failure(method, outcome)  # before the store changes
                how = f"fence command succeeded in {outcome.elapsed_s:.2f}s"
            ctx.store.set_fenced(server.uuid, True, server.generation)  # CAS: as prepared
            ctx.progress(f"fenced {server.hostname} ({how})")
            # Proof it is off: the fence agent's exit status. A powered-off
            # server's addresses time out, so that is not waited for; but an
            # address that still *answers* means the fence did not take.
            urls = addresses_to_take_over(self.plan, server.uuid)
            answers = ctx.prober.probe_many(urls, timeout=FENCE_PROBE_TIMEOUT,
                                            connect_timeout=FENCE_PROBE_CONNECT)
            alive = sorted(u.rsplit("/", 1)[0] for u, error in answers.items() if error is None)
            if alive:
                raise FenceFailed(
                    f"{server.hostname} was fenced ({how}) but still answers at "
                    f"{', '.join(alive)}: nothing was moved off it",
                    hint="the fence agent did not power it off (wrong server or address in "
                         "fencing.command?): power it off by other means, check, and run the "
                         f"same command again with --confirm-powered-off {server.hostname}")
            return {"server": server.hostname, "how": how,
                    "fence_s": round(time.monotonic() - self.started, 3)}

        return fence

    def _finish_step(self, finish):
        def finish_migrate(ctx):
            old, new = finish.old, finish.replacement
            # Its server is fenced (powered off): the old record and its address
            # go, as the migrate's last step would have done.
            try:
                ctx.store.delete_instance(old.uuid)
            except NotFound:
                pass  # an earlier, interrupted run did it
            if ctx.store.get_network(ADMIN_NETWORK).allocations.get(old.admin_ip) == old.uuid:
                ctx.store.release_ip(ADMIN_NETWORK, old.admin_ip,
                                     quarantine=ctx.config.admin_ip_quarantine)
            ctx.progress(f"{old.alias}: deleted; waiting for its replacement {new.alias}")
            now = ctx.store.get_instance(new.uuid)
            if now.params.get("desired_state") != "stopped":
                wait_healthy_unless(now.url + "/ping", self.timeout,
                                    f"{now.alias} (the replacement of {old.alias}) to answer",
                                    probe=ctx.prober.probe)
            return {"old": old.alias, "kept": now.alias, "service": finish.service}

        return finish_migrate

    def _stage(self, ctx, n):
        """Ask this server's agent to provision dependency level ``n`` (from 0)
        ahead of its move: each level's move then only starts what is ready,
        and the next level is provisioned while this one comes up. Only those
        keeping their address (a recovery address is allocated at the move);
        best effort: what is not staged is provisioned by the move."""
        if n >= len(self.plan.levels):
            return
        me = self.plan.me
        ahead = [Instance.from_dict({**t.instance.to_dict(), **self._changes(ctx.store, t)})
                 for t in level_targets(self.plan, self.plan.levels[n])
                 if t.reuse_ip and not t.moved and t.instance.uuid not in self.dropped
                 and t.instance.server_uuid != me.uuid]
        ctx.agents.stage(me.agent_url, ahead)

    def _level_step(self, n, level):
        """Level ``n`` (from 0) of the plan, its ``level`` targets."""

        def restore_level(ctx):
            if self.started is None:
                self.started = time.monotonic()
            level_start, wall_start = time.monotonic(), time.time()
            targets = [t for t in level if t.instance.uuid not in self.dropped]
            moved = self._move_level(ctx, [t for t in targets if not t.moved])
            moved_at = time.time()
            ctx.agents.wake(self.plan.me.agent_url)
            self._stage(ctx, n + 1)
            results, refused, services = {}, [], set()
            for t in targets:
                inst = moved.get(t.instance.uuid) or ctx.store.get_instance(t.instance.uuid)
                ctx.progress(f"waiting for {inst.alias} at {inst.url}")
                reason = self._wait_restored(ctx, inst)
                if reason:
                    refused.append(f"  - {inst.alias} ({inst.service}): {reason}")
                    services.add(inst.service)
                    ctx.progress(f"{inst.alias} NOT restored: its agent refused the copy")
                    continue
                done = time.monotonic()
                results[inst.alias] = restored_result(self._as_seeded(t), inst,
                                                      done - level_start, done - self.started,
                                                      ctx.now())
                ctx.progress(f"{inst.alias} restored ({results[inst.alias]['rto_s']:.2f}s)")
            if refused:
                raise RestoreDataBroken(
                    f"{self.plan.me.hostname}'s agent refused to seed from its restore data "
                    "(it no longer matches its manifest):\n" + "\n".join(refused),
                    hint=REFUSED_HINT.replace("SERVICE", " ".join(sorted(services))))
            healthy_at = time.time()
            return {"instances": results,
                    "parts": level_parts(wall_start, moved_at, self._spawned(ctx, moved),
                                         healthy_at) if moved else None}

        return restore_level

    def _spawned(self, ctx, moved):
        """When this server's agent started each of ``moved`` (None when it
        does not say): for the report only, so no answer is no error."""
        try:
            rows = ctx.agents.client(self.plan.me.agent_url, timeout=2.0).instances()
        except SdcadmError:
            return []
        at = {r.get("uuid"): r.get("spawned_at") for r in rows if isinstance(r, dict)}
        return [at.get(uuid) if isinstance(at.get(uuid), (int, float)) else None
                for uuid in moved]

    def _wait_restored(self, ctx, inst):
        """Wait until ``inst`` answers its health check; None then. The reason
        when this server's agent refused its copy instead (no wait fixes that)."""
        agent = ctx.agents.client(self.plan.me.agent_url, timeout=2.0)
        # Polled every 20 ms (a level ends when its last instance answers, and
        # the next waits for that); the agent asked about a refusal every 0.5 s.
        return wait_healthy_unless(inst.url + "/ping", self.timeout,
                                   f"{inst.alias} to answer at {inst.url}",
                                   interval=RESTORE_POLL, probe=ctx.prober.probe,
                                   refusal=lambda: agent.seed_refusal(inst.uuid),
                                   every=round(0.5 / RESTORE_POLL))[1]

    def _move_level(self, ctx, targets):
        """Move a dependency level here in one commit (its agent then starts
        them in one pass); {uuid: the moved Instance}. If a compare fails (an
        earlier, interrupted run moved some; another writer), one by one."""
        me = self.plan.me
        pending = [t for t in targets if t.instance.server_uuid != me.uuid]
        if len(pending) > 1:
            try:
                moved = ctx.store.move_instances(
                    [(t.instance.uuid, t.instance.generation, self._changes(ctx.store, t))
                     for t in pending])
            except Conflict:
                pass
            else:
                for inst in moved:
                    self._moved(ctx, inst)
                return {inst.uuid: inst for inst in moved}
        return {t.instance.uuid: self._move(ctx, t) for t in targets}

    def _move(self, ctx, t):
        """Move ``t`` here by compare-and-swap on the generation it had when
        planned (no read first: on etcd each read is a round trip); on a lost
        compare, read it again: moved here already, or once more from there."""
        store, me = ctx.store, self.plan.me
        inst = t.instance
        for attempt in (1, 2):
            if inst.server_uuid == me.uuid:
                return inst  # moved by an earlier, interrupted run
            try:
                moved = store.move_instance(inst.uuid, inst.generation,
                                            **self._changes(store, replace(t, instance=inst)))
                break
            except Conflict:
                inst = store.get_instance(inst.uuid)
                if inst.server_uuid == me.uuid:
                    moved = inst
                    break
                if attempt == 2:
                    raise
        self._moved(ctx, moved)
        return moved

    def _changes(self, store, t):
        inst = t.instance
        return {"server_uuid": self.plan.me.uuid,
                "admin_ip": inst.admin_ip if t.reuse_ip else _recovery_ip(store, inst),
                "state": "provisioning", "params": restored_params(inst)}

    def _moved(self, ctx, inst):
        ctx.log.info("moved", alias=inst.alias, generation=inst.generation, ip=inst.admin_ip)
        ctx.progress(f"{inst.alias} assigned to {self.plan.me.hostname} "
                     f"(generation {inst.generation})")

    def report(self, results):
        lines, rows = [], []
        for name, result in results.items():
            if name.startswith("pull ") and result and result.get("from"):
                was = (f"; ours was {result['our_age_s']:.0f}s old"
                       if result.get("our_age_s") is not None else "")
                lines.append(f"{result['instance']}: seeded from {result['from']}'s copy "
                             f"({result['age_s']:.0f}s old{was})")
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


RESTORE_POLL = 0.02


def _this_server(config, store):
    if not config.server_uuid:
        raise NotViable("this server's UUID is not configured (server_uuid)",
                        hint="run on a headnode set up by sdcadm; in the lab: "
                             'eval "$(sdcadm lab env hn1)"')
    return store.get_server(config.server_uuid)


def _copy_facts(data, item):
    """What ``data`` (this headnode's RestoreData) holds of ``item``'s instance,
    checked against its manifest (every file of its dataset is read: about the
    time `restore-data verify` takes for it)."""
    try:
        copy = data.instance_copy(item.instance.uuid, item.service)
        broken = data.verify_copy(copy)
    except (NotFound, SdcadmError) as e:
        return CopyFacts(problem=e.message)
    return CopyFacts(as_of=copy.as_of, status=copy.status, error=copy.error,
                     snapshot=copy.snapshot, has_dataset=bool(copy.dataset),
                     broken=tuple(broken))


def _ask_headnodes(ctx, servers):
    """PeerHoldings of each of ``servers`` (in parallel; an agent that does not
    answer, or answers nonsense, is listed as such, never an error)."""
    def ask(server):
        if not server.agent_url:
            return unreachable(server.hostname, server.uuid, "no agent address in the DC store")
        try:
            answer = ctx.agents.client(server.agent_url, timeout=HOLDINGS_TIMEOUT).restore_data()
        except SdcadmError as e:
            return unreachable(server.hostname, server.uuid, e.message)
        return read_holdings(server.hostname, server.uuid, answer)

    if not servers:
        return []
    with ThreadPoolExecutor(min(len(servers), 16), thread_name_prefix="holdings") as pool:
        return list(pool.map(ask, sorted(servers, key=lambda s: s.hostname)))


def _recovery_ip(store, inst):
    """An address allocated to this instance other than its old one (idempotent:
    a re-run finds the one allocated before)."""
    held = ip_owned_by(store.get_network(ADMIN_NETWORK).allocations, inst.uuid,
                       besides=inst.admin_ip)
    return held or store.allocate_ip(ADMIN_NETWORK, inst.uuid)

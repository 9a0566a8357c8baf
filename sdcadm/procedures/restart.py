"""``sdcadm instance restart ALIAS...``: restart instances through their agents.

One step per instance, one instance at a time (a rolling restart): ask the
instance's agent (``POST /v1/instances/<uuid>/restart``), then probe the
instance's ``/ping`` every ``probe_interval`` seconds until a *new* process
answers (its pid differs), measuring the downtime seen by the probes.

Re-running after a failure (same aliases, same order) resumes the Task: an
instance whose restart succeeded is verified (a process other than the one it
replaced answers /ping) instead of being restarted twice.
"""

import time
from dataclasses import dataclass

from sdcadm.errors import AgentError, NotFound, SdcadmError, Unreachable
from sdcadm.health import ping_pid
from sdcadm.model import SERVER_RUNNING, heartbeat_seen, status_of
from sdcadm.procedures.base import Procedure, Step

PING_PATH = "/ping"
DEFAULT_TIMEOUT = 60.0
DEFAULT_PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0


# -- pure decisions -------------------------------------------------------------------------

def resolve(refs, instances):
    """Instances named by alias or UUID, in the order given (duplicates dropped);
    NotFound naming the unknown ones and listing the known aliases."""
    by_ref = {i.alias: i for i in instances}
    by_ref.update({i.uuid: i for i in instances})
    refs = list(dict.fromkeys(refs))
    unknown = [r for r in refs if r not in by_ref]
    if unknown:
        known = ", ".join(sorted(i.alias for i in instances)) or "(none)"
        raise NotFound(f"unknown instance {', '.join(repr(r) for r in unknown)}",
                       hint=f"known instances: {known}")
    return [by_ref[r] for r in refs]


def why_not_restartable(inst, server, now, heartbeat_timeout):
    """Why ``inst`` cannot be restarted through its agent now, or None."""
    if server is None:
        return f"its server {inst.server_uuid} is not in the DC store"
    if server.fenced:
        return f"its server {server.hostname} is fenced (declared dead)"
    if not server.agent_url:
        return f"its server {server.hostname} has no agent port in the DC store"
    if status_of(server, now, heartbeat_timeout) != SERVER_RUNNING:
        return f"its server {server.hostname} is unreachable ({heartbeat_seen(server, now)})"
    return None


def wait_restarted(probe, old_pid, timeout, interval, clock=time.monotonic, sleep=time.sleep):
    """Probe until a process other than ``old_pid`` answers; return measurements.

    ``probe() -> (ok, pid)``. Downtime is the gap between the last answer of
    the old process (or the start, if it was not answering) and the first
    answer of the new one, when at least one probe failed in between; 0.0
    when every probe was answered (the gap is below the probe interval).
    """
    start = clock()
    last_ok = start if old_pid is not None else None
    failed = probes = 0
    while True:
        ok, pid = probe()
        now = clock()
        probes += 1
        if ok and (old_pid is None or pid != old_pid):
            gap = now - (last_ok if last_ok is not None else start)
            return {"new_pid": pid, "downtime_s": round(gap, 3) if failed or old_pid is None
                    else 0.0, "failed_probes": failed, "probes": probes,
                    "waited_s": round(now - start, 3)}
        if ok:
            last_ok = now
        else:
            failed += 1
        if now - start > timeout:
            state = "still the old process" if ok else "no answer"
            raise SdcadmError(f"no new process answered within {timeout:g}s ({state})")
        sleep(interval)


def agent_pid(client, uuid):
    """The pid the agent reports for instance ``uuid``, or None."""
    try:
        rows = client.instances()
    except (Unreachable, AgentError):
        return None
    return next((r.get("pid") for r in rows or [] if r.get("uuid") == uuid), None)


# -- the procedure ------------------------------------------------------------------------

@dataclass
class InstanceToRestart:
    instance: object
    server: object
    pid: int | None = None   # the pid answering /ping when prepared


class RestartInstances(Procedure):
    name = "instance-restart"
    # A restart asked for again later is a new restart, not the end of an old one.
    resume_within = 600.0

    def __init__(self, refs, timeout=DEFAULT_TIMEOUT, probe_interval=DEFAULT_PROBE_INTERVAL):
        self.refs = list(dict.fromkeys(refs))
        self.timeout, self.probe_interval = timeout, probe_interval
        self.targets = []

    def key(self):
        return " ".join(self.refs)

    def prepare(self, ctx):
        store = ctx.store
        chosen = resolve(self.refs, store.list_instances())
        servers = {s.uuid: s for s in store.list_servers()}
        agents = ctx.agents
        agents.check()
        now, problems = ctx.now(), []
        self.targets = []
        for inst in chosen:
            server = servers.get(inst.server_uuid)
            reason = why_not_restartable(inst, server, now, ctx.config.agent.heartbeat_timeout)
            if reason is None:
                try:
                    agents.client(server.agent_url, timeout=PROBE_TIMEOUT * 2).ping()
                except (Unreachable, AgentError) as e:
                    reason = f"its server {server.hostname}'s agent does not answer: {e}"
            if reason:
                problems.append(f"{inst.alias}: {reason}")
                continue
            _, pid = ping_pid(inst.url + PING_PATH, PROBE_TIMEOUT)
            self.targets.append(InstanceToRestart(inst, server, pid))
            ctx.log.info("target", alias=inst.alias, server=server.hostname, pid=pid)
        if problems:
            raise Unreachable("cannot restart:\n" + "\n".join(f"  - {p}" for p in problems),
                              hint="bring the server back (or restore its services elsewhere) "
                                   "and run this again")

    def summarize(self):
        lines = []
        for t in self.targets:
            now = f"pid {t.pid}" if t.pid else "not answering now"
            lines.append(f"restart instance {t.instance.alias} ({t.instance.service}, "
                         f"{t.instance.uuid}) on {t.server.hostname} ({now})")
        return lines

    def steps(self):
        return [Step(f"restart {t.instance.alias}", self._restart_step(t), self._verify_step(t))
                for t in self.targets]

    def _probe(self, ctx, target):
        """() -> (ok, pid): /ping's pid, else (a workload that does not say) the agent's."""
        url = target.instance.url + PING_PATH
        client = ctx.agents.client(target.server.agent_url, timeout=PROBE_TIMEOUT)

        def probe():
            ok, pid = ping_pid(url, PROBE_TIMEOUT)
            if ok and pid is None:
                pid = agent_pid(client, target.instance.uuid)
            return ok, pid

        return probe

    def _restart_step(self, target):
        inst = target.instance

        def restart(ctx):
            old_ok, old_pid = self._probe(ctx, target)()
            old_pid = old_pid if old_ok else None
            ctx.agents.client(target.server.agent_url).restart(inst.uuid)
            ctx.log.info("restart requested", alias=inst.alias, old_pid=old_pid)
            ctx.progress(f"{inst.alias}: restart requested, waiting for a new process")
            measured = wait_restarted(self._probe(ctx, target), old_pid, self.timeout,
                                      self.probe_interval)
            return {"alias": inst.alias, "instance": inst.uuid, "server": target.server.hostname,
                    "old_pid": old_pid, **measured}

        return restart

    def _verify_step(self, target):
        def verify(ctx, previous):
            ok, pid = self._probe(ctx, target)()
            if not ok or not previous:
                return False
            return previous.get("old_pid") is None or pid != previous.get("old_pid")

        return verify

    def report(self, results):
        lines = []
        for name, r in results.items():
            if not r:
                continue
            lines.append(f"{r['alias']} on {r['server']}: restarted (pid {r['old_pid'] or '-'} -> "
                         f"{r['new_pid'] or '-'}), downtime {r['downtime_s']:.2f}s "
                         f"({r['failed_probes']} failed probe(s))")
        return lines

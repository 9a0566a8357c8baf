"""``sdcadm lab drill``: the disaster-recovery rehearsal, measured.

1. bring up a pristine lab (rebuilt when a previous drill left it restored);
2. write canaries into every stateful single-instance service on the first
   headnode; sync restore data on every headnode;
3. write more canaries (after the last sync: these measure the loss window);
4. kill the first headnode abruptly (agent, instances and etcd member:
   SIGKILL; its root moved out of reach, as a lost disk);
5. restore everything on the second headnode (`service restore --all
   --dead hn0`, the real procedure; on etcd against the surviving members)
   while `lab watch` measures availability;
6. check every canary written before the last sync; count those after it;
7. bring the dead headnode back and check it stays fenced: it runs none of
   the moved instances, keeps their zones (data untouched), shows flag F.

``--lose hn0,hn1`` loses a quorum of the etcd store instead: both are killed
(members and disks), `sdcadm store recover` rebuilds the store on the
survivor from the newest snapshot the headnodes kept (its own restore data
first), then step 5 restores every service of both there. It measures
``store_recovery_s`` and ``store_revision_lost`` (the store's writes after the
snapshot, as the survivor's member had applied them when the others died).
Step 7 is not run then: the lost headnodes' etcd members belong to the old
cluster, and two of them powered on would form its quorum again (a second
store); the lab is rebuilt by the next drill (docs/store.md).

With ``fault="partition"`` (a netns lab, docs/lab.md) step 4 cuts the first
headnode off the network instead (`lab partition`): its processes keep
running. Every server's namespace and the host run a prober
(``sdcadm.lab.probe``) of its singletons throughout; the drill waits until
the second headnode sees it unreachable, then restores as above (its fence
agent powers it off: out of band, as IPMI reaches a partitioned server), and
reports when the partitioned side's singletons last answered (seen from
inside it), whether that was before the restore started, and
``max_concurrent_singletons``: the most processes seen serving one singleton
at once, from any side (the promise: 1). Step 7 heals the partition first.

``heal=True`` (``--heal``, a kill of one headnode) goes on after step 7
back to three headnodes with the operator's own commands (``lab/heal.py``):
hn0 powered off for good, `server delete hn0 --force` (its etcd member with
it), `server headnode-setup cn0`, `post-setup ha-*`, a restore-data sync,
then `check-health` and `sdcadm status` until both exit 0. The result's
``heal`` has each step's seconds, the HA placement and the store's members.

Everything measured goes into one result (``DrillResult.to_dict()``).
"""

import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

from sdcadm.config import load_config
from sdcadm.errors import LabError, SdcadmError, UsageError
from sdcadm.health import http_open
from sdcadm.lab import ctl, procs
# A lab whose store was recovered by a --lose drill is never started again, only rebuilt.
from sdcadm.lab.etcd import RECOVERED_MARK
from sdcadm.lab.floor import floor_s
from sdcadm.lab.state import load_state
from sdcadm.progress import Progress, notify
from sdcadm.store import open_store

CANARIES = 3


@dataclass
class DrillResult:
    lab: str
    dead: str
    restored_on: str
    lost: list = field(default_factory=list)   # every headnode killed (--lose)
    store_backend: str = "sqlite"        # where the DC store lived (etcd: hn0's member died too)
    dead_member_gone: bool = False       # etcd: the dead headnode's member no longer answered
    dead_disk_gone: bool = False         # its root was out of reach during the restore
    rto_s: float = 0.0                   # restore start -> every restored instance healthy
    rto_from_kill_s: float = 0.0         # the kill -> every restored instance healthy
    rpo_s: float = 0.0                   # the kill - the oldest data restored (loss window)
    store_recovery_s: float | None = None   # --lose a quorum: `store recover` on the survivor
    store_revision_lost: int | None = None   # writes after the snapshot recovered from
    store_recovered_revision: int | None = None
    store_recovery_steps: dict = field(default_factory=dict)   # seconds per step of the recovery
    services_restored: int = 0
    canaries_written_before_sync: int = 0
    canaries_verified: int = 0
    canaries_written_after_sync: int = 0
    canaries_lost_after_last_sync: int = 0
    fencing_verified: bool = False
    fencing_checked: bool = True          # False when the lost headnodes stay off (--lose a quorum)
    fencing: dict = field(default_factory=dict)
    services: dict = field(default_factory=dict)   # alias -> measurements
    rto_parts: dict = field(default_factory=dict)  # where the restore's time went (rto_parts())
    availability: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    fault: str = "kill"                  # or "partition": hn0 cut off, its processes running
    max_concurrent_singletons: int | None = None   # partition: from probes on every side
    partitioned_side_stopped_s: float | None = None  # partition -> its singletons' last 2xx inside it
    stopped_before_restore: bool | None = None
    heal: dict = field(default_factory=dict)   # --heal: lab/heal.py's report

    @property
    def ok(self):
        return (not self.problems and (self.fencing_verified or not self.fencing_checked)
                and self.canaries_verified == self.canaries_written_before_sync
                and self.max_concurrent_singletons in (None, 0, 1)
                and self.stopped_before_restore is not False)

    def to_dict(self):
        return {**asdict(self), "ok": self.ok}


def _put(url, body, timeout=5.0, within=30.0):
    """PUT a canary; only a 201 counts. An instance restarting (its lease
    lapsed on a loaded machine, it exits and its agent starts it again at
    once) refuses or answers 503 for a moment: retried for ``within``
    seconds, then a LabError saying which instance never acknowledged."""
    deadline = time.monotonic() + within
    while True:
        req = urllib.request.Request(url, data=body, method="PUT")
        try:
            with http_open(req, timeout) as resp:
                if resp.status == 201:
                    return resp.status
                last = f"HTTP {resp.status}"
        except (OSError, http.client.HTTPException) as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise LabError(f"a canary PUT to {url} was not acknowledged within {within:.0f}s "
                           f"(last: {last})", hint="see `sdcadm lab status` and the agent's log")
        time.sleep(0.1)


def _get(url, timeout=5.0):
    try:
        with http_open(url, timeout) as resp:
            return resp.read()
    except (OSError, http.client.HTTPException):
        return None


def _read_canary(url, within=30.0):
    """GET a canary from an instance that may be restarting (its lease lapsed
    on a loaded machine): ``(answered, body)``. Only an answer says whether
    the canary is there; an instance that never answers within ``within``
    seconds is reported as such, not as a lost canary."""
    deadline = time.monotonic() + within
    while True:
        try:
            with http_open(url, 5.0) as resp:
                return True, resp.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return True, None
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            return False, None
        time.sleep(0.2)


def _pristine(state):
    """The lab exists and nothing in it has been restored, fenced or moved."""
    with state.dc_store().open() as store:
        if any(s.fenced for s in store.list_servers()):
            return False
        return all(i.generation == 1 and not i.params.get("restored_from")
                   for i in store.list_instances())


def check_lose(lose, headnodes):
    """The headnodes a drill kills (default hn0), checked before anything is
    built; LabError naming what is wrong."""
    names = [f"hn{i}" for i in range(headnodes)]
    lose = list(dict.fromkeys(lose or ["hn0"]))
    unknown = [h for h in lose if h not in names]
    if unknown:
        raise LabError(f"--lose {','.join(unknown)}: not a headnode of a lab of {headnodes} "
                       f"headnodes ({', '.join(names)})",
                       hint="name headnodes only: compute nodes hold no store and no restore data")
    if len(lose) >= headnodes:
        raise LabError(f"--lose {','.join(lose)} leaves no headnode to restore on",
                       hint=f"keep at least one of {', '.join(names)}")
    return lose


def quorum_lost(lose, headnodes):
    """True when losing ``lose`` leaves fewer than a majority of the members."""
    return headnodes - len(lose) <= headnodes // 2


def prepare_lab(directory, net, headnodes, computenodes, services, observer, timeout,
                backend="dir", store=None, isolation=None):
    from sdcadm.lab.heal import HEALED_MARK

    if (directory / RECOVERED_MARK).exists() or (directory / HEALED_MARK).exists():
        notify(observer, Progress("drill", "the lab's store was recovered or healed by an "
                                           "earlier drill (--lose, --heal): rebuilding it"))
        ctl.destroy(directory)
    if headnodes < 2:
        raise LabError("the drill needs at least 2 headnodes (one to lose, one to restore on)")
    if headnodes < 3 and ctl.choose_store(store, headnodes + computenodes) == "etcd":
        raise LabError(f"the drill on etcd needs at least 3 headnodes: losing hn0 takes one "
                       f"member of {headnodes}, and the survivors must keep a quorum",
                       hint="use --headnodes 3 or more")
    if (directory / "lab.json").exists():
        state = load_state(directory)
        ctl.start_store(state, observer)  # a lab that is down keeps its store in its members
        if not _pristine(state) or state.backend != backend or \
                (store is not None and state.store != store) or \
                (isolation is not None and state.isolation != isolation):
            notify(observer, Progress("drill", "the lab was restored by an earlier drill (or is "
                                               "of another kind): rebuilding it"))
            ctl.destroy(directory)
    return ctl.up(directory, net, headnodes, computenodes, services, timeout=timeout,
                  observer=observer, backend=backend, store=store, isolation=isolation)


FAULTS = ("kill", "partition")


class Probers:
    """``python -m sdcadm.lab.probe`` of ``urls`` in every server's namespace
    and on the host, each writing its rounds to ``<lab>/drill/probe-<side>.jsonl``."""

    def __init__(self, state, urls):
        out = state.path / "drill"
        out.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "sdcadm.lab.probe", *urls, "--interval", "0.05"]
        sides = [(s["hostname"], state.namespace(s["hostname"])) for s in state.servers]
        self.files, self.procs = {}, []
        for side, ns in sides + [("host", None)]:
            self.files[side] = out / f"probe-{side}.jsonl"
            with open(self.files[side], "w") as f:
                self.procs.append(subprocess.Popen(procs.in_netns(argv, ns), stdout=f,
                                                   stdin=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))

    def rounds(self, side=None):
        found = []
        for name, path in self.files.items():
            if side in (None, name):
                for line in path.read_text().splitlines():
                    try:
                        found.append(json.loads(line))
                    except ValueError:
                        pass  # a line being written
        return found

    def wait_all_answer(self, side, timeout):
        """Wait until ``side`` saw every URL answer 2xx in one round (so that
        their stop, later, is seen); False if that never happened in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(all(r["pids"].values()) for r in self.rounds(side)[-5:]):
                return True
            time.sleep(0.1)
        return False

    def stop(self):
        procs.terminate([p.pid for p in self.procs], grace=5.0)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass


def run_drill(directory, net, headnodes=3, computenodes=2, services=None, observer=None,
              timeout=120.0, backend="dir", store=None, lose=None, fault="kill", heal=False,
              isolation=None):
    from sdcadm.lab.watch import Watcher
    from sdcadm.procedures import ProcedureContext, run_procedures
    from sdcadm.procedures.console import Console
    from sdcadm.procedures.restore import RestoreServices
    from sdcadm.restore_data.client import sync_headnodes

    if fault not in FAULTS:
        raise LabError(f"unknown fault {fault!r}", hint="--fault kill or partition")
    lose = check_lose(lose, headnodes)
    if heal:
        from sdcadm.lab.heal import check_heal

        check_heal(fault, lose, computenodes)
    if fault == "partition":
        from sdcadm.lab.netns import require_root

        if len(lose) > 1:
            raise LabError("--fault partition cuts one headnode off; --lose names several",
                           hint="name one of them, or drop --fault partition")
        if isolation == "loopback":
            raise UsageError("--fault partition needs a netns lab: a loopback lab's servers "
                             "share the host's loopback, which cannot be cut",
                             hint="drop --isolation loopback (as root the drill builds a netns "
                                  "lab), or use --fault kill")
        require_root("the drill with --fault partition (a netns lab)")
        isolation = "netns"
    state = prepare_lab(directory, net, headnodes, computenodes, services, observer, timeout,
                        backend, store, isolation=isolation)
    recover = quorum_lost(lose, len(state.headnodes))
    if recover and state.store != "etcd":
        raise LabError(f"--lose {','.join(lose)}: only an etcd store can be recovered")
    lost = [state.server(h) for h in lose]
    dead = lost[0]
    survivor = next(s for s in state.headnodes if s["hostname"] not in lose)
    result = DrillResult(lab=str(state.path), dead=dead["hostname"], restored_on=survivor["hostname"],
                         store_backend=state.store, lost=list(lose), fault=fault)
    config = load_config(state.config_path(survivor["hostname"]), environ={})
    store = open_store(config)  # as the survivor reaches it
    ctx = ProcedureContext.for_config(config, store)
    catalog, token = ctx.catalog, ctx.agents.token
    lost_uuids = {s["uuid"] for s in lost}
    try:
        on_dead = [i for i in store.list_instances()
                   if i.server_uuid in lost_uuids and not catalog.get(i.service).ha]
        stateful = [i for i in on_dead if i.delegate_dataset]

        def write(phase):
            written = []
            for inst in stateful:
                for n in range(CANARIES):
                    key = f"canary-{phase}-{n}"
                    body = f"{inst.alias}:{key}:{time.time():.6f}".encode()
                    _put(f"{inst.url}/data/{key}", body)
                    written.append((inst.uuid, key, body))
            return written

        notify(observer, Progress("drill", f"writing canaries into {len(stateful)} stateful services"))
        before = write("before")
        notify(observer, Progress("drill", "syncing restore data on every headnode"))
        heads = [s for s in store.list_servers() if s.headnode]
        synced = sync_headnodes(heads, token)
        bad = [f"{h.hostname}: {'; '.join(text for _, text in h.problems)}" for h in synced if not h.ok]
        if bad:
            raise LabError("restore data did not sync: " + " | ".join(bad))
        after = write("after")
        result.canaries_written_before_sync = len(before)
        result.canaries_written_after_sync = len(after)

        watched = sorted({i.service for i in on_dead})
        watcher = Watcher(store, watched, interval=0.1) if not recover else None
        singletons = [i.url for i in on_dead if catalog.get(i.service).singleton]
        probers = Probers(state, singletons) if fault == "partition" else None
        if watcher:
            watcher.start()
        try:
            if fault == "partition":
                if not probers.wait_all_answer(dead["hostname"], timeout):
                    result.problems.append(f"{dead['hostname']}'s singletons never all answered "
                                           f"from inside it before the partition")
                killed_at, cut_at = _partition(state, store, dead, observer, timeout)
            else:
                notify(observer, Progress("drill", f"killing {', '.join(lose)} (SIGKILL, no warning)"))
                killed_at = time.time()
                for server in lost:
                    ctl.kill(state, server["hostname"])
            result.dead_disk_gone = all(not state.server_root(s["hostname"]).exists()
                                        for s in lost)
            if fault == "partition":
                result.dead_member_gone = True  # cut off: the majority goes on without it
            elif state.store == "etcd":
                from sdcadm.lab import etcd

                result.dead_member_gone = not any(etcd.healthy(state, s["hostname"])
                                                  for s in lost)
            else:
                result.dead_member_gone = True  # no member to lose
            if recover:
                store.close()
                store, ctx = _recover_store(state, survivor, result, observer)
                watcher = Watcher(store, watched, interval=0.1)
                watcher.start()

            notify(observer, Progress("drill", f"restoring every service on {survivor['hostname']}"))
            restore_at = time.monotonic()
            run = run_procedures([RestoreServices(all_services=True, dead=list(lose),
                                                  timeout=timeout)],
                                 ctx, yes=True, observer=observer,
                                 console=Console(info_to_stderr=True))
            task = store.get_task(run.task)
        finally:
            if watcher:
                watcher.stop()
            if probers is not None:
                probers.stop()
        _collect_restore(result, task, killed_at, run.elapsed_s)
        notify(observer, Progress("drill", "timing one lab workload's start to its first "
                                           "answer (the floor of a level)"))
        result.rto_parts["floor_s"] = floor_s()
        if probers is not None:
            _judge_probes(result, probers, dead["hostname"], cut_at, restore_at)
            result.dead_disk_gone = True  # not lost: cut off (the fence then powered it off)
        if not (result.dead_disk_gone and result.dead_member_gone):
            result.problems.append(f"{', '.join(lose)} not lost whole: disk gone "
                                   f"{result.dead_disk_gone}, store member gone "
                                   f"{result.dead_member_gone}")
        result.availability = watcher.summary()

        notify(observer, Progress("drill", "checking canaries"))
        by_uuid = {i.uuid: i for i in store.list_instances()}
        for uuid, key, body in before:
            answered, got = _read_canary(f"{by_uuid[uuid].url}/data/{key}")
            if got == body:
                result.canaries_verified += 1
            elif not answered:
                result.problems.append(f"{by_uuid[uuid].alias} did not answer for 30 s: canary "
                                       f"{key} could not be checked")
            else:
                result.problems.append(f"canary {key} of {by_uuid[uuid].alias} written before the "
                                       f"last sync was {'changed' if got else 'lost'}")
        result.canaries_lost_after_last_sync = sum(
            _get(f"{by_uuid[uuid].url}/data/{key}") != body for uuid, key, body in after)

        if recover:
            result.fencing_checked = False
            result.fencing = {"skipped": f"{', '.join(lose)} stay off: their etcd members belong "
                                         "to the store's old cluster (docs/store.md)"}
            return result
        notify(observer, Progress("drill", f"bringing {dead['hostname']} back: it must stay fenced"))
        if fault == "partition":
            from sdcadm.lab import faults

            faults.heal(state, dead["hostname"])
        result.fencing = _check_fencing(state, store, dead, on_dead, timeout)
        result.fencing_verified = all(result.fencing.get(k) for k in
                                      ("flag_f", "agent_back", "runs_none_of_moved", "zones_kept"))
        if not result.fencing_verified:
            result.problems.append(f"fencing not verified: {result.fencing}")
        if heal:
            _heal(state, store, result, survivor, dead, timeout, observer)
    finally:
        store.close()
    return result


def _heal(state, store, result, survivor, dead, timeout, observer):
    from sdcadm.lab.heal import heal

    if result.problems:
        result.heal = {"skipped": "the drill found problems before the heal"}
        return
    new = next(s["hostname"] for s in state.servers if not s["headnode"])
    result.heal = heal(state, survivor["hostname"], dead["hostname"], new, store, timeout,
                       observer)
    result.problems += result.heal["problems"]
    if not result.heal["status_ok"] and not result.heal["problems"]:
        result.problems.append("heal: `sdcadm status` did not exit 0")


def _recover_store(state, survivor, result, observer):
    """`sdcadm store recover -y` on the survivor (the real procedure, as its
    operator runs it); return the store and a procedure context reopened
    through its rewritten configuration."""
    from sdcadm.procedures import ProcedureContext
    from sdcadm.procedures.store_recover import StoreRecover
    from sdcadm.store.etcd_maintenance import member_status

    from sdcadm.lab import etcd

    host = survivor["hostname"]
    # A leader notices it lost its quorum after an election timeout: until then
    # the survivor may still say it has one (and `store recover` refuses).
    deadline = time.monotonic() + 30
    while etcd.healthy(state, host):
        if time.monotonic() > deadline:
            raise LabError(f"{host}'s etcd member still has a leader 30s after the others died")
        time.sleep(0.2)
    # What the survivor's member had applied when the others died: the writes
    # a recovery from the snapshot gives up are those after the snapshot's revision.
    applied = member_status(state.etcd_endpoint(host))["revision"]
    (state.path / RECOVERED_MARK).write_text(f"{host}\n")
    config = load_config(state.config_path(host), environ={})
    notify(observer, Progress("drill", f"the store lost its quorum: `store recover` on {host}"))
    started = time.monotonic()
    proc = StoreRecover(config)
    proc.prepare(observer=observer)
    try:
        done = proc.execute(observer=observer)
    finally:
        proc.discard()
    result.store_recovery_s = round(time.monotonic() - started, 3)
    result.store_recovered_revision = done["revision"]
    result.store_recovery_steps = done["timings"]
    result.store_revision_lost = max(0, applied - done["revision"])
    config = load_config(state.config_path(host), environ={})   # its endpoints: the new member
    store = open_store(config)
    return store, ProcedureContext.for_config(config, store)


def _partition(state, store, dead, observer, timeout):
    """Cut ``dead`` off and wait until the store (the majority) sees it
    unreachable: ``(wall time, monotonic time)`` of the cut."""
    from sdcadm.lab import faults
    from sdcadm.model import status_of

    notify(observer, Progress("drill", f"partitioning {dead['hostname']} (its processes keep "
                                       f"running)"))
    at, cut_at = time.time(), time.monotonic()
    faults.partition(state, dead["hostname"])
    lease = state.heartbeat_interval * ctl.HEARTBEAT_TIMEOUT_FACTOR
    deadline = time.monotonic() + timeout
    while True:
        try:
            server = store.get_server(dead["uuid"])
            if status_of(server, store.now(), lease) != "running":
                return at, cut_at
        except SdcadmError:
            pass  # the majority elects a leader without hn0's member: ask again
        if time.monotonic() > deadline:
            raise LabError(f"{dead['hostname']} still heartbeats {timeout:.0f}s after its "
                           f"partition", hint=f"see `sdcadm lab exec {dead['hostname']} -- "
                                              f"ip addr` and lab.json faults")
        time.sleep(0.2)


def _judge_probes(result, probers, dead, cut_at, restore_at):
    from sdcadm.lab.probe import concurrency, spans

    every = probers.rounds()
    most = concurrency(every)
    result.max_concurrent_singletons = max(most.values(), default=0)
    inside = [r["t"] for r in probers.rounds(dead) if r["t"] >= cut_at and any(r["pids"].values())]
    last = max(inside, default=cut_at)
    result.partitioned_side_stopped_s = round(last - cut_at, 3)
    result.stopped_before_restore = last < restore_at
    if result.max_concurrent_singletons > 1:
        twice = sorted(u for u, n in most.items() if n > 1)
        result.problems.append(f"a singleton answered from two processes at once: {twice} "
                               f"(spans by pid: {[spans(every)[u] for u in twice]})")
    if not result.stopped_before_restore:
        result.problems.append(f"{dead}'s singletons still answered inside it when the restore "
                               f"started")


def _collect_restore(result, task, killed_at, elapsed):
    oldest = None
    for step in task.steps:
        for alias, r in ((step.get("result") or {}).get("instances") or {}).items():
            result.services[alias] = r
            result.rto_s = max(result.rto_s, r["rto_s"])
            if r.get("data_as_of"):
                oldest = r["data_as_of"] if oldest is None else min(oldest, r["data_as_of"])
    result.services_restored = len(result.services)
    result.rto_parts = rto_parts(task.steps, task.started)
    result.rto_from_kill_s = round(max((r["rto_s"] for r in result.services.values()), default=0)
                                   + (task.started - killed_at if task.started else 0), 3)
    result.rpo_s = round(killed_at - oldest, 3) if oldest else 0.0


LEVEL_PARTS = ("move_s", "agent_s", "answer_s")


def rto_parts(steps, started):
    """Where a restore's time went, from its task record: each step's own
    time (fence, pulls, each dependency level: its moves ``move_s``, the
    agent's pass until the last process started ``agent_s``, and from there
    to the last first healthy answer ``answer_s``), and the time between
    steps (the runner's bookkeeping: the task record written). ``started``:
    the task's start (store clock). Pure."""
    parts, between, last = [], 0.0, started
    for step in steps:
        if step.get("started") is None:
            continue
        if last is not None:
            between += max(0.0, step["started"] - last)
        slowest = max(((step.get("result") or {}).get("instances") or {}).values(),
                      key=lambda r: r.get("level_s", 0), default=None)
        split = (step.get("result") or {}).get("parts") or {}
        parts.append({"step": step["name"], "s": step.get("elapsed_s"),
                      **({"slowest_healthy_s": slowest["level_s"]} if slowest else {}),
                      **{k: v for k, v in split.items() if k in LEVEL_PARTS}})
        last = step.get("finished", last)
    return {"steps": parts, "between_steps_s": round(between, 3)}


def _check_fencing(state, store, dead, moved, timeout):
    from sdcadm.procedures.agent_client import AgentClients

    ctl.start(state, dead["hostname"])
    agents = AgentClients(load_config(state.config_path(dead["hostname"]), environ={}))
    server = store.get_server(dead["uuid"])
    client = agents.client(server.agent_url, timeout=2.0)
    deadline = time.monotonic() + timeout
    agent_back, rows = False, None
    while time.monotonic() < deadline:
        try:
            status = client.status()
            rows = client.instances()
            agent_back = status.get("fenced") is True
            # Judge after the returning agent completed passes against the store.
            if agent_back and status.get("reconcile_passes", 0) >= 2 and \
                    not any(r.get("pid") for r in rows):
                break
        except SdcadmError:
            pass
        time.sleep(0.2)
    moved_uuids = {i.uuid for i in moved}
    running = [r for r in rows or [] if r.get("pid")]
    deposed = state.server_root(dead["hostname"]) / "zones" / ".deposed"
    kept = all((deposed / u).is_dir() for u in moved_uuids)
    owners = {i.uuid: i.server_uuid for i in store.list_instances()}
    return {
        "flag_f": store.get_server(dead["uuid"]).fenced,
        "agent_back": agent_back,
        "runs_none_of_moved": not any(r["uuid"] in moved_uuids for r in running),
        "runs_nothing": not running,
        "zones_kept": kept,
        "moved_owned_elsewhere": all(owners.get(u) != dead["uuid"] for u in moved_uuids),
    }


def render(result):
    """Lines for people."""
    lost = ", ".join(result.lost or [result.dead])
    what = "partitioned" if result.fault == "partition" else "killed"
    lines = [f"Drill on {result.lab}: {lost} {what}, services restored on {result.restored_on}",
             "", f"{'INSTANCE':<12} {'SERVICE':<10} {'RTO':>7} {'DATA AGE':>9}  DOWNTIME(watch)"]
    avail = (result.availability or {}).get("services", {})
    for alias, r in sorted(result.services.items(), key=lambda ar: ar[1]["rto_s"]):
        rpo = f"{r['rpo_s']:.1f}s" if r.get("rpo_s") is not None else "-"
        down = avail.get(r["service"], {}).get("downtime_s")
        lines.append(f"{alias:<12} {r['service']:<10} {r['rto_s']:>6.2f}s {rpo:>9}  "
                     + (f"{down:.2f}s" if down is not None else "-"))
    lines += [
        "",
        f"store:                          {result.store_backend}",
        f"services restored:              {result.services_restored}",
        f"restore time (RTO):             {result.rto_s:.2f}s (from the kill: {result.rto_from_kill_s:.2f}s)",
        f"data-loss window (RPO):         {result.rpo_s:.2f}s",
        "where the restore's time went:  " + ", ".join(
            f"{p['step']} {p['s']:.2f}s" for p in (result.rto_parts or {}).get("steps", [])
            if p.get("s") is not None)
        + f"; between steps {(result.rto_parts or {}).get('between_steps_s', 0):.2f}s"
        + (f"; floor (one process start to its first answer) "
           f"{result.rto_parts['floor_s']:.2f}s" if (result.rto_parts or {}).get("floor_s")
           else ""),
        f"canaries verified:              {result.canaries_verified}/{result.canaries_written_before_sync}"
        " (written before the last sync)",
        f"canaries lost after last sync:  {result.canaries_lost_after_last_sync}/"
        f"{result.canaries_written_after_sync}",
        f"fencing verified:               {str(result.fencing_verified).lower()}"
        + ("" if result.fencing_checked else " (not checked: " + result.fencing["skipped"] + ")"),
    ]
    if result.store_recovery_s is not None:
        lines.insert(-6, f"store recovered:                {result.store_recovery_s:.2f}s, at "
                         f"revision {result.store_recovered_revision} "
                         f"({result.store_revision_lost} write(s) after the snapshot lost)")

    if result.fault == "partition":
        lines += [
            f"max concurrent singletons:      {result.max_concurrent_singletons} (probes from "
            "every namespace and the host)",
            f"partitioned side stopped:       {result.partitioned_side_stopped_s:.2f}s after the "
            f"cut (before the restore: {str(result.stopped_before_restore).lower()})",
        ]
    if result.heal.get("steps"):
        from sdcadm.lab.heal import render as render_heal

        lines += render_heal(result.heal)
    elif result.heal.get("skipped"):
        lines += ["", f"heal: skipped ({result.heal['skipped']})"]
    lines += [f"PROBLEM: {p}" for p in result.problems]
    return lines


def to_json(result):
    return json.dumps(result.to_dict(), indent=2, sort_keys=True)

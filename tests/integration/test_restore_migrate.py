"""`sdcadm service restore` and `sdcadm service migrate` end to end, through the
installed `sdcadm` command, on real labs (2 headnodes; sapi, imgapi, vmapi,
napi on hn0, binder on both).

What is checked is what an operator relies on: a restore rebuilds every lost
service on the surviving headnode with its data; a dead headnode that comes
back stays fenced and runs nothing it lost; a procedure killed with SIGKILL at
any step finishes when the same command is run again; no instance ever runs on
two servers at once. Restore times and downtimes are printed, never asserted
(targets live in bench/restore.py).
"""

import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from sdcadm.health import http_open
from sdcadm.lab import procs
from tests.conftest import (BIN, clean_env, lab_factory, lab_store_config, needs_sshd,
                            run, store_idle, wait_for)

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_sshd]

HEARTBEAT = 0.5
SERVICES = "sapi,imgapi,vmapi,napi,binder,nat"   # the lab leaves nat out (lab: false)
SINGLETONS = ("sapi", "imgapi", "vmapi", "napi")  # non-HA, one instance on hn0
STATEFUL = ("sapi", "imgapi")                     # ... with a delegate dataset
RESTORE = ("service", "restore", "--all", "--dead", "hn0", "-y", "-j")
MIGRATE = ("service", "migrate", "hn0", "hn1", "--all", "-y", "-j")
AGENT_TIMEOUT = 5.0   # how long migrate waits for an agent's answer (AgentClient)


# -- the lab -----------------------------------------------------------------------------------

class Lab:
    """One lab directory, driven through the installed `sdcadm` as hn1 (or hn0)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.token = (self.dir / "hn1" / "etc" / "sdcadm" / "agent-token").read_text().strip()

    def env(self, host="hn1"):
        return clean_env(SDCADM_CONFIG=str(self.dir / host / "etc" / "sdcadm.yaml"))

    def sdcadm(self, *argv, on="hn1", check=True):
        return run("sdcadm", *argv, env=self.env(on), check=check)

    def lab(self, command, *argv):
        return run("sdcadm", "lab", command, "--dir", str(self.dir), *argv)

    def insts(self):
        return {i["alias"]: i for i in json.loads(self.sdcadm("insts", "-j").stdout)}

    def servers(self):
        return {s["hostname"]: s for s in json.loads(self.sdcadm("server", "ls", "-j").stdout)}

    def agent(self, host, path, timeout=2.0):
        """GET an agent's /v1/<path> (None if it does not answer)."""
        doc = json.loads((self.dir / "lab.json").read_text())
        server = next(s for s in doc["servers"] if s["hostname"] == host)
        url = f"http://{server['admin_ip']}:{doc['ports']['agent']}/v1/{path}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with http_open(req, timeout) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def running_on(self, host):
        """{uuid: alias} of what host's agent runs now (a pid), {} if it is down."""
        return {r["uuid"]: r["alias"] for r in self.agent(host, "instances") or [] if r.get("pid")}

    def wait_healthy(self, services, timeout=60):
        last = {}

        def healthy():
            last["health"] = health = self.sdcadm("check-health", "-q", *services, check=False)
            return health.returncode == 0

        try:
            wait_for(healthy, timeout, f"{', '.join(services) or 'every service'} healthy",
                     interval=0.2)
        except AssertionError as e:
            health = last.get("health")
            raise AssertionError(f"{e}:\n{health.stdout}{health.stderr}" if health else e) from None


@pytest.fixture
def new_lab(tmp_path):
    """make() -> a fresh running Lab on a random network; every lab made is
    stopped afterwards and must leave no process behind."""
    def make(services=SERVICES, headnodes=2):
        """``headnodes``: 3 for a test that kills hn0 (the store's etcd keeps
        its quorum with one member of three lost, not of two)."""
        return Lab(up("--headnodes", str(headnodes), "--computenodes", "0", "--services",
                      services, "--heartbeat-interval", str(HEARTBEAT), "--timeout", "90"))

    with lab_factory(tmp_path) as up:
        yield make


# -- data ---------------------------------------------------------------------------------------

def put(url, key, body, timeout=20.0):
    """PUT a canary, retried while the instance (re)starts (a lease that
    lapsed on a loaded machine restarts it): only a 201 acknowledges it."""
    def acknowledged():
        req = urllib.request.Request(f"{url}/data/{key}", data=body, method="PUT")
        with http_open(req, 5.0) as resp:
            return resp.status == 201

    wait_for(acknowledged, timeout, f"PUT {key} to {url} acknowledged", interval=0.1)


def get(url, key):
    try:
        with http_open(f"{url}/data/{key}", 5.0) as resp:
            return resp.read()
    except OSError:
        return None


def write_canaries(lab, phase):
    """A canary in every stateful singleton: [(alias, key, body)]."""
    insts, written = lab.insts(), []
    for service in STATEFUL:
        inst = next(i for i in insts.values() if i["service"] == service)
        key = f"canary-{phase}"
        body = f"{inst['alias']}:{phase}:{time.time():.6f}".encode()
        put(inst["url"], key, body)
        written.append((inst["alias"], inst["uuid"], key, body))
    return written


def read_back(url, key, timeout=30.0):
    """``key``'s value as the instance at ``url`` answers (None: it answered
    404, the value is not there), waiting while it does not answer at all or
    answers 503: an instance restarted by its agent after a lease lapse (a
    store election on a loaded machine) is not serving yet, which says
    nothing of its data."""
    import urllib.error

    def answered():
        try:
            with http_open(f"{url}/data/{key}", 5.0) as resp:
                return (resp.read(),)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return (None,)
            return None if e.code == 503 else (f"HTTP {e.code}".encode(),)
        except OSError:
            return None

    (value,) = wait_for(answered, timeout, f"{url} to answer for {key}", interval=0.1)
    return value


def check_canaries(lab, canaries):
    """Every canary reads back byte for byte from the instance of its service now."""
    insts = lab.insts()
    for alias, uuid, key, body in canaries:
        service = alias.rstrip("0123456789")
        (inst,) = [i for i in insts.values() if i["service"] == service]
        assert read_back(inst["url"], key) == body, f"canary {key} of {alias} lost or changed"


def ping(url):
    try:
        with http_open(url + "/ping", 2.0) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return {}


def lost_canaries(lab, canaries):
    insts = lab.insts()
    by_service = {i["service"]: i for i in insts.values()}
    return sum(get(by_service[a.rstrip("0123456789")]["url"], k) != b for a, _, k, b in canaries)


# -- watching the invariants ----------------------------------------------------------------------

def instance_processes(directory):
    """[(pid, instance uuid, service, server hostname)] of every live instance
    process of the lab, from /proc (the ground truth, whatever the agents say).
    A child of an instance's process (the workload runs `ip addr add|del`, in
    a netns lab) inherits its environment but is not a second copy of it."""
    found, parents = _instance_processes(directory)
    mine = {pid: uuid for pid, uuid, _, _ in found}
    return [f for f in found if mine.get(parents.get(f[0])) != f[1]]


def _instance_processes(directory):
    prefix = str(directory) + "/"
    found, parents = [], {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            if not cwd.startswith(prefix):
                continue
            stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] in ("Z", "X"):
                continue
            parents[int(entry.name)] = int(stat[1])
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(e.split(b"=", 1) for e in environ if b"=" in e)
        if b"SDC_INSTANCE_UUID" in env:
            found.append((int(entry.name), env[b"SDC_INSTANCE_UUID"].decode(),
                          env.get(b"SDC_INSTANCE_SERVICE", b"").decode(),
                          cwd[len(prefix):].split("/")[0]))
    return found, parents


class Invariants:
    """Samples the lab in a thread while something happens, and records every
    violation of: an instance runs as one process at most; a singleton
    service runs one instance at most (migrate stops the old one before it
    creates the new one; ``stateful`` names the services checked); no two agents run the same instance; the address of
    an instance is answered by that instance or by nothing (never by another
    one still holding a reused address). ``answers``: for the given ``urls``,
    the hostnames of the servers whose processes answered there."""

    def __init__(self, lab, urls=(), stateful=SINGLETONS, interval=0.05):
        self.lab, self.urls, self.stateful = lab, sorted(set(urls)), set(stateful)
        self.interval = interval
        self.violations, self.answers, self.samples = [], {}, 0
        self.agents_seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        now = time.strftime("%H:%M:%S")
        owners = self._owners()
        seen = instance_processes(self.lab.dir)
        by_uuid, by_service = {}, {}
        for pid, uuid, service, host in seen:
            by_uuid.setdefault(uuid, []).append((pid, host))
            if service in self.stateful:
                by_service.setdefault(service, set()).add(uuid)
        for uuid, where in by_uuid.items():
            if len(where) > 1:
                self.violations.append(f"{now} instance {uuid} runs {len(where)} times: {where}")
        for service, uuids in by_service.items():
            if len(uuids) > 1:
                self.violations.append(f"{now} {service} runs {len(uuids)} instances: {uuids}")
        runs = {}
        for host in ("hn0", "hn1"):
            rows = self.lab.agent(host, "instances", timeout=0.5)
            if rows is not None:
                self.agents_seen.add(host)
            for r in rows or []:
                if r.get("pid"):
                    runs.setdefault(r["uuid"], []).append(host)
        for uuid, hosts in runs.items():
            if len(hosts) > 1:
                self.violations.append(f"{now} agents {hosts} both run {uuid}")
        pids = {pid: host for pid, _, _, host in seen}
        answered = {}
        for url in sorted(set(self.urls) | set(owners)):
            try:
                with http_open(url + "/ping", 0.3) as resp:
                    answered[url] = json.loads(resp.read())
            except (OSError, ValueError, http.client.HTTPException):
                continue
            if url in self.urls:
                pid = answered[url].get("pid")
                self.answers.setdefault(url, set()).add(pids.get(pid) or _host_of(pid, self.lab.dir))
        # Judged only where the store said the same before and after the probes.
        stable = {u: o for u, o in self._owners().items() if owners.get(u) == o}
        for url, (uuid, alias) in stable.items():
            got = answered.get(url)
            if got is not None and got.get("uuid") != uuid:
                self.violations.append(f"{now} {url} of {alias} answered by {got.get('alias')}")
        self.samples += 1

    def _owners(self):
        """{url: (uuid, alias)} of every instance in the store."""
        from sdcadm.lab.state import load_state

        with load_state(self.lab.dir).dc_store().open() as store:
            return {i.url: (i.uuid, i.alias) for i in store.list_instances()}


def _host_of(pid, directory):
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "?"
    prefix = str(directory) + "/"
    return cwd[len(prefix):].split("/")[0] if cwd.startswith(prefix) else "?"


# -- a command running in the background -----------------------------------------------------------

class Cli:
    """`sdcadm ARGS` in its own session; its stderr (progress) read line by line."""

    def __init__(self, argv, env):
        self.argv = argv
        self.proc = subprocess.Popen([str(BIN / "sdcadm"), *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        self.lines, self._queue, self._stdout = [], queue.Queue(), []
        self._threads = [threading.Thread(target=self._pump, daemon=True),
                         threading.Thread(target=self._read_stdout, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_stdout(self):
        self._stdout.append(self.proc.stdout.read())

    def _pump(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_line(self, pattern, timeout=90):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.argv}: no line matching {pattern!r} in {timeout}s:\n"
                                     + "".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"{self.argv} exited ({self.proc.wait()}) before printing "
                                     f"{pattern!r}:\n" + "".join(self.lines))
            if re.search(pattern, line):
                return line

    def signal(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass  # it has exited already

    def pause(self, lab_dir):
        """SIGSTOP it at an instant it holds no write transaction on the DC store."""
        pause_outside_store_tx(self.proc.pid, lab_dir, group=True)

    def resume(self):
        self.signal(signal.SIGCONT)

    def kill(self):
        """SIGKILL the whole process group, and reap it (a zombie still 'runs')."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=10)

    def finish(self, timeout=150):
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=10)
        return rc, "".join(self._stdout), "".join(self.lines)


def pause_outside_store_tx(pid, lab_dir, group=False, tries=500):
    """SIGSTOP ``pid`` (its process group with ``group``) at an instant it holds
    no write transaction on the lab's DC store: sqlite has one writer at a time,
    and a writer held stopped would stop every agent and command with it."""
    config = lab_store_config(lab_dir)
    send = os.killpg if group else os.kill
    for _ in range(tries):
        send(pid, signal.SIGSTOP)
        wait_for(lambda: _proc_state(pid) in ("T", None), 10, f"{pid} stopping", interval=0.001)
        if store_idle(config):
            return
        send(pid, signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError(f"could not pause {pid} outside a store transaction")


def calls_in_flight(pid, address):
    """Local ports of ``pid``'s open TCP connections to ``address`` ("ip:port")
    that are established: an HTTP call it is making there."""
    ip, port = address.rsplit(":", 1)
    remote = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{int(port):04X}"
    mine = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(link[8:-1])
    ports = set()
    for row in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[2] == remote and fields[3] == "01" and fields[9] in mine:  # 01: ESTABLISHED
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _proc_state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def restore_figures(result):
    return {alias: r for step in result["procedures"][0]["steps"]
            for alias, r in ((step.get("result") or {}).get("instances") or {}).items()}


def migrate_figures(result):
    return {s["result"]["old"]: s["result"] for s in result["procedures"][0]["steps"]
            if s.get("result")}


def assert_restored_on_hn1(lab, before):
    """Every singleton of hn0 now on hn1: same uuid and alias, newer generation."""
    after = lab.insts()
    for alias, inst in before.items():
        if inst["service"] not in SINGLETONS:
            continue
        now = after[alias]
        assert (now["hostname"], now["uuid"]) == ("hn1", inst["uuid"]), now
        assert now["generation"] > inst["generation"], now
    assert after["binder0"]["hostname"] == "hn0"   # HA: left to its peers


def create_on_hn0(lab, *services):
    """Instances of ``services`` (the lab was built without them) added on
    hn0 as an operator adds them: each image built where hn0 can read it (as
    downloaded there), imported, then created."""
    from sdcadm.lab.images import build_workload_image

    incoming = lab.dir / "hn0" / "var" / "tmp" / "images"
    records = [str(incoming / f"{build_workload_image(incoming, s).uuid}.json") for s in services]
    lab.sdcadm("image", "import", *records, on="hn0")
    lab.sdcadm("create", *services, "--server", "hn0", "-y", on="hn0")


def assert_one_server_runs_each(lab, uuids, host="hn1"):
    other = {"hn0": "hn1", "hn1": "hn0"}[host]
    here, there = lab.running_on(host), lab.running_on(other)
    for uuid in uuids:
        assert uuid in here and uuid not in there, f"{uuid}: {host} {here}, {other} {there}"


# -- 1. restore: the happy path --------------------------------------------------------------------

def test_restore_rebuilds_every_lost_service_on_the_survivor(new_lab):
    lab = new_lab(headnodes=3)
    before = lab.insts()
    canaries = write_canaries(lab, "before")
    lab.sdcadm("service", "sync-restore-data")
    lab.lab("kill", "hn0")

    done = lab.sdcadm(*RESTORE)
    result = json.loads(done.stdout)
    assert result["state"] == "succeeded"
    figures = restore_figures(result)
    assert sorted(figures) == sorted(a for a, i in before.items() if i["service"] in SINGLETONS)
    for alias, r in sorted(figures.items()):
        print(f"{alias}: RTO {r['rto_s']:.2f}s, data {r['rpo_s']:.2f}s old")

    assert_restored_on_hn1(lab, before)
    check_canaries(lab, canaries)
    assert "F" in lab.servers()["hn0"]["flags"]
    lab.wait_healthy(SINGLETONS)
    assert_one_server_runs_each(lab, [i["uuid"] for i in before.values()
                                      if i["service"] in SINGLETONS])


# -- 2. restore: refusals --------------------------------------------------------------------------

def test_restore_refuses_what_it_cannot_do_safely(new_lab):
    # headnode-setup (in `lab up`) pulled a first copy of sapi0 to hn1 and hn2;
    # the other singletons are created afterwards: no headnode holds a copy of
    # them until the next scheduled cycle (restore_data.sync_interval, 60 s).
    lab = new_lab(services="sapi,binder", headnodes=3)
    create_on_hn0(lab, "imgapi", "napi", "vmapi")
    before = lab.insts()
    tasks = json.loads(lab.sdcadm("task", "ls", "-j").stdout)   # those that built the DC

    # hn0 is alive: nothing is dead unless the operator says so.
    for argv in (("--all",), ("sapi",)):
        alive = lab.sdcadm("service", "restore", *argv, "-y", check=False)
        assert alive.returncode == 1, alive
        assert "no server is dead" in alive.stderr and "--dead" in alive.stderr

    unknown = lab.sdcadm("service", "restore", "nosuch", "--dead", "hn0", "-y", check=False)
    assert unknown.returncode == 1
    assert "unknown service 'nosuch'" in unknown.stderr and "sapi" in unknown.stderr

    on_dead = lab.sdcadm(*RESTORE, on="hn0", check=False)
    assert on_dead.returncode == 1 and "hn0 is this server" in on_dead.stderr

    # hn1 and hn2 pull sapi only, then hn0 dies: the others cannot be restored.
    lab.sdcadm("service", "sync-restore-data", "sapi")
    lab.lab("kill", "hn0")
    missing = lab.sdcadm(*RESTORE, check=False)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    problems = [line for line in missing.stderr.splitlines() if line.startswith("  - ")]
    assert sorted(p.split(":")[0].strip(" -") for p in problems) == ["imgapi0", "napi0", "vmapi0"]
    assert "restore-data" in missing.stderr   # the hint says where to look

    # None of those refusals changed anything: nothing moved, hn0 not fenced, no task.
    after = lab.insts()
    assert {a: (i["hostname"], i["generation"]) for a, i in after.items()} == \
           {a: (i["hostname"], i["generation"]) for a, i in before.items()}
    assert "F" not in lab.servers()["hn0"]["flags"]
    assert json.loads(lab.sdcadm("task", "ls", "-j").stdout) == tasks

    # What hn1 does hold restores; the rest stays refused.
    lab.sdcadm("service", "restore", "sapi", "--dead", "hn0", "-y")
    after = lab.insts()
    assert after["sapi0"]["hostname"] == "hn1"
    assert all(after[a]["hostname"] == "hn0" for a in ("imgapi0", "napi0", "vmapi0"))
    still = lab.sdcadm("service", "restore", "imgapi", "--dead", "hn0", "-y", check=False)
    assert still.returncode == 1 and "imgapi0" in still.stderr


# -- 3. the dead headnode comes back in the middle of the restore ----------------------------------

def test_dead_headnode_coming_back_mid_restore_stays_fenced(new_lab):
    lab = new_lab(headnodes=3)
    before = lab.insts()
    moved = {i["uuid"]: a for a, i in before.items() if i["service"] in SINGLETONS}
    canaries = write_canaries(lab, "before")
    lab.sdcadm("service", "sync-restore-data")
    lab.lab("kill", "hn0")

    urls = [i["url"] for i in before.values() if i["service"] in SINGLETONS]
    with Invariants(lab, urls) as watch:
        cli = Cli(RESTORE, lab.env())
        cli.wait_line(r"assigned to hn1")
        # Hold the restore right after its first move (hn0 already fenced) while
        # hn0 comes back: hn0 then sees some instances moved, others still its own.
        cli.pause(lab.dir)
        try:
            lab.lab("start", "hn0")
            wait_for(lambda: (s := lab.agent("hn0", "status") or {}).get("fenced")
                     and s.get("reconcile_passes", 0) >= 2, 30, "hn0 coming back fenced")
            back_mid_restore = cli.proc.poll() is None
        finally:
            cli.resume()
        rc, out, err = cli.finish()
        assert rc == 0, err
        assert back_mid_restore, "the restore ended before hn0 came back:\n" + err
        # hn0 deposes what it lost on its next passes.
        wait_for(lambda: not any((lab.dir / "hn0" / "zones" / u).exists() for u in moved), 30,
                 "hn0 moving away the zones of moved instances")
        watch.sample()

    print("restore:", {a: f"RTO {r['rto_s']:.2f}s" for a, r in
                       restore_figures(json.loads(out)).items()})
    assert watch.violations == [], watch.violations
    assert "hn0" in watch.agents_seen
    for url in urls:
        assert watch.answers.get(url, set()) <= {"hn1"}, (url, watch.answers)

    status = lab.agent("hn0", "status")
    assert status["fenced"] is True
    assert lab.running_on("hn0") == {}
    assert "F" in lab.servers()["hn0"]["flags"]
    for uuid in moved:
        assert (lab.dir / "hn0" / "zones" / ".deposed" / uuid).is_dir()
    assert_restored_on_hn1(lab, before)
    assert_one_server_runs_each(lab, moved)
    check_canaries(lab, canaries)
    lab.wait_healthy(SINGLETONS)


def test_restore_never_takes_over_addresses_still_answered(new_lab):
    """hn0's agent hangs (SIGSTOP: its heartbeat stops). Nobody renews the
    instance leases of its singletons any more, so they fence themselves at
    their lease's end, with the agent still hung (docs/recovery.md, "Instance
    leases and the dead margin"): the restore (`--dead hn0`) then finds their
    addresses free and takes them over, and no address is ever answered by
    two servers."""
    lab = new_lab(headnodes=3)  # the fence takes hn0's etcd member too
    before = lab.insts()
    moved = {i["uuid"]: a for a, i in before.items() if i["service"] in SINGLETONS}
    canaries = write_canaries(lab, "before")
    lab.sdcadm("service", "sync-restore-data")
    agent = int((lab.dir / "hn0" / "var" / "run" / "sdcadm-agent.pid").read_text())
    pids = {alias: ping(before[alias]["url"])["pid"] for alias in moved.values()}
    pause_outside_store_tx(agent, lab.dir)
    try:
        for alias, pid in pids.items():
            wait_for(lambda pid=pid: procs.gone(pid), 30,
                     f"{alias} on hn0 fencing itself, its agent hung")
        assert {i["hostname"] for i in lab.insts().values() if i["uuid"] in moved} == {"hn0"}
        again = Cli(RESTORE, lab.env())
        again.wait_line(r"fenced hn0")
    finally:
        procs.send(agent, signal.SIGCONT)
    rc, out, err = again.finish()
    assert rc == 0, err
    for alias in moved.values():
        got = ping(before[alias]["url"])
        assert _host_of(got.get("pid"), lab.dir) == "hn1", (alias, got)
    assert lab.running_on("hn0") == {}
    assert_restored_on_hn1(lab, before)
    assert_one_server_runs_each(lab, moved)
    check_canaries(lab, canaries)
    lab.wait_healthy(SINGLETONS)


# -- 4. SIGKILL at every step, then the same command again -----------------------------------------

def _kill_and_rerun(lab, argv, point):
    """Run ``argv``, SIGKILL it when it prints ``point``, run it again; return
    (stderr of the killed run, the re-run's JSON result, its stderr)."""
    cli = Cli(argv, lab.env())
    cli.wait_line(point)
    cli.kill()
    killed = "".join(cli.lines)
    again = lab.sdcadm(*argv, check=False)
    assert again.returncode == 0, f"re-run failed:\n{again.stdout}\n{again.stderr}"
    # The killed run held the DC lock: taken over at once, its task resumed.
    assert "taking over the lock held by" in again.stderr, again.stderr
    result = json.loads(again.stdout)
    assert result["state"] == "succeeded" and result["resumed"] is True
    return killed, result, again.stderr


@pytest.mark.parametrize("point", [r"fenced hn0", r"assigned to hn1", r"waiting for "])
def test_restore_killed_at_any_step_finishes_when_run_again(new_lab, point):
    lab = new_lab(headnodes=3)
    before = lab.insts()
    moved = [i["uuid"] for i in before.values() if i["service"] in SINGLETONS]
    canaries = write_canaries(lab, "before")
    lab.sdcadm("service", "sync-restore-data")
    late = write_canaries(lab, "after-sync")
    lab.lab("kill", "hn0")

    urls = [i["url"] for i in before.values() if i["service"] in SINGLETONS]
    with Invariants(lab, urls) as watch:
        killed, result, _ = _kill_and_rerun(lab, RESTORE, point)
        watch.sample()
    print(f"killed at {point!r} after:\n{killed}")
    print("re-run:", {a: f"RTO {r['rto_s']:.2f}s" for a, r in restore_figures(result).items()})

    assert watch.violations == [], watch.violations
    assert_restored_on_hn1(lab, before)
    lab.wait_healthy(SINGLETONS)
    assert_one_server_runs_each(lab, moved)
    check_canaries(lab, canaries)
    print(f"canaries written after the last sync and lost: {lost_canaries(lab, late)}/{len(late)}")


@pytest.mark.parametrize("point", [r"syncing its dataset", r"stopping it",
                                   r"final incremental sync", r"created on hn1"])
def test_migrate_killed_at_any_step_finishes_when_run_again(new_lab, point):
    lab = new_lab()
    before = lab.insts()
    canaries = write_canaries(lab, "before")

    urls = [i["url"] for i in before.values() if i["service"] in SINGLETONS]
    with Invariants(lab, urls) as watch:
        killed, result, _ = _kill_and_rerun(lab, MIGRATE, point)
        watch.sample()
    print(f"killed at {point!r} after:\n{killed}")
    print("re-run:", {a: f"downtime {r['downtime_s']:.2f}s"
                      for a, r in migrate_figures(result).items()})

    assert watch.violations == [], watch.violations
    assert_migrated(lab, before, canaries)


def assert_migrated(lab, before, canaries):
    """Exactly one instance of every singleton, on hn1, healthy, data kept; hn0
    keeps only binder (HA, with a peer on hn1) and what migrate skips."""
    after = lab.insts()
    for service in SINGLETONS:
        mine = [i for i in after.values() if i["service"] == service]
        assert len(mine) == 1 and mine[0]["hostname"] == "hn1", mine
        assert mine[0]["uuid"] != before[f"{service}0"]["uuid"]
        # Done means the new instance itself answers at its address.
        assert ping(mine[0]["url"]).get("uuid") == mine[0]["uuid"], mine[0]
    on_hn0 = sorted(a for a, i in after.items() if i["hostname"] == "hn0")
    assert on_hn0 in (["binder0"], ["binder0", "nat0"]), on_hn0
    assert sorted(lab.running_on("hn0").values()) == on_hn0
    # The old instances' zones go as soon as hn0's agent sees them gone from the store.
    kept = sorted(after[a]["uuid"] for a in on_hn0)
    wait_for(lambda: sorted(p.name for p in (lab.dir / "hn0" / "zones").iterdir()
                            if not p.name.startswith(".")) == kept, 30,
             f"hn0's zones becoming exactly {kept}")
    lab.wait_healthy(())
    assert_one_server_runs_each(lab, [i["uuid"] for i in after.values()
                                      if i["service"] in SINGLETONS])
    check_canaries(lab, canaries)


# -- 5. migrate: the happy path --------------------------------------------------------------------

def add_nat(lab):
    """nat0 on hn0 (the lab leaves nat out: it is not the operator's), through the store."""
    from sdcadm.lab.ctl import add_image
    from sdcadm.lab.state import load_state
    from sdcadm.model import Instance, Service
    from sdcadm.uuids import new_uuid

    state = load_state(lab.dir)
    image = add_image(state, "nat")  # imported on hn0; other servers fetch it from there
    uuid = new_uuid()
    with state.dc_store().open() as store:
        store.put_image(image)
        store.put_service(Service("nat", image.uuid, {"ha": False, "delegate_dataset": False}))
        store.create_instance(Instance(
            uuid=uuid, alias="nat0", service="nat", server_uuid=state.server("hn0")["uuid"],
            image=image.uuid, admin_ip=store.allocate_ip("admin", uuid),
            port=state.ports["instance"], delegate_dataset=False))
    lab.wait_healthy(("nat",))


def test_migrate_evacuates_a_headnode(new_lab):
    lab = new_lab()
    add_nat(lab)
    before = lab.insts()
    canaries = write_canaries(lab, "before")

    urls = [i["url"] for i in before.values() if i["service"] in SINGLETONS]
    with Invariants(lab, urls) as watch:
        done = lab.sdcadm(*MIGRATE)
    result = json.loads(done.stdout)
    assert result["state"] == "succeeded"
    assert watch.violations == [], watch.violations

    summary = "\n".join(result["procedures"][0]["summary"])
    assert "skip binder0" in summary and "skip nat0" in summary
    figures = migrate_figures(result)
    assert sorted(figures) == [f"{s}0" for s in sorted(SINGLETONS)]
    for alias, r in sorted(figures.items()):
        print(f"{alias} -> {r['new']} ({'stateful' if r['stateful'] else 'stateless'}): "
              f"downtime {r['downtime_s']:.2f}s, {r['failed_probes']}/{r['probes']} probes failed")
        assert r["stateful"] == (r["service"] in STATEFUL)
        assert isinstance(r["downtime_s"], float) and r["probes"] > 0
        # Every one of them is a singleton: stopped before its new instance
        # starts, so clients saw it down (not a timing: down at all).
        assert r["stop_first"] and r["failed_probes"] > 0 and r["downtime_s"] > 0, r
        assert re.search(rf"{alias} -> {r['new']} \(.*\): downtime \d+\.\d+s", done.stderr)
    assert_migrated(lab, before, canaries)
    assert lab.insts()["nat0"]["hostname"] == "hn0"


def test_migrate_whose_sync_fails_leaves_the_old_instance_running(new_lab):
    lab = new_lab()
    before = lab.insts()
    canaries = write_canaries(lab, "before")
    # A link leading out of the dataset: the copy is refused, so the sync fails.
    escape = lab.dir / "hn0" / "zones" / before["sapi0"]["uuid"] / "data" / "escape"
    escape.symlink_to("/etc/passwd")

    failed = lab.sdcadm("service", "migrate", "hn0", "hn1", "sapi", "-y", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "first sync of sapi to hn1 failed" in failed.stderr and "escape" in failed.stderr
    assert "run the same command again" in failed.stderr
    after = lab.insts()
    assert [a for a, i in after.items() if i["service"] == "sapi"] == ["sapi0"]
    assert after["sapi0"]["hostname"] == "hn0" and "desired_state" not in after["sapi0"]["params"]
    lab.wait_healthy(("sapi",))

    escape.unlink()
    lab.sdcadm("service", "migrate", "hn0", "hn1", "sapi", "-y")
    (sapi,) = [i for i in lab.insts().values() if i["service"] == "sapi"]
    assert sapi["hostname"] == "hn1"
    check_canaries(lab, [c for c in canaries if c[0] == "sapi0"])


def test_migrate_gives_an_address_back_only_once_its_process_is_gone(new_lab):
    """Stateless services one after the other: each new instance gets the
    lowest free address, which is the one the previous old instance had. With
    a slow source agent (held stopped longer than the procedure waits for an
    agent's answer), the old process keeps running: its address must not be
    handed out meanwhile, else its answers pass for the new instance's (which
    cannot even bind) and the old instance of the next service is destroyed
    while its replacement does not run."""
    lab = new_lab("napi,cnapi,papi,vmapi,workflow,binder")
    stateless = ("napi", "cnapi", "papi", "vmapi", "workflow")
    agent = int((lab.dir / "hn0" / "var" / "run" / "sdcadm-agent.pid").read_text())
    assert "sdcadm.agent" in Path(f"/proc/{agent}/cmdline").read_text()
    with Invariants(lab) as watch:
        cli = Cli(MIGRATE, lab.env())
        cli.wait_line(r"napi1: created on hn1")
        pause_outside_store_tx(agent, lab.dir)
        try:
            # Migrate asks hn0's agent to stop napi0; hold the agent until
            # migrate has given up on that call (AGENT_TIMEOUT).
            hn0_agent = lab.servers()["hn0"]["agent_url"].split("//", 1)[1].rstrip("/")
            calls = wait_for(lambda: calls_in_flight(cli.proc.pid, hn0_agent), 30,
                             "migrate calling hn0's stopped agent")
            wait_for(lambda: not calls & calls_in_flight(cli.proc.pid, hn0_agent),
                     AGENT_TIMEOUT + 30, "migrate giving up on hn0's stopped agent")
        finally:
            os.kill(agent, signal.SIGCONT)
        rc, out, err = cli.finish()
        assert rc == 0, err
        after = lab.insts()
        for service in stateless:
            (inst,) = [i for i in after.values() if i["service"] == service]
            assert inst["hostname"] == "hn1"
            assert ping(inst["url"]).get("uuid") == inst["uuid"], inst
    assert watch.violations == [], watch.violations
    for alias, r in migrate_figures(json.loads(out)).items():
        # Singletons: stopped before their new instance starts.
        assert r["stop_first"] and r["failed_probes"] > 0, (alias, r)
    lab.wait_healthy(stateless)

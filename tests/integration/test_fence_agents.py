"""Fence agents on a real lab (issue 8): restore moves nothing off a server
until its fence agent powered it off (or the operator says it is off), never
acts on a server that is merely silent, and finishes a migrate the dead
server had already replaced instead of running its singleton twice.

Each test keeps a prober thread of its own, outside every sdcadm process:
every 50 ms it GETs /ping of every address any singleton instance has had
(as the store showed them over time) and records, per service, which
processes answered in that round and on which server (the answering pid's
working directory says which server's root it runs under). The promise
checked is the operator's: no round ever sees one singleton answer from two
processes (two servers, or twice on one), and every write
acknowledged with 201 before the last sync or after the restore is readable
from the restored instance. Durations are never asserted (bench/fencing.py
measures them).
"""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sdcadm.health import http_open
from sdcadm.lab import procs
from sdcadm.errors import NotFound
from sdcadm.store import store_for
from tests.conftest import (BIN, clean_env, lab_factory, lab_store_config, needs_sshd,
                            run, wait_for)

pytestmark = [pytest.mark.integration, needs_sshd]

SINGLETONS = ("sapi", "ufds")      # one stateful, one stateless
PROBE_EVERY = 0.05
HANG = f"60.{os.getpid()}"   # the hung fence agent's argument: no other process has it


class Lab:
    def __init__(self, directory):
        self.dir = Path(directory)

    def env(self, host="hn1", **extra):
        return clean_env(SDCADM_CONFIG=str(self.dir / host / "etc" / "sdcadm.yaml"), **extra)

    def sdcadm(self, *argv, on="hn1", check=True, **extra):
        return run("sdcadm", *argv, env=self.env(on, **extra), check=check)

    def insts(self):
        return {i["alias"]: i for i in json.loads(self.sdcadm("insts", "-j").stdout)}

    def servers(self):
        return {s["hostname"]: s for s in json.loads(self.sdcadm("server", "ls", "-j").stdout)}

    def processes(self, host):
        """Every process of ``host``: its agent and whatever runs under its root."""
        found = set(procs.lab_processes(self.dir / host))
        agent = procs.read_pid(self.dir / host / "var" / "run" / "sdcadm-agent.pid")
        if agent and procs.alive(agent):
            found.add(agent)
        return sorted(found)

    def agent_pid(self, host):
        return procs.read_pid(self.dir / host / "var" / "run" / "sdcadm-agent.pid")

    def server_of(self, pid):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return f"pid {pid}"
        rel = Path(cwd).relative_to(self.dir) if cwd.startswith(str(self.dir)) else None
        return rel.parts[0] if rel else f"pid {pid}"


@pytest.fixture
def new_lab(tmp_path):
    # Three headnodes: the store's etcd members live on them, and hn0's goes
    # down (or freezes) with it; two of three keep the quorum.
    with lab_factory(tmp_path) as up:
        yield lambda services="sapi,ufds": Lab(up(
            "--headnodes", "3", "--computenodes", "0", "--services", services,
            "--heartbeat-interval", "0.5", "--timeout", "90"))


# -- probing and writing from outside -------------------------------------------------------------

def _ping(url):
    try:
        with http_open(url + "/ping", 0.3) as resp:
            return json.loads(resp.read())["pid"] if resp.status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


class Prober:
    """Rounds of /ping of every address the singletons have had; per round,
    {service: {pid: server}} of the processes that answered."""

    def __init__(self, lab):
        self.lab, self.rounds, self.urls = lab, [], {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pool = ThreadPoolExecutor(8)
        self.refresh()

    def refresh(self):
        for inst in self.lab.insts().values():
            if inst["service"] in SINGLETONS:
                self.urls.setdefault(inst["service"], set()).add(inst["url"])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._pool.shutdown()

    def _run(self):
        n = 0
        while not self._stop.is_set():
            n += 1
            if n % 10 == 0:
                try:
                    self.refresh()
                except AssertionError:
                    pass  # the CLI may fail while the store is busy: next time
            todo = [(s, u) for s, urls in self.urls.items() for u in list(urls)]
            pids = list(self._pool.map(lambda su: _ping(su[1]), todo))
            seen = {}
            for (service, _), pid in zip(todo, pids):
                if pid:
                    seen.setdefault(service, {})[pid] = self.lab.server_of(pid)
            self.rounds.append(seen)
            self._stop.wait(PROBE_EVERY)

    def wait_rounds(self, count, refresh=False):
        """``count`` more rounds; ``refresh``: learn the addresses now first (after
        a restore: the rounds' own refresh, every 10th, may meet a busy store)."""
        if refresh:
            self.refresh()
        first = len(self.rounds)
        wait_for(lambda: len(self.rounds) >= first + count, 30, f"{count} more probe rounds")

    def overlaps(self):
        """The rounds in which a singleton answered from two processes (on
        two servers, or twice on one)."""
        return [r for r in self.rounds if any(len(by_pid) > 1 for by_pid in r.values())]

    def servers_seen(self, service):
        return [sorted(set(r.get(service, {}).values())) for r in self.rounds]


class Writer:
    """PUT /data/w-N to sapi's address every 50 ms; ``acked``: [(when, key)]
    of the writes answered 201."""

    def __init__(self, url):
        self.url, self.acked, self.n = url, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def put(self):
        self.n += 1
        key = f"w-{self.n}"
        req = urllib.request.Request(f"{self.url}/data/{key}", data=key.encode(), method="PUT")
        try:
            with http_open(req, 0.5) as resp:
                if resp.status == 201:
                    self.acked.append((time.monotonic(), key))
        except OSError:
            pass

    def _run(self):
        while not self._stop.is_set():
            self.put()
            self._stop.wait(0.05)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def unreadable(self, keys):
        """The keys sapi answers without (404 or another value). A sapi that
        does not answer at the moment (restarting: its lease lapsed on a
        loaded machine) is asked again: only an answer tells a loss."""
        missing = []
        for key in keys:
            got = {}

            def answered():
                try:
                    with http_open(f"{self.url}/data/{key}", 2.0) as resp:
                        got["body"] = resp.read()
                except urllib.error.HTTPError as e:
                    if e.code != 404:
                        return False
                    got["body"] = None
                except OSError:
                    return False
                return True

            wait_for(answered, 30, f"sapi to answer GET {key}", interval=0.2)
            if got["body"] != key.encode():
                missing.append(key)
        return missing


def prepare_writes(lab):
    """Writes acknowledged, then synced to hn1: ([keys], writer still writing)."""
    sapi = next(i for i in lab.insts().values() if i["service"] == "sapi")
    writer = Writer(sapi["url"])
    for _ in range(10):
        writer.put()
    synced = [k for _, k in writer.acked]
    assert len(synced) == 10, "sapi did not acknowledge the first writes"
    lab.sdcadm("service", "sync-restore-data")
    return synced, writer.start()


def check_no_overlap_and_writes(prober, writer, synced, restored_at):
    # The writer's put in flight at the restore may still be timing out
    # against the old address: wait for the first answer from the new one.
    wait_for(lambda: any(t > restored_at for t, _ in writer.acked), 30,
             "a write acknowledged after the restore", interval=0.1)
    writer.stop()
    assert prober.overlaps() == [], "a singleton answered from two processes at once"
    after = [k for t, k in writer.acked if t > restored_at]
    assert writer.unreadable(synced + after) == [], "acknowledged writes were lost"


def freeze(pids, sig=signal.SIGSTOP):
    for pid in pids:
        procs.send(pid, sig)


def wait_silent(lab, host):
    wait_for(lambda: lab.servers()[host]["status"] != "running", 30,
             f"{host}'s heartbeat to go silent", interval=0.2)


def assert_nothing_moved(lab, before):
    now = lab.insts()
    assert {a: (i["hostname"], i["generation"]) for a, i in now.items()} == \
           {a: (i["hostname"], i["generation"]) for a, i in before.items()}
    assert not lab.servers()["hn0"]["fenced"]


# -- the scenarios ----------------------------------------------------------------------------------

def test_hung_agent_is_refused_without_dead_then_fenced_by_its_agent_and_restored(new_lab):
    lab = new_lab()
    synced, writer = prepare_writes(lab)
    before = lab.insts()
    with Prober(lab) as prober:
        freeze([lab.agent_pid("hn0")])            # its instances keep running
        wait_silent(lab, "hn0")
        refused = lab.sdcadm("service", "restore", "--all", "-y", check=False)
        assert refused.returncode == 1
        assert "not restoring from a server that is only silent: hn0" in refused.stderr
        assert "--dead hn0" in refused.stderr
        assert_nothing_moved(lab, before)
        # Nobody renews the instance leases of hn0's singletons: they stop
        # answering by themselves at their lease's end (docs/recovery.md,
        # "Instance leases"), its agent still hung. Restore cannot know that:
        # silence stays no proof, hence the refusal above.
        for service in SINGLETONS:
            prober.wait_rounds(1)
            wait_for(lambda: prober.servers_seen(service)[-1] == [], 30,
                     f"{service} on hn0 to stop answering at its lease's end")
        old = lab.processes("hn0")
        lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y")
        restored_at = time.monotonic()
        assert [p for p in old if not procs.gone(p)] == [], "the fence left hn0 processes"
        prober.wait_rounds(1, refresh=True)
        answers_from_hn1(prober)
    check_no_overlap_and_writes(prober, writer, synced, restored_at)


def answers_from_hn1(prober):
    """Every singleton answers from hn1 (the restore waited for each first
    answer; a lease lapse on hn1 when the fence's kill of hn0's etcd member
    costs an election may restart one there once, which is no overlap: the
    whole run is checked for that)."""
    for service in SINGLETONS:
        wait_for(lambda: prober.servers_seen(service)[-1] == ["hn1"], 30,
                 f"{service} answering from hn1")


def test_frozen_server_is_powered_off_by_its_fence_agent_and_nothing_answers_twice(new_lab):
    lab = new_lab()
    synced, writer = prepare_writes(lab)
    with Prober(lab) as prober:
        frozen = lab.processes("hn0")
        freeze(frozen)
        done = lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y")
        restored_at = time.monotonic()
        assert "fence command succeeded" in done.stderr
        freeze(frozen, signal.SIGCONT)           # a thaw: nothing is left to wake
        assert [p for p in frozen if not procs.gone(p)] == []
        prober.wait_rounds(1, refresh=True)
        answers_from_hn1(prober)
    check_no_overlap_and_writes(prober, writer, synced, restored_at)


def test_frozen_server_without_fence_agent_needs_the_operators_word(new_lab):
    lab = new_lab()
    synced, writer = prepare_writes(lab)
    no_fence = {"SDCADM_FENCING_COMMAND": "null"}
    before = lab.insts()
    with Prober(lab) as prober:
        frozen = lab.processes("hn0")
        freeze(frozen)
        refused = lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y", check=False,
                             **no_fence)
        assert refused.returncode == 1
        assert "no fence command is configured for hn0" in refused.stderr
        assert "--confirm-powered-off hn0" in refused.stderr
        assert_nothing_moved(lab, before)
        assert [p for p in frozen if procs.gone(p)] == []
        # A typo powers nothing off, and says which servers there are.
        typo = run("sdcadm", "lab", "power-off", "--dir", str(lab.dir), "hn9", check=False)
        assert typo.returncode == 1 and "the lab has no server 'hn9'" in typo.stderr
        assert "hn0, hn1" in typo.stderr
        as_agent = subprocess.run([str(BIN / "python"), "-m", "sdcadm.lab.fence", "--dir",
                                   str(lab.dir), "hn9"], capture_output=True, text=True)
        assert as_agent.returncode == 1 and "no server 'hn9'" in as_agent.stderr
        assert [p for p in frozen if procs.gone(p)] == []
        # The operator pulls the plug, checks, and says so.
        run("sdcadm", "lab", "power-off", "--dir", str(lab.dir), "hn0")
        lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "--confirm-powered-off", "hn0",
                   "-y", **no_fence)
        restored_at = time.monotonic()
        prober.wait_rounds(10, refresh=True)
    check_no_overlap_and_writes(prober, writer, synced, restored_at)


@pytest.mark.parametrize("fence, timeout, says", [
    ("[sh, -c, 'echo BMC unreachable >&2; exit 1']", "30",
     ["exited with status 1", "BMC unreachable"]),
    (f"[sleep, '{HANG}']", "1", ["did not finish within 1s and was killed"]),
], ids=["fails", "hangs"])  # stable ids: HANG differs per process (xdist workers)
def test_a_fence_agent_that_fails_or_hangs_moves_nothing(new_lab, fence, timeout, says):
    lab = new_lab()
    before = lab.insts()
    lab.sdcadm("service", "sync-restore-data")
    freeze([lab.agent_pid("hn0")])               # a hung hn0: the case that needs the fence
    wait_silent(lab, "hn0")
    refused = lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y", check=False,
                         SDCADM_FENCING_COMMAND=fence, SDCADM_FENCING_TIMEOUT=timeout)
    assert refused.returncode == 1
    assert "fencing hn0 failed, so nothing was moved off it" in refused.stderr
    for text in says:
        assert text in refused.stderr
    assert_nothing_moved(lab, before)
    # hn0's singletons stop at their lease's end, its agent still hung; the
    # refused restore started none elsewhere: their addresses fall silent.
    for inst in before.values():
        wait_for(lambda: not _ping(inst["url"]), 30, f"{inst['alias']} to stop answering")
    assert_nothing_moved(lab, before)
    assert hung_fence_agents() == [], "the hung fence command was left running"
    freeze([lab.agent_pid("hn0")], signal.SIGCONT)


def _exists(store, uuid):
    try:
        return store.get_instance(uuid)
    except NotFound:
        return None


def hung_fence_agents():
    out = subprocess.run(["pgrep", "-f", f"^sleep {HANG}$"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def test_restore_finishes_a_migrate_the_dead_server_had_replaced(new_lab):
    from sdcadm.procedures.planning import new_uuid_for

    lab = new_lab()
    synced, writer = prepare_writes(lab)
    before = lab.insts()
    hn1 = lab.servers()["hn1"]["uuid"]
    replacement = new_uuid_for(before["ufds0"]["uuid"], hn1)
    with Prober(lab) as prober:
        migrate = subprocess.Popen([str(BIN / "sdcadm"), "service", "migrate", "hn0", "hn1",
                                    "ufds", "-y"], env=lab.env("hn0"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with store_for(lab_store_config(lab.dir)).open() as store:
                wait_for(lambda: _exists(store, replacement) or migrate.poll() is not None, 60,
                         "the migrate to create ufds1 on hn1", interval=0.01)
            assert migrate.poll() is None, "the migrate finished before hn0 could die"
        finally:
            migrate.kill()
            migrate.wait()
        run("sdcadm", "lab", "kill", "--dir", str(lab.dir), "hn0")      # hn0 dies now
        prober.refresh()
        assert before["ufds0"]["params"].get("desired_state") is None
        assert lab.insts()["ufds0"]["params"].get("desired_state") == "stopped"
        done = lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y")
        restored_at = time.monotonic()
        prober.refresh()
        prober.wait_rounds(10, refresh=True)
        # From outside first: ufds answers from hn1 alone, by one process only.
        assert [r["ufds"] for r in prober.rounds if len(r.get("ufds", {})) > 1] == []
        pids = {_ping(before["ufds0"]["url"]), _ping(lab.insts()["ufds1"]["url"])} - {None}
        assert len(pids) == 1, f"two ufds processes answer: {pids}"
        assert prober.servers_seen("ufds")[-1] == ["hn1"]
        assert "finish migrate of ufds0 (keep ufds1)" in done.stderr
        after = lab.insts()
        assert "ufds0" not in after, "the replaced ufds0 must not come back"
        assert after["ufds1"]["hostname"] == "hn1" and after["sapi0"]["hostname"] == "hn1"
    check_no_overlap_and_writes(prober, writer, synced, restored_at)

"""Shared fixtures: real processes only; every test stops what it starts."""

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def have_sshd():
    return shutil.which("sshd") is not None or Path("/usr/sbin/sshd").exists()


needs_sshd = pytest.mark.skipif(
    not have_sshd(), reason="sshd not installed (apt-get install openssh-server; `make test` does it as root)")


def random_net():
    """A /24 inside 127/8 that no other test (nor the default lab) uses."""
    return f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.0/24"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    # The suite's labs are loopback ones unless a test asks for --isolation
    # netns (as root a lab is netns by default): a netns lab costs more to
    # build, and each is built where its network is what is tested.
    env["SDCADM_LAB_ISOLATION"] = "loopback"
    env.update(extra)
    return env


def run(*argv, env=None, check=True, timeout=180):
    """Run an installed console script (sdcadm, sdcadm-agent) as a real process."""
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                          env=env or clean_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def random_address():
    """A loopback address no default lab uses (not 127.99.99.x)."""
    return f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.{random.randint(1, 254)}"


def free_port(addr):
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real LabSshd on a random loopback address, for one test module."""
    from sdcadm.lab.sshd import LabSshd

    addr = random_address()
    lab = LabSshd(tmp_path_factory.mktemp("sshd"), [addr], free_port(addr))
    lab.setup()
    lab.start()
    yield lab
    lab.stop()
    assert not lab.running(), "the lab sshd did not stop"


def wait_for(predicate, timeout=20.0, what="the condition", interval=0.05):
    """Poll ``predicate()`` until it returns something truthy and return that;
    fail saying ``what`` never happened once ``timeout`` seconds pass.

    The honest way for a test to wait for another thread or process: never a
    fixed sleep that hopes the thing happened meanwhile. An exception from
    ``predicate`` counts as "not yet" (the thing may still be starting) and is
    named in the failure.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last, value = e, None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {what} never happened"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


def pinged_by_others(url, times, what, timeout=30.0):
    """Wait until something other than this test (a watcher, a procedure) has
    probed the lab workload at ``url`` ``times`` more times: its /ping counts
    the pings it answers, and this test's own reads are taken off."""
    from sdcadm.health import http_open

    def pings():
        with http_open(url + "/ping", 2.0) as resp:
            return json.loads(resp.read())["pings"]

    first, ours = pings(), [0]

    def enough():
        ours[0] += 1
        return pings() - first - ours[0] >= times

    wait_for(enough, timeout, what)


def kill_when_marked(child, marker, what, timeout=30):
    """SIGKILL ``child`` as soon as it creates ``marker`` (it is in the middle
    of ``what``); fail if it ends first or never gets there."""
    try:
        wait_for(lambda: Path(marker).exists() or child.poll() is not None, timeout,
                 f"{what} getting under way", interval=0.02)
        assert child.poll() is None, f"{what} ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def isolate_cli(monkeypatch, config, now=None):
    """Point the in-process CLI at ``config`` only: no SDCADM_* from the
    environment, and (with ``now``) a fixed clock."""
    from sdcadm.cli import context

    for name in list(os.environ):
        if name.startswith("SDCADM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SDCADM_CONFIG", str(config))
    if now is not None:
        monkeypatch.setattr(context, "now", lambda: now)


@contextlib.contextmanager
def running_lab(directory, *options):
    """``sdcadm lab up --dir DIRECTORY --net <random> OPTIONS...``; on the way
    out, always ``lab down`` and check that nothing of the lab is left."""
    from sdcadm.lab import procs

    try:
        run("sdcadm", "lab", "up", "--dir", str(directory), "--net", random_net(), *options)
        yield directory
    finally:
        run("sdcadm", "lab", "down", "--dir", str(directory), check=False)
        assert procs.lab_processes(directory) == [], "lab down left processes behind"


@contextlib.contextmanager
def lab_factory(tmp_path):
    """``up(*options)`` -> the directory of a new lab, up on a random network
    (``sdcadm lab up OPTIONS...``); on the way out every lab made is stopped
    and must leave no process behind."""
    from sdcadm.lab import procs

    made = []

    def up(*options):
        directory = tmp_path / f"dc{len(made)}"
        made.append(directory)
        run("sdcadm", "lab", "up", "--dir", str(directory), "--net", random_net(), *options)
        return directory

    try:
        yield up
    finally:
        for directory in made:
            run("sdcadm", "lab", "down", "--dir", str(directory), check=False)
            assert procs.lab_processes(directory) == [], \
                f"lab down left processes of {directory}"


def env_of(directory, hostname):
    """The CLI environment of a lab server (as `eval "$(sdcadm lab env ...)"`)."""
    return clean_env(SDCADM_CONFIG=str(Path(directory) / hostname / "etc" / "sdcadm.yaml"))


# -- the DC store: one place that knows each backend ---------------------------------------

# Every backend the store contract (tests/unit/test_store_contract.py) runs on:
# a new backend is one more name here and one branch in each helper below.
STORE_BACKENDS = ["sqlite", "etcd"]

# A backend run on a real server process is an integration test: the fast loop
# (`pytest -m 'not integration'`) starts no process, so it runs the contract on
# sqlite alone; `pytest tests/unit/test_store_contract.py` runs every backend.
_BACKEND_MARKS = {"etcd": [pytest.mark.integration, pytest.mark.etcd]}

_ETCD = []  # the session's EtcdServer, once the etcd_server fixture started it


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    """One real etcd for the whole session, on a random loopback address; every
    test keeps its keys under its own prefix (``store_config``)."""
    from tests.etcd_server import ETCD, NO_ETCD, EtcdServer

    if ETCD is None:
        pytest.skip(NO_ETCD)
    address = random_address()
    server = EtcdServer(tmp_path_factory.mktemp("etcd"), address, free_port(address),
                        free_port(address))
    server.start()
    _ETCD.append(server)
    try:
        yield server
    finally:
        _ETCD.remove(server)
        proc = server.proc
        server.stop()
        assert proc is None or proc.poll() is not None, "etcd did not stop"


class FakeClock:
    """The store's clock in tests: time moves only when told (no sleeps)."""

    def __init__(self, now=1_000_000.0):
        self.t = float(now)

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


def heartbeat_at(store, clock, server_uuid, when):
    """A heartbeat of ``server_uuid`` as if made at ``when``, by a ``store``
    running on ``clock`` (a FakeClock), which is left as it was."""
    saved, clock.t = clock.t, when
    try:
        store.heartbeat(server_uuid)
    finally:
        clock.t = saved


def store_config(directory, backend="sqlite"):
    """A configuration naming a store of ``backend`` kept under ``directory``."""
    from sdcadm.config import config_from

    if backend == "sqlite":
        doc = {"backend": "sqlite", "path": str(Path(directory) / "dc.sqlite")}
    elif backend == "etcd":
        if not _ETCD:
            raise ValueError("no etcd runs: use the etcd_server (or store_backend) fixture")
        # The directory names the DC, as the sqlite file does: each test's own keys.
        digest = hashlib.sha1(str(Path(directory).resolve()).encode()).hexdigest()[:16]
        doc = {"backend": "etcd", "etcd_endpoints": [_ETCD[0].endpoint],
               "etcd_prefix": f"/t/{digest}/", "timeout": 5.0}
    else:
        raise ValueError(f"no test setup for store backend {backend!r}")
    return config_from({"store": doc}, f"test store in {directory}")


def store_at(path, clock=None, create=False):
    """The sqlite store file ``path`` (tests whose config files name it), opened
    through the public API; ``create``: initialise it first."""
    from sdcadm.config import config_from
    from sdcadm.store import store_for

    config = config_from({"store": {"backend": "sqlite", "path": str(path)}}, "test")
    store = store_for(config, clock=clock)
    return store.initialize() if create else store.open()


def lab_store_config(directory):
    """The store configuration of the lab at ``directory`` (as its servers have it)."""
    from sdcadm.config import config_from
    from sdcadm.lab.state import load_state

    return config_from({"store": load_state(directory).store_config()}, f"lab {directory}")


@pytest.fixture(params=[pytest.param(b, marks=_BACKEND_MARKS.get(b, ())) for b in STORE_BACKENDS])
def store_backend(request):
    if request.param == "etcd":
        request.getfixturevalue("etcd_server")
    return request.param


def expire_lock(store, clock, name):
    """Let lock ``name`` of ``store`` run out (its owner stopped renewing it).
    sqlite: its clock moves past the expiry. etcd: liveness is etcd's lease,
    not a clock; the lease ends now, as etcd ends it when its TTL is over
    (tests/integration/test_store_etcd.py checks that a TTL does run out)."""
    owner, expires_at, token = store.get_lock(name)
    clock.t = max(clock.t, expires_at + 0.01)
    if store.backend == "etcd":
        _ETCD[0].revoke_lease_of(store.keys.lock(name))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(store_backend, tmp_path, clock):
    """A new, initialised, empty store of every backend, on the ``clock`` fixture."""
    from sdcadm.store import store_for

    s = store_for(store_config(tmp_path, store_backend), clock=clock).initialize()
    yield s
    s.close()


@contextlib.contextmanager
def store_outage(config):
    """The store ``config`` names is out of every client's reach inside the block
    (sqlite: its file moved away, as a lost disk would; etcd: its member frozen),
    and back after it."""
    if config.store.backend == "etcd":
        # Frozen, not stopped: clients meet a member that accepts connections
        # and answers nothing, the hardest case for their timeouts.
        servers = [s for s in _ETCD if s.endpoint in config.store.etcd_endpoints]
        if not servers:  # a lab's members: every one of them, found by its address
            pids = [p for p in _etcd_members(config.store.etcd_endpoints)]
            assert pids, f"no etcd member runs at {config.store.etcd_endpoints}"
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                yield
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            return
        servers[0].pause()
        try:
            yield
        finally:
            servers[0].resume()
        return
    if config.store.backend != "sqlite":
        raise ValueError(f"no outage helper for store backend {config.store.backend!r}")
    path = Path(config.store.path)
    aside = path.with_name(path.name + ".outage")
    os.rename(path, aside)
    try:
        yield
    finally:
        os.rename(aside, path)


def _etcd_members(endpoints):
    """Pids of the etcd processes serving clients at ``endpoints``."""
    urls = {f"http://{e}".encode() for e in endpoints}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"etcd") and "--listen-client-urls" in \
                [a.decode(errors="replace") for a in argv]:
            if argv[argv.index(b"--listen-client-urls") + 1] in urls:
                found.append(int(entry.name))
    return found


def store_idle(config):
    """True if no client is inside a write transaction now: a process paused at
    such an instant holds up nobody else (sqlite has one writer at a time)."""
    import sqlite3

    if config.store.backend != "sqlite":
        return True  # backends with many writers are never held up by a paused one
    conn = sqlite3.connect(config.store.path, timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()



@pytest.fixture(scope="module", autouse=True)
def one_zfs_module_at_a_time(request):
    """`make test` runs two pytest-xdist workers, each taking whole files
    (``--dist loadfile``: a module's tests share its labs). The zfs modules
    also share the machine's one zfs-fuse daemon, which the lab that started
    it stops: a module marked zfs holds this machine-wide lock while it runs."""
    if request.node.get_closest_marker("zfs") is None:
        yield
        return
    import fcntl

    with open("/tmp/sdcadm-tests-zfs.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

"""The agent's side of instance leases: which leased processes to stop when,
stopping them all at once (real processes: one ignores SIGTERM), and the
keeper renewing, revoking and ending leases."""

import os
import signal
import subprocess
import sys
import threading

from sdcadm import instance_lease
from sdcadm.agent import process
from sdcadm.agent.leases import LeaseKeeper, stop_due
from sdcadm.agent.provision import Layout
from tests.conftest import wait_for

UUID = "00000000-0000-0000-0000-00000000000{}"

# A process that writes "ready", then on SIGTERM writes "term" and, unless told
# to ignore it, exits; ``alive_of`` (a pid): on SIGTERM it also records whether
# that process was still alive then.
CHILD = r"""
import os, signal, sys, time
out, ignore, other = sys.argv[1], sys.argv[2] == "ignore", int(sys.argv[3])
def on_term(*_):
    alive = other and os.path.exists(f"/proc/{other}") and \
        open(f"/proc/{other}/stat").read().rsplit(")", 1)[1].split()[0] not in "ZX"
    open(out + ".term", "w").write("other-alive" if alive else "other-gone")
    if not ignore:
        os._exit(0)
signal.signal(signal.SIGTERM, on_term)
open(out + ".ready", "w").write("")
while True:
    time.sleep(0.05)
"""


def child(tmp_path, name, ignore=False, other=0, uuid=None):
    env = dict(os.environ)
    if uuid:
        env["SDC_INSTANCE_UUID"] = uuid
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / name),
                             "ignore" if ignore else "obey", str(other)], env=env)
    wait_for(lambda: (tmp_path / f"{name}.ready").exists(), 20, f"{name} ready")
    return proc


# -- the decision ---------------------------------------------------------------------

def test_nothing_is_due_before_the_lead():
    assert stop_due({"a": 10.0}, now=7.9, stop_lead=2.0, stop_timeout=5.0) == {}


def test_due_ones_are_killed_at_their_lease_end_at_the_latest():
    got = stop_due({"a": 10.0, "b": 10.5, "c": 30.0}, now=8.6, stop_lead=2.0, stop_timeout=5.0)
    assert got == {"a": 10.0, "b": 10.5}


def test_the_kill_comes_at_most_stop_timeout_after_the_sigterm():
    assert stop_due({"a": 10.0}, now=9.0, stop_lead=5.0, stop_timeout=0.5) == {"a": 9.5}


def test_an_expired_or_revoked_lease_is_killed_now():
    assert stop_due({"a": 3.0, "b": instance_lease.REVOKED}, now=9.0, stop_lead=1.0,
                    stop_timeout=5.0) == {"a": 3.0, "b": 0.0}


# -- stopping all at once (real processes) -------------------------------------------

def test_stop_all_terms_everyone_before_killing_anyone(tmp_path):
    stubborn = child(tmp_path, "stubborn", ignore=True)
    polite = child(tmp_path, "polite", other=stubborn.pid)
    fds = {process.open_pidfd(stubborn.pid): 1.0, process.open_pidfd(polite.pid): 1e18}
    # The clock reaches the stubborn one's kill time only once both have
    # answered their SIGTERM: a stop one after the other would never get there.
    terms = [tmp_path / "polite.term", tmp_path / "stubborn.term"]
    try:
        stuck = []
        done = threading.Thread(target=lambda: stuck.extend(
            process.stop_all(fds, lambda: 2.0 if all(t.exists() for t in terms) else 0.0, kill_wait=30)))
        done.start()
        done.join(30)
        assert not done.is_alive() and stuck == [], "stop_all did not stop both"
    finally:
        for fd in fds:
            os.close(fd)
        for p in (stubborn, polite):
            if p.poll() is None:
                p.kill()
    assert stubborn.wait(10) == -signal.SIGKILL
    assert polite.wait(10) == 0
    assert (tmp_path / "stubborn.term").read_text() == "other-gone", \
        "the stubborn one got SIGTERM"
    # The polite one got its SIGTERM while the stubborn one still lived: not
    # one after the other (that would have killed the stubborn one first).
    assert (tmp_path / "polite.term").read_text() == "other-alive"


def test_stop_all_of_processes_already_gone_returns(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    fd = process.open_pidfd(proc.pid)
    proc.wait()
    try:
        assert process.stop_all({fd: 0.0}, lambda: 1.0) == []
    finally:
        os.close(fd)
    assert process.open_pidfd(proc.pid) is None


# -- the keeper -------------------------------------------------------------------------

def keeper(tmp_path, clock, lease=10.0, lead=2.0):
    layout = Layout(tmp_path / "root")
    return LeaseKeeper(layout, lease, lead, stop_timeout=5.0, clock=lambda: clock[0])


def test_renew_writes_owned_leases_and_revokes_the_others(tmp_path):
    clock = [100.0]
    k = keeper(tmp_path, clock)
    a, b = UUID.format(1), UUID.format(2)
    for uuid in (a, b):
        k.layout.zone(uuid).mkdir(parents=True)
    k.renew(100.0, {a, b})
    procs = [child(tmp_path, n, uuid=u) for n, u in (("a", a), ("b", b))]
    try:
        assert k.grant(a) == k.path(a)
        for uuid, proc in zip((a, b), procs):
            k.attach(uuid, uuid, proc.pid)
        assert k.leased() == {a, b}
        k.renew(103.0, {a})
        assert instance_lease.read(k.path(a), a) == (113.0, None)
        assert instance_lease.read(k.path(b), b) == (instance_lease.REVOKED, None)
        assert k.held() and not k.ending()
        k.renew(90.0, {a})  # an older confirmation never shortens the lease
        assert k.deadline() == 113.0
        clock[0] = 111.0
        assert k.ending() and not k.held()
        k.release(a)
        assert instance_lease.read(k.path(a), a) == (instance_lease.REVOKED, None)
        assert k.leased() == {b}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_an_ownership_read_older_than_a_start_does_not_revoke_it(tmp_path):
    """The heartbeat thread read ownership at 100; the supervisor then started
    c (just restored here) at 101: that read cannot revoke c's lease, a read
    begun after its start can."""
    clock = [100.0]
    k = keeper(tmp_path, clock)
    c = UUID.format(5)
    k.layout.zone(c).mkdir(parents=True)
    k.renew(99.0, set())
    clock[0] = 101.0
    proc = child(tmp_path, "c", uuid=c)
    try:
        k.grant(c)
        k.attach(c, c, proc.pid)
        k.renew(100.0, set())                  # stale: begun before c started
        assert instance_lease.read(k.path(c), c) == (109.0, None)
        k.renew(102.0, set())                  # begun after: c lives elsewhere now
        assert instance_lease.read(k.path(c), c) == (instance_lease.REVOKED, None)
    finally:
        proc.kill()
        proc.wait()


def test_the_keeper_stops_a_sigterm_ignoring_instance_by_its_lease_end(tmp_path):
    clock = [100.0]
    k = keeper(tmp_path, clock)
    uuid = UUID.format(3)
    k.layout.zone(uuid).mkdir(parents=True)
    k.renew(100.0, {uuid})
    proc = child(tmp_path, "stubborn", ignore=True, uuid=uuid)
    k.attach(uuid, "stubborn", proc.pid)
    stop = threading.Event()
    thread = threading.Thread(target=k.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert not k.stop_expired()            # 10 s of lease left
        clock[0] = 108.5                       # within the 2 s lead: SIGTERM
        wait_for(lambda: (tmp_path / "stubborn.term").exists(), 20, "SIGTERM at the lead")
        assert proc.poll() is None, "killed before the lease's end"
        clock[0] = 110.0                       # the lease's end: SIGKILL
        assert proc.wait(20) == -signal.SIGKILL
    finally:
        stop.set()
        thread.join(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_renewal_that_changes_no_deadline_writes_no_file(tmp_path, monkeypatch):
    """A supervisor pass renews from the last heartbeat, no later: during a
    restore, passes come many a second and must not rewrite every lease."""
    clock = [100.0]
    k = keeper(tmp_path, clock)
    a = UUID.format(7)
    k.layout.zone(a).mkdir(parents=True)
    k.renew(100.0, {a})
    proc = child(tmp_path, "a", uuid=a)
    try:
        k.grant(a)
        k.attach(a, a, proc.pid)
        writes = []
        real = instance_lease.write
        monkeypatch.setattr(instance_lease, "write",
                            lambda path, deadline, uuid: (writes.append(deadline),
                                                          real(path, deadline, uuid)))
        k.renew(99.0, {a})          # older than what holds: nothing to write
        k.renew(100.0, {a})         # the same confirmation again: nothing either
        assert writes == []
        k.renew(101.0, {a})         # a newer heartbeat: written
        assert writes == [111.0] and instance_lease.read(k.path(a), a) == (111.0, None)
    finally:
        proc.kill()
        proc.wait()

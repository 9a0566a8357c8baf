"""The instance lease library (sdcadm/instance_lease.py): valid only while a
well-formed file of this boot, clock and instance holds a deadline ahead;
everything else is "not valid" (fail safe)."""

import json
import math

import pytest

from sdcadm import instance_lease as il

UUID = "00000000-0000-0000-0000-000000000001"


def lease_at(tmp_path, deadline, instance=UUID):
    path = tmp_path / "lease"
    il.write(path, deadline, instance)
    return path


def doc_at(tmp_path, **changes):
    path = lease_at(tmp_path, il.now() + 60)
    doc = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(doc))
    return path


def test_a_lease_ahead_is_valid_and_one_behind_is_not(tmp_path):
    assert il.LeaseGuard(lease_at(tmp_path, il.now() + 60), UUID).valid()
    guard = il.LeaseGuard(lease_at(tmp_path, il.now() - 0.001), UUID)
    assert not guard.valid() and guard.reason == "the lease expired"


def test_the_deadline_is_read_on_the_clock_given(tmp_path):
    path = lease_at(tmp_path, 100.0)
    assert il.LeaseGuard(path, UUID, clock=lambda: 99.9).valid()
    assert not il.LeaseGuard(path, UUID, clock=lambda: 100.0).valid()


def test_once_invalid_a_guard_stays_invalid(tmp_path):
    path = lease_at(tmp_path, 100.0)
    guard = il.LeaseGuard(path, UUID, clock=lambda: 101.0)
    assert not guard.valid()
    il.write(path, 1e9, UUID)
    guard.clock = lambda: 0.0
    assert not guard.valid(), "a fenced instance must never serve again"


def test_a_revoked_lease_is_not_valid(tmp_path):
    guard = il.LeaseGuard(lease_at(tmp_path, il.REVOKED), UUID)
    assert not guard.valid() and "revoked" in guard.reason


def test_not_leased_is_always_valid(tmp_path):
    assert il.LeaseGuard(None).valid()
    assert il.LeaseGuard.from_env({}).leased is False
    assert il.LeaseGuard.from_env({}).watch(lambda r: None) is None


def test_missing_file_is_not_valid(tmp_path):
    guard = il.LeaseGuard(tmp_path / "nothing", UUID)
    assert not guard.valid() and "cannot read" in guard.reason


@pytest.mark.parametrize("content", [
    b"", b"garbage", b"\xff\xfe\x00", b"[]", b"null", b'{"version": 2}',
    b"x" * (il.MAX_BYTES + 1),
])
def test_garbage_is_not_valid(tmp_path, content):
    path = tmp_path / "lease"
    path.write_bytes(content)
    guard = il.LeaseGuard(path, UUID)
    assert not guard.valid() and guard.reason


@pytest.mark.parametrize("changes, why", [
    ({"deadline": "9e99"}, "not a number"),
    ({"deadline": None}, "not a number"),
    ({"deadline": True}, "not a number"),
    ({"deadline": math.nan}, "not a number"),
    ({"deadline": math.inf}, "not a number"),
    ({"deadline": 1e300}, "ahead"),
    ({"deadline": -5.0}, "expired"),
    ({"boot_id": "another-boot"}, "another clock or boot"),
    ({"clock": "realtime"}, "another clock or boot"),
    ({"instance": "00000000-0000-0000-0000-000000000002"}, "another instance"),
])
def test_tampered_values_are_not_valid(tmp_path, changes, why):
    guard = il.LeaseGuard(doc_at(tmp_path, **changes), UUID)
    assert not guard.valid()
    assert why in guard.reason


def test_far_future_is_refused_but_a_day_is_not(tmp_path):
    assert il.LeaseGuard(lease_at(tmp_path, il.now() + il.MAX_AHEAD - 10), UUID).valid()
    assert not il.LeaseGuard(lease_at(tmp_path, il.now() + il.MAX_AHEAD + 10), UUID).valid()


def test_from_env_and_lease_valid(tmp_path, monkeypatch):
    path = lease_at(tmp_path, il.now() + 60)
    monkeypatch.setenv(il.ENV, str(path))
    monkeypatch.setenv(il.ENV_UUID, UUID)
    assert il.lease_valid()
    monkeypatch.setenv(il.ENV_UUID, "00000000-0000-0000-0000-000000000009")
    assert not il.lease_valid()
    monkeypatch.delenv(il.ENV)
    assert il.lease_valid(), "an instance started without a lease is not leased"
    assert not il.lease_valid(tmp_path / "nothing")


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = lease_at(tmp_path, 5.0)
    il.write(path, 6.0, UUID)
    assert [p.name for p in tmp_path.iterdir()] == ["lease"]
    assert il.read(path, UUID) == (6.0, None)


def test_watch_calls_back_once_the_lease_ends(tmp_path):
    import threading

    clock = [0.0]
    ended = threading.Event()
    guard = il.LeaseGuard(lease_at(tmp_path, 10.0), UUID, clock=lambda: clock[0])
    thread = guard.watch(lambda reason: ended.set(), interval=0.01)
    assert not ended.is_set()
    clock[0] = 10.0
    assert ended.wait(10), "the watch thread never saw the lease end"
    thread.join(10)


def test_an_idle_watch_wakes_at_the_deadline_not_a_poll_later(tmp_path):
    """The watch sleeps until the lease's own deadline (real clock here): an
    interval far longer than the lease does not make the instance outlive it."""
    import threading
    import time

    ended = threading.Event()
    guard = il.LeaseGuard(lease_at(tmp_path, il.now() + 0.3), UUID)
    started = time.monotonic()
    guard.watch(lambda reason: ended.set(), interval=60.0)
    assert ended.wait(30), "the watch thread never saw the lease end"
    assert time.monotonic() - started < 30  # woke at the deadline, not after 60 s
    assert guard.reason == "the lease expired" and guard.left() == 0.0


def test_boot_id_is_read_once(monkeypatch):
    first = il.boot_id()
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no")))
    assert il.boot_id() == first

"""Waiting for an instance to answer stops early when its agent says it never will."""

import pytest

from sdcadm.procedures import waits
from sdcadm.procedures.waits import POLL_CONNECT, WaitTimeout, wait_healthy_unless


class Clock:
    """A clock that advances by each sleep: no test waits for real."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    real = waits.wait_for
    monkeypatch.setattr(waits, "wait_for", lambda check, timeout, what, interval=waits.POLL:
                        real(check, timeout, what, interval, clock=c, sleep=c.sleep))
    return c


def test_a_refusal_stops_the_wait_with_its_reason(clock):
    asked = []

    def refusal():
        asked.append(clock.now)
        return "provisioning failed: refusing to restore sapi0 (sapi)" if len(asked) == 2 else None

    _, reason = wait_healthy_unless("http://x/ping", 120, "sapi0", probe=down,
                                    refusal=refusal, every=3)
    assert reason.startswith("provisioning failed: refusing to restore sapi0")
    assert len(asked) == 2          # asked every 3rd probe, not at each one


def test_healthy_wins_and_no_refusal_means_the_usual_timeout(clock):
    assert wait_healthy_unless("http://x/ping", 5, probe=lambda u, timeout, connect_timeout: None,
                               refusal=lambda: "never asked")[1] is None
    with pytest.raises(WaitTimeout, match="last answer: down"):
        wait_healthy_unless("http://x/ping", 5, "sapi0", probe=down, refusal=lambda: None)


def down(url, timeout, connect_timeout):
    return "down"


def test_each_poll_gives_up_a_connection_not_made_quickly(clock):
    """A SYN dropped before the instance claimed its address is sent again
    by TCP only after 1 s: the poll gives the connection POLL_CONNECT and
    tries again, while an answer may take the whole second."""
    asked = []

    def probe(url, timeout, connect_timeout):
        asked.append((timeout, connect_timeout))
        return None if len(asked) == 3 else "cannot reach: no connection within 0.1s"

    wait_healthy_unless("http://x/ping", 5, probe=probe)
    assert asked == [(1.0, POLL_CONNECT)] * 3 and POLL_CONNECT < 1.0

"""Waiting for an instance to answer stops early when its agent says it never will."""

import pytest

from sdcadm.procedures import waits
from sdcadm.procedures.waits import WaitTimeout, wait_healthy_unless


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

    _, reason = wait_healthy_unless("http://x/ping", 120, "sapi0", probe=lambda u, timeout: "down",
                                    refusal=refusal, every=3)
    assert reason.startswith("provisioning failed: refusing to restore sapi0")
    assert len(asked) == 2          # asked every 3rd probe, not at each one


def test_healthy_wins_and_no_refusal_means_the_usual_timeout(clock):
    assert wait_healthy_unless("http://x/ping", 5, probe=lambda u, timeout: None,
                               refusal=lambda: "never asked")[1] is None
    with pytest.raises(WaitTimeout, match="last answer: down"):
        wait_healthy_unless("http://x/ping", 5, "sapi0", probe=lambda u, timeout: "down",
                            refusal=lambda: None)

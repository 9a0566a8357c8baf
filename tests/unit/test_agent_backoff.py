import pytest

from sdcadm.agent.backoff import CAP, RESET_AFTER, after_exit, restart_delay


def test_schedule_doubles_from_half_a_second_to_thirty():
    assert [restart_delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_no_failure_no_delay_and_huge_counts_stay_capped():
    assert restart_delay(0) == 0.0
    assert restart_delay(10_000) == CAP


def test_consecutive_quick_deaths_back_off():
    failures, delays = 0, []
    for _ in range(4):
        failures, delay = after_exit(failures, uptime=1.0)
        delays.append(delay)
    assert (failures, delays) == (4, [0.5, 1, 2, 4])


@pytest.mark.parametrize("uptime", [RESET_AFTER, RESET_AFTER + 1, 3600])
def test_a_minute_of_uptime_resets_the_schedule(uptime):
    assert after_exit(7, uptime) == (1, 0.5)


def test_just_under_a_minute_does_not_reset():
    assert after_exit(3, RESET_AFTER - 0.1) == (4, 4)

"""Restart backoff for instance processes: pure arithmetic, no clock.

A process that dies is restarted after 0.5 s, then 1 s, 2 s, ... up to 30 s
for each further consecutive death. A process that stayed up for 60 s or
more is considered healthy again: its next death starts over at 0.5 s.
"""

BASE = 0.5
CAP = 30.0
RESET_AFTER = 60.0


def restart_delay(failures, base=BASE, cap=CAP):
    """Seconds to wait before the next start after ``failures`` consecutive deaths."""
    if failures <= 0:
        return 0.0
    # Cap the exponent too, so a long crash loop cannot overflow the float.
    return min(base * 2 ** min(failures - 1, 32), cap)


def after_exit(failures, uptime, reset_after=RESET_AFTER):
    """The new consecutive-failure count and the delay, once a process died
    after running ``uptime`` seconds, having had ``failures`` deaths before."""
    failures = 1 if uptime >= reset_after else failures + 1
    return failures, restart_delay(failures)

"""Waiting for the DC to reach a state, and measuring how long it took.

Procedures poll; they never sleep blindly. Everything here takes a clock and a
sleep so that unit tests can drive it without waiting.
"""

import time

from sdcadm.errors import SdcadmError
from sdcadm.health import probe

POLL = 0.05


class WaitTimeout(SdcadmError):
    """Something the procedure waited for did not happen in time."""


def wait_for(check, timeout, what, interval=POLL, clock=time.monotonic, sleep=time.sleep):
    """Call ``check()`` until it returns something truthy; return (value, seconds).

    WaitTimeout names ``what`` and the last answer when ``timeout`` passes.
    """
    start = clock()
    while True:
        value = check()
        if value:
            return value, clock() - start
        if clock() - start > timeout:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}",
                              hint="re-run the same command to finish the job once the cause "
                                   "is fixed; see the agent log of the server concerned")
        sleep(interval)


def wait_healthy(url, timeout, what=None, interval=POLL, probe=probe):
    """Wait until ``url`` answers 2xx; return seconds waited. ``probe(url,
    timeout)``: None when healthy, else why not (a context's ``prober.probe``)."""
    last = {}

    def check():
        last["error"] = probe(url, timeout=1.0)
        return last["error"] is None

    try:
        return wait_for(check, timeout, what or url, interval)[1]
    except WaitTimeout as e:
        raise WaitTimeout(f"{e.message} (last answer: {last.get('error')})", hint=e.hint) from None

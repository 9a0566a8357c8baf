"""Waiting for the DC to reach a state, and measuring how long it took.

Procedures poll; they never sleep blindly. Everything here takes a clock and a
sleep so that unit tests can drive it without waiting.
"""

import time

from sdcadm.errors import SdcadmError
from sdcadm.health import probe

POLL = 0.05
# A poll waiting for an address to answer gives up a connection not made in
# this long (health.probe: a SYN dropped before the address was claimed is
# sent again by TCP only after 1 s); the next poll tries again.
POLL_CONNECT = 0.1
REFUSAL_EVERY = 10   # health probes between two questions to an agent (wait_healthy_unless)


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
    return wait_healthy_unless(url, timeout, what, interval, probe)[0]


def wait_healthy_unless(url, timeout, what=None, interval=POLL, probe=probe, refusal=None,
                        every=REFUSAL_EVERY):
    """``wait_healthy``, but stop early when ``refusal()`` (asked every
    ``every`` polls: it is a call to an agent) gives a reason why the instance
    will never answer, e.g. its agent refused its restore data. Return
    (seconds waited, None) or (seconds waited, that reason)."""
    last, polls = {}, [0]

    def check():
        last["error"] = probe(url, timeout=1.0, connect_timeout=POLL_CONNECT)
        if last["error"] is None:
            return True
        polls[0] += 1
        if refusal is not None and polls[0] % every == 0:
            last["refused"] = refusal()
        return bool(last.get("refused"))

    try:
        waited = wait_for(check, timeout, what or url, interval)[1]
    except WaitTimeout as e:
        raise WaitTimeout(f"{e.message} (last answer: {last.get('error')})", hint=e.hint) from None
    return waited, last.get("refused")

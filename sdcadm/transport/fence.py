"""Running a fence agent: the command that powers a server off (Pacemaker's STONITH).

``CommandFencer.run(argv, timeout)`` runs one fence command on this machine
and says how it ended; it decides nothing. The command gets its own session
(so a hung one is killed with everything it started), no stdin, and at most
``timeout`` seconds: then it is SIGKILLed and the outcome says it timed out.
A fake with the same ``run`` stands in for it in unit tests.
"""

import os
import signal
import subprocess
import time
from dataclasses import dataclass

from sdcadm.transport.local import die_with_parent

_TAIL = 2000  # characters of stderr/stdout kept for the error message


@dataclass(frozen=True)
class FenceOutcome:
    argv: tuple
    returncode: int | None     # None: it never ran, or it was killed at the timeout
    elapsed_s: float
    timed_out: bool = False
    stderr: str = ""           # the tail of what it wrote
    stdout: str = ""
    error: str | None = None   # it could not be started: why

    @property
    def ok(self):
        return self.returncode == 0 and not self.timed_out and self.error is None


def _tail(data):
    text = (data or b"").decode(errors="replace").strip()
    return text[-_TAIL:]


class CommandFencer:
    """Fence commands as child processes of this one."""

    def run(self, argv, timeout):
        argv = tuple(str(a) for a in argv)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    close_fds=True, preexec_fn=die_with_parent)
        except OSError as e:
            return FenceOutcome(argv, None, time.monotonic() - started,
                                error=f"cannot run {argv[0]}: {e.strerror or e}")
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its whole session: what it started too
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            return FenceOutcome(argv, None, time.monotonic() - started, timed_out=True,
                                stderr=_tail(err), stdout=_tail(out))
        return FenceOutcome(argv, proc.returncode, time.monotonic() - started,
                            stderr=_tail(err), stdout=_tail(out))

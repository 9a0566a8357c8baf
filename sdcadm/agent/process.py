"""One instance process: spawn it, watch it, stop it.

Instances are started in the agent's own process group (no new session), so
that killing a server's process group takes its instances down with it, as
pulling the plug on a real server would. The agent reaps its children by
polling them; processes left by a previous agent run are found through their
pidfile and recognised by ``SDC_INSTANCE_UUID`` in ``/proc/<pid>/environ``.
"""

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sdcadm.errors import AgentError

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
# Environment passed through from the agent; everything else is set explicitly.
PASS_ENV = ("LANG", "LC_ALL", "TZ")


def instance_path(environ_path=None):
    """PATH for instances: the agent's own Python first, then the usual PATH."""
    rest = environ_path if environ_path is not None else os.environ.get("PATH", os.defpath)
    return os.pathsep.join([os.path.dirname(sys.executable), rest])


def resolve_command(argv, path):
    """argv with argv[0] resolved on ``path``; AgentError when not found."""
    exe = argv[0]
    found = shutil.which(exe, path=path) if os.sep not in exe else None
    if found is None and os.sep not in exe:
        raise AgentError(f"command {exe!r} of the image manifest is not on PATH ({path})")
    return [found or exe, *argv[1:]]


def instance_env(values, extra=None, environ=None):
    """The environment of an instance process: a small fixed base, the payload's
    ``env`` and the ``SDC_INSTANCE_*`` variables (which win)."""
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in PASS_ENV if k in environ}
    env["PATH"] = instance_path(environ.get("PATH"))
    env.update(extra or {})
    env.update({f"SDC_INSTANCE_{k.upper()}": str(v) for k, v in values.items()})
    return env


class InstanceProcess:
    """A running instance that is this agent's child."""

    def __init__(self, popen, started_at):
        self.popen = popen
        self.pid = popen.pid
        self.started_at = started_at

    def poll(self):
        """None while running (reaps it once it has died), else the exit status."""
        return self.popen.poll()

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL after ``timeout`` s; always reaps."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        try:
            self.popen.send_signal(signal.SIGTERM)
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("instance process %d ignored SIGTERM for %.0f s; sending SIGKILL",
                        self.pid, timeout, extra={"pid": self.pid, "event": "sigkill"})
            self.popen.kill()
            return self.popen.wait()


def spawn(argv, cwd, env, log_path, started_at):
    """Start ``argv`` with stdout and stderr appended to ``log_path``."""
    with open(log_path, "ab") as out:
        try:
            popen = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, close_fds=True)
        except OSError as e:
            raise AgentError(f"cannot start {argv[0]}: {e.strerror or e}") from None
    return InstanceProcess(popen, started_at)


def describe_exit(status):
    if status is None:
        return "running"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


# -- processes of a previous agent run ------------------------------------------------


def read_pidfile(path):
    try:
        pid = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 1 else None


def pid_alive(pid):
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def pid_is_instance(pid, uuid):
    """True if ``pid`` is alive and was started for instance ``uuid``."""
    if not pid_alive(pid):
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"SDC_INSTANCE_UUID={uuid}".encode() in environ.split(b"\0")


def stop_pid(pid, uuid, timeout=STOP_TIMEOUT, poll=0.05):
    """Stop a process that is not our child (SIGTERM, then SIGKILL). It is only
    signalled while it still is instance ``uuid``'s, so a recycled pid is safe."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        if not pid_is_instance(pid, uuid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(poll)
    if pid_alive(pid):
        raise AgentError(f"process {pid} of instance {uuid} survived SIGKILL")


# -- stopping many at once, race-free ---------------------------------------------------


def open_pidfd(pid, uuid=None):
    """A pidfd of ``pid`` (which then always names that very process, even
    once its pid is reused), or None when it is gone. With ``uuid``, only if
    the process is instance ``uuid``'s (checked after opening, so a pid
    recycled in between is not taken)."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    if uuid is not None and not pid_is_instance(pid, uuid):
        os.close(fd)
        return None
    return fd


def _signal(pidfd, sig):
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except (ProcessLookupError, OSError):
        pass  # already gone (or a zombie waiting to be reaped)


def _exited(pidfds, timeout):
    """The pidfds among ``pidfds`` whose process has ended (a pidfd polls
    readable then), waiting up to ``timeout`` s for the first one."""
    if not pidfds:
        return set()
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(max(0, int(timeout * 1000)))}


def stop_all(targets, clock, kill_wait=STOP_TIMEOUT):
    """Stop many processes at once: SIGTERM to every one now, then SIGKILL to
    each survivor at its own ``kill_at`` (a ``clock()`` reading). ``targets``:
    {pidfd: kill_at}. Returns the pidfds of processes that outlived their
    SIGKILL by ``kill_wait`` s (none, unless the kernel is stuck). Does not
    reap: the supervisor reaps its children as it always does."""
    pending = dict(targets)
    for fd in pending:
        _signal(fd, signal.SIGTERM)
    killed = {}
    while pending:
        now = clock()
        for fd in [fd for fd, at in pending.items() if at <= now and fd not in killed]:
            _signal(fd, signal.SIGKILL)
            killed[fd] = now
        stuck = [fd for fd, at in killed.items() if now - at > kill_wait]
        if stuck:
            log.error("%d process(es) outlived SIGKILL by %.0f s", len(stuck), kill_wait,
                      extra={"event": "sigkill-stuck"})
            return stuck
        waits = [at - now for fd, at in pending.items() if fd not in killed]
        # short polls: ``clock`` is read again each round (and may be a test's)
        for fd in _exited(list(pending), min(waits + [0.1])):
            pending.pop(fd, None)
            killed.pop(fd, None)
    return []

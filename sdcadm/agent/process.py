"""One instance process: spawn it, watch it, stop it.

Instances are started in the agent's own process group (no new session), so
that killing a server's process group takes its instances down with it, as
pulling the plug on a real server would. The agent reaps its children by
polling them; processes left by a previous agent run are found through their
pidfile and recognised by ``SDC_INSTANCE_UUID`` in ``/proc/<pid>/environ``.
"""

import logging
import os
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

"""Processes of the lab: start an agent, find and stop what belongs to a lab.

Each agent runs in its own session (process group = its pid); the instances it
starts stay in that group, so one ``killpg`` takes a whole server down, as
pulling its power cord would.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _clean_env():
    # The agent reads its own --config; stray SDCADM_* overrides meant for the
    # operator's CLI must not leak into it.
    return {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}


def start_agent(config_path, log_path, pidfile):
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sdcadm.agent.main", "--config", str(config_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env=_clean_env())
    tmp = Path(str(pidfile) + ".tmp")
    tmp.write_text(f"{proc.pid}\n")
    os.replace(tmp, pidfile)
    return proc


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_zombie(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def alive(pid, marker=None):
    """True if ``pid`` runs (not a zombie) and, with ``marker``, its command line contains it."""
    if not pid or _is_zombie(pid):
        return False
    return marker is None or marker in _cmdline(pid)


def read_pid(pidfile):
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def agent_pid(config_path, pidfile):
    """The pid of the agent running with ``config_path``, or None."""
    pid = read_pid(pidfile)
    return pid if alive(pid, str(config_path)) else None


def kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _in_dir(pid, directory):
    prefix = str(directory).rstrip("/") + "/"
    if prefix in _cmdline(pid) + " ":
        return True
    try:
        return (os.readlink(f"/proc/{pid}/cwd") + "/").startswith(prefix)
    except OSError:
        return False


def lab_processes(directory):
    """Pids of live processes that belong to the lab at ``directory``.

    A process belongs when its command line names a path in the lab or its
    working directory is inside it (instances run with cwd in their zone).
    """
    me = {os.getpid(), os.getppid()}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if pid not in me and not _is_zombie(pid) and _in_dir(pid, directory):
                found.append(pid)
    return sorted(found)


def terminate(pids, grace=5.0):
    """SIGTERM ``pids``, wait up to ``grace`` seconds, SIGKILL what is left."""
    for pid in pids:
        send(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            send(pid, signal.SIGKILL)
    _reap(pids)


def send(pid, sig):
    """Signal a pid; a process already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pids):
    # Children of this process (when it started them) must not stay zombies.
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

"""Processes of the lab: start, find, wait for and stop what belongs to a lab.

Each agent runs in its own session (process group = its pid); the instances it
starts stay in that group, so one ``killpg`` takes a whole server down, as
pulling its power cord would. The lab's sshd (``sshd.py``) is started and
stopped here too; only what is particular to SSH (its config, its keys,
whether it answers) stays there.

Everything reads /proc, so a pid is only ever signalled after checking what
runs under it: a stale pid file must never get another process killed.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sdcadm.errors import LabError

_PR_SET_CHILD_SUBREAPER = 36


# -- looking ---------------------------------------------------------------------

def proc_state(pid):
    """``(state letter, cmdline bytes)`` of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0].decode()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, IndexError):
        return None
    return state, cmdline


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


def gone(pid):
    """True once ``pid`` no longer runs (exited, or a zombie not yet reaped)."""
    state = proc_state(pid)
    return state is None or state[0] in ("Z", "X")


def read_pid(pidfile):
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(pidfile, pid):
    """Write ``pidfile`` atomically (a reader never sees half a number)."""
    tmp = Path(f"{pidfile}.tmp{os.getpid()}")
    tmp.write_text(f"{pid}\n")
    tmp.chmod(0o644)
    os.replace(tmp, pidfile)


def descendants(pid):
    """Pids of the descendants of ``pid``, children after their own children
    (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    order = []

    def walk(parent):
        for child in children.get(parent, ()):
            walk(child)
            order.append(child)

    walk(pid)
    return order


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


# -- starting --------------------------------------------------------------------

def _clean_env():
    # The agent reads its own --config; stray SDCADM_* overrides meant for the
    # operator's CLI must not leak into it.
    return {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}


def in_netns(argv, netns):
    """``argv`` run inside network namespace ``netns`` (None: as it is).
    nsenter execs the command, so the pid and command line stay its own."""
    if netns is None:
        return list(argv)
    from sdcadm.lab.netns import enter_argv

    return enter_argv(netns) + list(argv)


def spawn_daemon(argv, log_path, *, env=None, subreaper=False, netns=None):
    """Start ``argv`` in a session of its own (no terminal signal reaches it),
    stdin closed, stdout and stderr appended to ``log_path``; with ``netns``,
    inside that network namespace."""
    argv = in_netns(argv, netns)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True, env=env,
                                preexec_fn=_subreaper_preexec() if subreaper else None)


def _subreaper_preexec():
    """A preexec_fn making the child a "child subreaper" (Linux), or None.

    The setting survives exec: processes orphaned under the child (sshd
    leaves some when a connection drops) are then reparented to it, and it
    reaps every child, instead of becoming zombies for an init that may be
    slow to reap them (containers, sandboxes). libc is loaded here, in the
    parent: the child only makes the call.
    """
    try:
        import ctypes  # here: the fence agent imports this module and needs none of it

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def start_agent(config_path, log_path, pidfile, netns=None):
    Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
    proc = spawn_daemon([sys.executable, "-m", "sdcadm.agent.main", "--config", str(config_path)],
                        log_path, env=_clean_env(), netns=netns)
    write_pid(pidfile, proc.pid)
    return proc


def agent_pid(config_path, pidfile):
    """The pid of the agent running with ``config_path``, or None."""
    pid = read_pid(pidfile)
    return pid if alive(pid, str(config_path)) else None


def wait_until(check, timeout, *, proc=None, interval=0.05):
    """Call ``check()`` until it is true (return True), ``timeout`` seconds
    pass or ``proc`` (a Popen) exits (return False) -- for a daemon that
    says nothing when it is ready, so its readiness must be asked."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            return False
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# -- stopping --------------------------------------------------------------------

def kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def send(pid, sig):
    """Signal a pid; a process already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


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


def _reap(pids):
    # Children of this process (when it started them) must not stay zombies.
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def stop_tree(pid, timeout, *, child=None, what="the process"):
    """Stop ``pid`` and everything under it: SIGTERM, SIGKILL after
    ``timeout``. ``child``: its Popen when this process started it (then it
    is waited for, not polled). Works from any process that may signal it.

    The descendants go first, leaves first, each reaped by its parent: stopped
    all at once, or with ``pid`` first, they would be left as zombies for init
    to reap (sshd: each connection is a tree of processes in its own session
    under the listener, and so is each command run over it)."""
    try:
        leader = os.getpgid(pid) == pid  # started by spawn_daemon: its own group
    except ProcessLookupError:
        leader = False
    _stop_descendants(pid, timeout)
    _signal(pid, signal.SIGTERM, leader, what)
    if not wait_gone(pid, timeout, child=child):
        _signal(pid, signal.SIGKILL, leader, what)
        wait_gone(pid, 5.0, child=child)


def _stop_descendants(pid, timeout):
    deadline = time.monotonic() + timeout
    for descendant in descendants(pid):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(descendant, sig)
            except (ProcessLookupError, PermissionError):
                break
            wait_until_at = min(deadline, time.monotonic() + 1.0)
            while proc_state(descendant) is not None and time.monotonic() < wait_until_at:
                time.sleep(0.01)
            if proc_state(descendant) is None:
                break


def _signal(pid, sig, group, what):
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise LabError(f"not allowed to signal {what} (pid {pid})",
                       hint="stop the lab as the user who started it") from None


def wait_gone(pid, timeout, *, child=None):
    """Whether ``pid`` ended within ``timeout`` seconds (``child``: its Popen,
    if this process started it, so that it is reaped too)."""
    if child is not None and child.pid == pid:
        try:
            child.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False

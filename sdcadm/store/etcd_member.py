"""Starting this server's etcd member as a new member of a running cluster.

What ``sdcadm store start-member`` does on the server itself; ``server
headnode-setup`` runs that command over SSH on each new headnode once the
cluster has agreed to the member (``etcd_maintenance.add_member``). Every path
is the server's own (its disk): nothing of another server is named.

The member is started with ``--initial-cluster-state existing`` and the
cluster's member list as its initial cluster; once its data directory exists
etcd ignores those flags, so starting it again (after a reboot, a re-run) is
the same command. It runs in a session of its own (an SSH session ending does
not stop it), its pid in ``pid_file``, its log in ``log``. A member already
running on the data directory is left as it is.

On a real headnode the member would be a service (a systemd unit running the
same argv); ``store.member.start_command`` is then what starts it again.

With ``record``, what was started is written there (``MEMBER_RECORD`` under
the server's root: its name, URLs and data directory, and the commands that
start and stop it again: ``sdcadm store start-member`` with the same
arguments, ``sdcadm store stop-member``): a headnode made by headnode-setup
has no ``store.member`` section in its configuration, and ``store recover``
there reads this instead (``store_recover.member_of``).
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from sdcadm import sdcadm_program
from sdcadm.errors import StoreError, UsageError, ValidationError
from sdcadm.fsutil import write_json_atomic

# Under a server's root: the member `store start-member` started there.
MEMBER_RECORD = "/var/sdcadm/etcd-member.json"
RECORD_MAX_BYTES = 64 * 1024
STOP_TIMEOUT = 10.0

HEARTBEAT_MS = 100
ELECTION_MS = 1000


def etcd_program():
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None


def member_argv(program, name, data_dir, peer_url, client_url, initial_cluster, log):
    """The argv of a member joining a running cluster (pure)."""
    return [program, "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", "existing",
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--pre-vote", "--logger", "zap", "--log-outputs", str(log)]


def check_initial_cluster(name, peer_url, initial_cluster):
    """UsageError unless ``initial_cluster`` (name=url,...) names this member
    with its peer URL."""
    pairs = []
    for part in initial_cluster.split(","):
        member, sep, url = part.partition("=")
        if not sep or not member or not url:
            raise UsageError(f"--initial-cluster {initial_cluster!r}: {part!r} is not NAME=PEER_URL",
                             hint="list every member as NAME=PEER_URL, separated by commas")
        pairs.append((member, url))
    if (name, peer_url) not in pairs:
        raise UsageError(f"--initial-cluster does not list this member ({name}={peer_url})",
                         hint="it must hold the cluster's member list with this member added")


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def running_pid(pid_file, data_dir):
    """The pid of the member running on ``data_dir`` (from ``pid_file``), or None."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return pid if state not in ("Z", "X") and str(data_dir) in _cmdline(pid) else None


def member_record(sdcadm, name, data_dir, peer_url, client_url, initial_cluster, pid_file,
                  log):
    """What ``record`` says of a member (pure; paths absolute)."""
    return {"name": name, "peer_url": peer_url, "client_url": client_url,
            "data_dir": str(data_dir),
            "start_command": [sdcadm, "store", "start-member", "--name", name,
                              "--peer-url", peer_url, "--client-url", client_url,
                              "--initial-cluster", initial_cluster, "--data-dir", str(data_dir),
                              "--pid-file", str(pid_file), "--log", str(log)],
            "stop_command": [sdcadm, "store", "stop-member", "--pid-file", str(pid_file),
                             "--data-dir", str(data_dir)]}


def write_record(path, record):
    write_json_atomic(path, record)


def read_record(path):
    """The member record at ``path`` (validated), or None when there is none;
    ValidationError when it is not one."""
    from sdcadm.schemas import validate

    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(RECORD_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValidationError("etcd_member", str(path), [f"unreadable: {e.strerror}"]) from None
    if len(raw) > RECORD_MAX_BYTES:
        raise ValidationError("etcd_member", str(path),
                              [f"larger than {RECORD_MAX_BYTES} bytes: not a member record"])
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ValidationError("etcd_member", str(path), [f"not JSON: {e}"]) from None
    return validate("etcd_member", doc, str(path))


def stop_member(pid_file, data_dir, timeout=STOP_TIMEOUT):
    """Stop the member running on ``data_dir`` (SIGTERM, SIGKILL after
    ``timeout``); False when none runs there."""
    data_dir, pid_file = Path(data_dir).resolve(), Path(pid_file).resolve()
    pid = running_pid(pid_file, data_dir)
    if pid is None:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while running_pid(pid_file, data_dir) == pid:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return True
    raise StoreError(f"the etcd member (pid {pid}) did not stop, even on SIGKILL",
                     hint=f"see /proc/{pid}/status; it may be stuck on its disk")


def start_member(name, data_dir, peer_url, client_url, initial_cluster, pid_file, log,
                 program=None, record=None):
    """Start the member unless it runs on ``data_dir``; return (pid, started).
    ``record``: where to write what was started (``member_record``)."""
    check_initial_cluster(name, peer_url, initial_cluster)
    data_dir, pid_file, log = (Path(p).resolve() for p in (data_dir, pid_file, log))
    if record is not None:
        write_record(record, member_record(sdcadm_program(), name, data_dir, peer_url, client_url,
                                           initial_cluster, pid_file, log))
    pid = running_pid(pid_file, data_dir)
    if pid:
        return pid, False
    program = program or etcd_program()
    if program is None:
        raise StoreError("etcd is not installed on this server",
                         hint="install it (apt-get install etcd-server) and run the same "
                              "command again")
    for d in (data_dir.parent, pid_file.parent, log.parent):
        d.mkdir(parents=True, exist_ok=True)
    argv = member_argv(program, name, data_dir, peer_url, client_url, initial_cluster, log)
    with open(log.with_suffix(".out"), "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)
    tmp = pid_file.with_name(f".{pid_file.name}.{os.getpid()}")
    tmp.write_text(f"{proc.pid}\n")
    os.replace(tmp, pid_file)
    # An etcd that cannot start (port taken, bad flags) exits at once: say so here.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"etcd exited as it started (status {proc.returncode})",
                             hint=f"see {log} and {log.with_suffix('.out')}")
        time.sleep(0.1)
    return proc.pid, True

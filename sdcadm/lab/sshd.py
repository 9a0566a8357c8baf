"""The lab's one sshd: its own host key, client key, known_hosts and config.

Every lab server is an address on the loopback network; a single sshd listens
on all of them on one port, so ``SSHTransport(admin_ip, port, ...)`` reaches
"server" ``admin_ip`` (the remote side can tell which one from the server
address in ``$SSH_CONNECTION``). It runs as whoever starts the lab: as root it
logs in root, as a normal user it can only log in that user (sshd cannot
switch users then), and ``AllowUsers`` says so.

Files in ``dir``: ``ssh_host_ed25519_key``, ``id_ed25519`` (the client key),
``authorized_keys``, ``known_hosts``, ``sshd_config``, ``sshd.pid``,
``sshd.log``.

The lab's servers share none of these: each keeps its own client key and
known_hosts in its own root (``clients``: one directory per server, each
given ``id_ed25519`` and ``known_hosts``; its public key is authorized), and
with ``roots`` (address -> a server's root) a login on a server's address
runs in that server's root (``Match LocalAddress`` + ``ForceCommand cd``), as
a login on that server would: relative paths name the server's files, and a
command on a server whose root is gone (powered off) fails loudly. Starting, waiting for and stopping the process is
``procs.py``'s job; what is particular to sshd (config, keys, whether it
answers SSH) is here.
"""

import errno
import ipaddress
import logging
import os
import pwd
import shlex
import socket
import subprocess
from pathlib import Path

from sdcadm.errors import LabError
from sdcadm.fsutil import find_program
from sdcadm.lab import procs
from sdcadm.transport.ssh import SSHTransport, known_hosts_line

log = logging.getLogger(__name__)

HOST_KEY = "ssh_host_ed25519_key"
CLIENT_KEY = "id_ed25519"
AUTHORIZED_KEYS = "authorized_keys"
KNOWN_HOSTS = "known_hosts"
CONFIG = "sshd_config"
PID_FILE = "sshd.pid"
LOG_FILE = "sshd.log"
PRIVSEP_DIR = "/run/sshd"  # sshd running as root chroots its pre-auth child here


def current_user():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise LabError(f"uid {os.geteuid()} has no user name (no passwd entry)",
                       hint="sshd needs one to log in as: add the user to /etc/passwd") from None


def _config_value(value, *, percent_tokens=False):
    """``value`` as one sshd_config token (quoted if it contains blanks)."""
    value = str(value)
    if any(c in value for c in '"\\\n\r'):
        raise LabError(f"{value!r} cannot be written into sshd_config "
                       f"(it has a quote, backslash or newline)",
                       hint="use a lab directory whose path has none of these")
    if percent_tokens:
        value = value.replace("%", "%%")
    return f'"{value}"' if any(c.isspace() for c in value) or "#" in value else value


def render_sshd_config(listen_addresses, port, *, host_key, pid_file, authorized_keys, user,
                       log_level="VERBOSE", roots=None):
    """The text of the lab's sshd_config."""
    try:
        addresses = [str(ipaddress.ip_address(a)) for a in listen_addresses]
    except ValueError as e:
        raise LabError(f"bad listen address for the lab sshd: {e}") from None
    lines = [
        "# Written by sdcadm for the lab's sshd; rewritten by LabSshd.setup().",
        f"Port {int(port)}",
        *(f"ListenAddress {a}" for a in addresses),
        f"HostKey {_config_value(host_key)}",
        f"PidFile {_config_value(pid_file)}",
        f"AuthorizedKeysFile {_config_value(authorized_keys, percent_tokens=True)}",
        f"AllowUsers {user}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The lab's files live wherever the lab does (maybe a group-writable
        # tmp dir): do not let sshd refuse them for their permissions.
        "StrictModes no",
        "X11Forwarding no",
        # Several headnodes pull at once, each reusing a connection with
        # several channels: more than the defaults (10:30:100, 10).
        "MaxStartups 64:30:256",
        "MaxSessions 64",
        f"LogLevel {log_level}",
        "Subsystem sftp internal-sftp",
        # The lab's servers are not this machine's login: bash sources the
        # host user's ~/.bashrc for ssh commands only when SHLVL is unset
        # (here it ran pyenv init, 0.15 s of CPU per command, on every sync).
        "SetEnv SHLVL=1",
    ]
    for address, root in sorted((roots or {}).items()):
        _config_value(root)  # refuses quotes, backslashes, newlines
        lines += [f"Match LocalAddress {ipaddress.ip_address(address)}",
                  f"    ForceCommand cd {shlex.quote(str(root))} && eval \"$SSH_ORIGINAL_COMMAND\""]
    return "\n".join(lines) + "\n"


def _write(path, text, mode=0o600):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_public_key(path):
    """``(type, base64)`` of an OpenSSH .pub file."""
    try:
        fields = path.read_text().split()
    except OSError as e:
        raise LabError(f"cannot read {path}: {e.strerror}") from None
    if len(fields) < 2:
        raise LabError(f"{path} is not an OpenSSH public key",
                       hint=f"remove {path} and its private key; setup() makes new ones")
    return fields[0], fields[1]


class LabSshd:
    """The lab's sshd in ``dir``, listening on ``port`` of every address."""

    def __init__(self, dir, listen_addresses, port, *, log_level="VERBOSE", start_timeout=10.0,
                 roots=None, clients=(), name=None, netns=None, known_addresses=None):
        if isinstance(listen_addresses, str):
            listen_addresses = [listen_addresses]
        try:
            self.listen_addresses = [str(ipaddress.ip_address(a)) for a in listen_addresses]
        except ValueError as e:
            raise LabError(f"bad listen address: {e}") from None
        if not self.listen_addresses:
            raise LabError("the lab sshd needs at least one listen address")
        self.dir = Path(dir).resolve()
        self._port = int(port)
        self.log_level = log_level
        self.start_timeout = start_timeout
        self._user = current_user()
        self._proc = None  # set when this process started sshd
        self.roots = {str(ipaddress.ip_address(a)): str(r) for a, r in (roots or {}).items()}
        self.clients = [Path(c) for c in clients]
        # A netns lab runs one sshd per server, inside its namespace: ``name``
        # (the server) tells their config, pid and log files apart; they
        # share the lab's keys, and every client knows every address.
        self.name = name
        self.netns = netns
        self.known_addresses = [str(ipaddress.ip_address(a))
                                for a in (known_addresses or self.listen_addresses)]

    def _file(self, base):
        return self.dir / (base if self.name is None else f"{base}.{self.name}")

    # -- what clients need ---------------------------------------------------
    @property
    def port(self):
        return self._port

    @property
    def user(self):
        return self._user

    @property
    def identity(self):
        return self.dir / CLIENT_KEY

    @property
    def known_hosts(self):
        return self.dir / KNOWN_HOSTS

    @property
    def host_key(self):
        return self.dir / HOST_KEY

    @property
    def config_path(self):
        return self._file(CONFIG)

    @property
    def log_path(self):
        return self._file(LOG_FILE)

    @property
    def pid_path(self):
        return self._file(PID_FILE)

    def transport(self, host=None, **options):
        """An SSHTransport to ``host`` (default: the first listen address)."""
        return SSHTransport(host or self.listen_addresses[0], self.port, user=self.user,
                            identity=self.identity, known_hosts=self.known_hosts, **options)

    def __repr__(self):
        return f"LabSshd({str(self.dir)!r}, {self.listen_addresses!r}, {self.port})"

    # -- setup ---------------------------------------------------------------
    def setup(self):
        """Create the keys (kept if present) and (re)write authorized_keys,
        known_hosts and sshd_config. Idempotent."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._ensure_key(HOST_KEY, "sdcadm-lab-host")
        self._ensure_key(CLIENT_KEY, f"sdcadm-lab-{self.user}")
        authorized = [_read_public_key(self.dir / f"{CLIENT_KEY}.pub")]
        host_type, host_key = _read_public_key(self.dir / f"{HOST_KEY}.pub")
        known = "".join(known_hosts_line(a, self.port, host_type, host_key)
                        for a in self.known_addresses)
        _write(self.known_hosts, known, mode=0o644)
        for client in self.clients:
            if not client.parent.is_dir():
                continue  # a server whose disk is gone (lab kill): never make one up
            client.mkdir(mode=0o700, exist_ok=True)
            self._ensure_key(CLIENT_KEY, f"sdcadm-lab-{client.parent.parent.name}", client)
            authorized.append(_read_public_key(client / f"{CLIENT_KEY}.pub"))
            _write(client / KNOWN_HOSTS, known, mode=0o644)
        _write(self.dir / AUTHORIZED_KEYS,
               "".join(f"{t} {k} sdcadm-lab\n" for t, k in authorized))
        _write(self.config_path, render_sshd_config(
            self.listen_addresses, self.port, host_key=self.host_key, pid_file=self.pid_path,
            authorized_keys=self.dir / AUTHORIZED_KEYS, user=self.user, log_level=self.log_level,
            roots=self.roots))
        return self

    def _ensure_key(self, name, comment, directory=None):
        directory = directory or self.dir
        path, pub = directory / name, directory / f"{name}.pub"
        keygen = find_program("ssh-keygen", LabError, "the lab's sshd")
        if path.exists():
            if not pub.exists():
                out = self._run([keygen, "-y", "-f", str(path)], f"cannot read {path}")
                _write(pub, out.strip() + f" {comment}\n", mode=0o644)
            return
        # Generate under a temporary name so a crash never leaves half a pair.
        tmp = directory / f".{name}.tmp{os.getpid()}"
        for p in (tmp, tmp.with_name(tmp.name + ".pub")):
            p.unlink(missing_ok=True)
        self._run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp)],
                  f"ssh-keygen could not create {path}")
        os.replace(tmp.with_name(tmp.name + ".pub"), pub)
        os.replace(tmp, path)

    @staticmethod
    def _run(argv, what):
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise LabError(f"{what}: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    # -- running -------------------------------------------------------------
    @property
    def pid(self):
        """The pid of this lab's sshd, or None when it is not running."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        pid = procs.read_pid(self.pid_path)
        return pid if pid is not None and self._is_ours(pid) else None

    def running(self):
        return self.pid is not None

    def _is_ours(self, pid):
        # The pid file may be stale and the pid reused: only a live sshd started
        # with our config file counts. (sshd rewrites its title but keeps argv.)
        state = procs.proc_state(pid)
        if state is None or state[0] in ("Z", "X"):
            return False
        return os.fsencode(str(self.config_path)) in state[1]

    def start(self):
        """Start sshd (a no-op if it is running) and wait until it answers."""
        if self.running():
            return self.pid
        if not self.config_path.exists():
            self.setup()
        sshd = find_program("sshd", LabError, "the lab's sshd")
        if os.geteuid() == 0:
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        check = subprocess.run([sshd, "-t", "-f", str(self.config_path)], capture_output=True,
                               text=True, stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            why = check.stderr.strip() or check.stdout.strip()
            raise LabError(f"sshd rejects {self.config_path}: {why}",
                           hint="fix the cause above (for a missing privilege separation user: "
                                "reinstall openssh-server)")
        if self.netns is None:  # a new namespace has nothing listening yet
            self._check_ports_free()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # A subreaper: sshd processes orphaned by a dropped connection (sshd
        # leaves some) are reaped by the listener, and stop() finds them under it.
        self._proc = procs.spawn_daemon(
            [sshd, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
            self.log_path, subreaper=True, netns=self.netns)
        procs.write_pid(self.pid_path, self._proc.pid)
        try:
            self._wait_ready(log_offset)
        except BaseException:
            self.stop()
            raise
        log.info("lab sshd pid %d listening on port %d of %s", self._proc.pid, self.port,
                 ", ".join(self.listen_addresses))
        return self._proc.pid

    def _check_ports_free(self):
        for addr in self.listen_addresses:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((addr, self.port))
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        raise LabError(f"{addr} port {self.port} is already in use",
                                       hint=f"another program listens there (see `ss -ltnp "
                                            f"'sport = :{self.port}'`): stop it or choose "
                                            f"another ssh port for the lab") from None
                    raise LabError(f"cannot listen on {addr} port {self.port}: {e.strerror}",
                                   hint="is that an address of this machine?") from None

    def _wait_ready(self, log_offset):
        waiting = list(self.listen_addresses)

        def every_address_answers():
            while waiting and _answers_ssh(waiting[0], self.port):
                waiting.pop(0)
            return not waiting

        if not procs.wait_until(every_address_answers, self.start_timeout, proc=self._proc):
            if self._proc.poll() is not None:
                raise LabError(f"sshd exited with status {self._proc.returncode} as it started: "
                               f"{self._log_tail(log_offset)}", hint=f"see {self.log_path}")
            raise LabError(f"sshd did not answer on {waiting[0]} port {self.port} within "
                           f"{self.start_timeout:g} s", hint=f"see {self.log_path}")
        # sshd carries on when only some addresses could be bound: that is a failure here.
        tail = self._log_tail(log_offset)
        if "Bind to port" in tail or "Cannot bind" in tail:
            raise LabError(f"sshd could not listen on every address: {tail}",
                           hint=f"see {self.log_path}")

    def _log_tail(self, offset, lines=5):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(nothing logged)"

    def stop(self, timeout=5.0):
        """Stop sshd (SIGTERM, then SIGKILL after ``timeout``), whichever process
        started it, with every connection and command run through it.
        Returns whether it was running. Idempotent."""
        pid = self.pid
        if pid is None:
            self._forget()
            return False
        procs.stop_tree(pid, timeout, child=self._proc, what="the lab sshd")
        self._forget()
        log.info("lab sshd pid %d stopped", pid)
        return True

    def _forget(self):
        if self._proc is not None:
            if self._proc.poll() is None:  # not ours to wait for any longer? reap it.
                try:
                    self._proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
            self._proc = None
        pid = procs.read_pid(self.pid_path)
        if pid is None or not self._is_ours(pid):
            self.pid_path.unlink(missing_ok=True)


def _answers_ssh(addr, port, timeout=0.5):
    """Whether an SSH server answers on ``addr:port`` (it speaks first)."""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            return s.recv(4) == b"SSH-"
    except OSError:
        return False

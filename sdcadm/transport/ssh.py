"""Run argument lists on a server over SSH (paramiko).

Host keys are checked against one known_hosts file only -- never the user's
``~/.ssh``, never auto-accepted. The remote command is ``shlex.join(argv)``:
the server's login shell sees every argument quoted, so nothing taken from
input is ever interpreted by a shell. One connection is opened on first use
and reused by every call until ``close()``; each call gets its own channel, so
calls from several threads are fine.
"""

import hashlib
import logging
import math
import os
import select
import shlex
import socket
import stat
import threading
import time

import paramiko

from sdcadm.errors import AuthError, HostKeyError, RemoteCommandFailed, TransportError, Unreachable
from sdcadm.transport.interface import Result, decode, remote_command

log = logging.getLogger(__name__)

DEFAULT_KNOWN_HOSTS = "/etc/sdcadm/known_hosts"
_CHUNK = 65536
_ALIVE_COUNT = 3  # unanswered keepalives after which a peer is taken for gone
_STDERR_KEEP = 65536  # stream() keeps this much stderr for the error message


# -- pure helpers --------------------------------------------------------------

def liveness(connect_timeout):
    """``(interval, dead_after)`` in seconds: a keepalive every ``interval``
    on every connection, and a peer that has answered none for
    ``dead_after`` is taken for gone, its commands failing as Unreachable.

    Without it a server cut off in the middle of a command (a partition, a
    frozen host) leaves the command waiting on TCP's own retransmission
    limit, about 15 minutes: a restore pulling a copy from it, or a sync,
    would hang that long. Derived from ``ssh.connect_timeout``, the time the
    operator already gives a server to answer (10 s: every 5 s, gone after 15 s)."""
    interval = max(1, math.ceil(float(connect_timeout) / 2))
    return interval, interval * _ALIVE_COUNT


def known_hosts_name(host, port):
    """How OpenSSH (and paramiko) name ``host:port`` in known_hosts."""
    return host if int(port) == 22 else f"[{host}]:{port}"


def known_hosts_line(host, port, key_type, key_base64):
    """One known_hosts line (with newline) for ``host:port``."""
    return f"{known_hosts_name(host, port)} {key_type} {key_base64}\n"


def display_address(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def keyscan_command(host, port, known_hosts):
    """The command that adds a server's host keys to ``known_hosts``."""
    port_opt = "" if int(port) == 22 else f"-p {int(port)} "
    return f"ssh-keyscan {port_opt}{shlex.quote(host)} >> {shlex.quote(str(known_hosts))}"


def _ssh_option_path(path):
    # ssh(1) expands %-tokens in these paths, and needs quotes around spaces.
    path = str(path).replace("%", "%%")
    return f'"{path}"' if any(c.isspace() for c in path) else path


def _input_chunks(data):
    """An iterator of byte chunks for ``input``, or None for no input."""
    if data is None:
        return None
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        return (data[i:i + _CHUNK] for i in range(0, len(data), _CHUNK))
    if hasattr(data, "read"):
        def read():
            chunk = data.read(_CHUNK)
            return chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk or b"")
        return iter(read, b"")
    raise TypeError(f"input must be str, bytes or a file object, not {type(data).__name__}")


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# Two module-private exceptions stay out of sdcadm.errors on purpose: neither
# ever leaves this module. _Timeout is control flow from _pump() to
# _execute(), which turns it into a TransportError; _UnknownHostKey must be a
# paramiko.SSHException for paramiko to propagate it from the host-key policy,
# and _connect_error() turns it into a HostKeyError.
class _Timeout(Exception):
    pass


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, name, key):
        super().__init__(f"{name} not found in known_hosts")
        self.name, self.key = name, key


class _Reject(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, for a message that helps."""

    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(hostname, key)


def _pump(chan, source, deadline):
    """Feed ``source`` to the command's stdin and yield ``("out"|"err", bytes)``
    as output arrives, until the command closes its output."""
    chan.setblocking(False)
    if source is None:
        chan.shutdown_write()
    pending = b""
    fd = chan.fileno()  # readable whenever stdout or stderr has data, or at EOF
    while True:
        sent = 0
        if source is not None:
            if not pending:
                pending = next(source, b"")
                if not pending:
                    source = None
                    chan.shutdown_write()
            if pending and chan.send_ready():
                try:
                    sent = chan.send(pending)
                    pending = pending[sent:]
                except socket.timeout:
                    pass
                except OSError:  # the command exited or closed its stdin
                    pending, source = b"", None
        # Seen *before* draining: nothing arrives after EOF or close, so once
        # the buffers are drained after this point, the output is complete.
        # (Checking after draining lost output that arrived in between.)
        done = chan.closed or chan.eof_received
        while chan.recv_ready():
            yield "out", chan.recv(_CHUNK)
        while chan.recv_stderr_ready():
            yield "err", chan.recv_stderr(_CHUNK)
        if done:
            return
        wait = _remaining(deadline)
        if wait == 0:
            raise _Timeout()
        if sent:
            continue
        if source is not None:  # the fd does not signal room to send: poll
            wait = 0.01 if wait is None else min(wait, 0.01)
        select.select([fd], [], [], wait)


# -- the transport -------------------------------------------------------------

class SSHTransport:
    """Commands on one server over one reused SSH connection."""

    def __init__(self, host, port=22, user="root", identity=None,
                 known_hosts=DEFAULT_KNOWN_HOSTS, connect_timeout=10.0):
        self.host = str(host)
        self.port = int(port)
        self.user = user
        self.identity = os.fspath(identity) if identity else None
        self.known_hosts = os.fspath(known_hosts)
        self.connect_timeout = float(connect_timeout)
        self._client = None
        self._lock = threading.Lock()

    @property
    def address(self):
        return display_address(self.host, self.port)

    def __repr__(self):
        return f"SSHTransport({self.user}@{self.address})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- connection ----------------------------------------------------------
    def connect(self):
        """Open the connection now (otherwise the first command does)."""
        with self._lock:
            if not self._active():
                self._drop()
                self._client = self._connect()

    def close(self):
        with self._lock:
            self._drop()

    def _active(self):
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def _drop(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connect(self):
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_Reject())
        self._load_known_hosts(client)
        auth = self._auth_options()
        sock = self._open_socket()
        t = self.connect_timeout
        try:
            client.connect(self.host, self.port, username=self.user, sock=sock, timeout=t,
                           banner_timeout=t, auth_timeout=t, channel_timeout=t, **auth)
        except BaseException as e:
            client.close()
            sock.close()
            if isinstance(e, Exception):
                raise self._connect_error(e) from None
            raise
        # paramiko's keepalives want no answer: they only make traffic, and
        # TCP_USER_TIMEOUT (set on the socket) ends the connection once that
        # traffic has gone unacknowledged for dead_after.
        client.get_transport().set_keepalive(liveness(self.connect_timeout)[0])
        log.debug("connected to %s@%s", self.user, self.address)
        return client

    def _load_known_hosts(self, client):
        if not os.path.exists(self.known_hosts):
            raise HostKeyError(
                f"known_hosts file {self.known_hosts} does not exist, so the host key "
                f"of {self.address} cannot be verified",
                hint=f"after checking the server's key fingerprint, add it: "
                     f"{keyscan_command(self.host, self.port, self.known_hosts)}")
        try:
            client.load_host_keys(self.known_hosts)
        except (OSError, UnicodeDecodeError) as e:
            raise HostKeyError(f"cannot read known_hosts file {self.known_hosts}: {e}",
                               hint="check its permissions and that it is a text file") from None

    def _auth_options(self):
        if self.identity is None:  # like ssh(1): the agent, then ~/.ssh/id_*
            return {"allow_agent": True, "look_for_keys": True}
        try:
            pkey = paramiko.PKey.from_path(self.identity)
        except FileNotFoundError:
            raise AuthError(f"identity file {self.identity} does not exist",
                            hint="set ssh.identity to the private key sdcadm logs in with"
                            ) from None
        except paramiko.PasswordRequiredException:
            raise AuthError(f"identity file {self.identity} is encrypted with a passphrase",
                            hint="use an unencrypted key kept readable by root only") from None
        except (paramiko.SSHException, OSError, ValueError) as e:
            raise AuthError(f"cannot read identity file {self.identity}: {e}",
                            hint="it must be an OpenSSH or PEM private key") from None
        return {"pkey": pkey, "allow_agent": False, "look_for_keys": False}

    def _open_socket(self):
        addr, t = self.address, self.connect_timeout
        try:
            sock = socket.create_connection((self.host, self.port), timeout=t)
        except socket.timeout:
            raise Unreachable(f"{addr}: no answer within {t:g} s (connection timed out)",
                              hint="check that the server is up and reachable; a firewall may "
                                   "be dropping packets") from None
        except ConnectionRefusedError:
            raise Unreachable(f"{addr}: connection refused",
                              hint=f"nothing listens on port {self.port} there: is sshd running "
                                   f"on that address and port?") from None
        except socket.gaierror as e:
            raise Unreachable(f"cannot resolve {self.host!r}: {e.strerror or e}",
                              hint="check the host name, or use its IP address") from None
        except OSError as e:
            raise Unreachable(f"{addr}: {e.strerror or e}",
                              hint="check the network path to the server (routes, links)") from None
        if hasattr(socket, "TCP_USER_TIMEOUT"):    # Linux
            dead_after_ms = liveness(self.connect_timeout)[1] * 1000
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, dead_after_ms)
        return sock

    def _connect_error(self, e):
        """Map what paramiko raised while connecting to one of our errors."""
        addr = self.address
        name = known_hosts_name(self.host, self.port)
        if isinstance(e, _UnknownHostKey):
            return HostKeyError(
                f"{addr} is not in {self.known_hosts}: it offered the host key "
                f"{e.key.get_name()} {e.key.fingerprint}; it is never accepted automatically",
                hint=f"check that fingerprint on the server (`ssh-keygen -lf` on its host key "
                     f".pub file), then add the key: "
                     f"{keyscan_command(self.host, self.port, self.known_hosts)}")
        if isinstance(e, paramiko.BadHostKeyException):
            return HostKeyError(
                f"the host key of {addr} does not match {self.known_hosts}: it offered "
                f"{e.key.get_name()} {e.key.fingerprint}, expected "
                f"{e.expected_key.get_name()} {e.expected_key.fingerprint}. Someone may be "
                f"intercepting the connection (man-in-the-middle), or the server's key changed",
                hint=f"do not connect until you have verified the new key out of band; if the "
                     f"change is legitimate: ssh-keygen -f {shlex.quote(self.known_hosts)} "
                     f"-R {shlex.quote(name)} && "
                     f"{keyscan_command(self.host, self.port, self.known_hosts)}")
        if isinstance(e, paramiko.AuthenticationException):
            with_what = (f"identity {self.identity}" if self.identity
                         else "the ssh-agent and ~/.ssh/id_* keys")
            return AuthError(
                f"{self.user}@{addr}: authentication failed with {with_what} ({e})",
                hint=f"add the public key ({self.identity or 'your key'}.pub) to the "
                     f"authorized_keys of {self.user} on that server, and check that its sshd "
                     f"lets {self.user} log in (AllowUsers, PermitRootLogin)")
        if isinstance(e, paramiko.IncompatiblePeer):
            return TransportError(f"{addr}: no SSH algorithms in common with the server: {e}",
                                  hint="upgrade the server's OpenSSH or paramiko")
        if isinstance(e, (paramiko.SSHException, EOFError, OSError)):
            return Unreachable(
                f"{addr}: accepted the connection but no SSH session was established within "
                f"{self.connect_timeout:g} s ({e or type(e).__name__})",
                hint="check that sshd (not another program) listens on that port and is not "
                     "overloaded; its log says why it dropped the connection")
        return TransportError(f"{addr}: cannot connect: {e!r}")

    def _session(self):
        for attempt in (1, 2):
            self.connect()
            try:
                return self._client.get_transport().open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError, AttributeError) as e:
                if attempt == 2 or self._active():
                    raise TransportError(f"{self.address}: cannot open an SSH session: {e}",
                                         hint="sshd may have hit MaxSessions; retry later"
                                         ) from None
                with self._lock:  # the connection died since last use: reconnect once
                    self._drop()

    # -- commands ------------------------------------------------------------
    def _execute(self, argv, input, timeout):
        """Start ``argv``; yield ``("out"|"err", bytes)`` as output arrives;
        return the exit status."""
        command = remote_command(argv)
        source = _input_chunks(input)
        deadline = None if timeout is None else time.monotonic() + timeout
        log.debug("ssh %s@%s: %s", self.user, self.address, command)
        chan = self._session()
        try:
            try:
                chan.exec_command(command)
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise TransportError(f"{self.address}: could not start {command}: {e}") from None
            try:
                yield from _pump(chan, source, deadline)
                if not chan.status_event.wait(_remaining(deadline)):
                    raise _Timeout()
            except _Timeout:
                raise TransportError(
                    f"{argv[0]} on {self.address} did not finish within {timeout:g} s",
                    hint="it was abandoned (its channel closed); raise the timeout or find "
                         "out why it hangs") from None
            if chan.exit_status == -1 and not self._active():
                raise Unreachable(f"{self.address}: connection lost while running {argv[0]}",
                                  hint="the server or sshd went away; the command may or may "
                                       "not have completed")
            return chan.exit_status
        finally:
            chan.close()

    def run_bytes(self, argv, input=None, check=True, timeout=None):
        """Like ``run`` but ``stdout`` and ``stderr`` are bytes."""
        out, err = bytearray(), bytearray()
        execution = self._execute(argv, input, timeout)
        while True:
            try:
                kind, data = next(execution)
            except StopIteration as done:
                returncode = done.value
                break
            (out if kind == "out" else err).extend(data)
        result = Result(returncode, bytes(out), bytes(err))
        if check and returncode != 0:
            raise RemoteCommandFailed(self.address, [str(a) for a in argv], returncode, decode(err))
        return result

    def run(self, argv, input=None, check=True, timeout=None):
        """Run ``argv`` (a list, never a shell string) and wait for it.

        ``input`` (str, bytes or a binary file object) is fed to its stdin.
        Returns ``Result(returncode, stdout, stderr)`` with text decoded as
        UTF-8 (undecodable bytes replaced). Raises ``RemoteCommandFailed`` on a
        non-zero exit when ``check``; ``TransportError`` after ``timeout``
        seconds (the remote command is abandoned).
        """
        raw = self.run_bytes(argv, input=input, check=False, timeout=timeout)
        result = Result(raw.returncode, decode(raw.stdout), decode(raw.stderr))
        if check and result.returncode != 0:
            raise RemoteCommandFailed(self.address, [str(a) for a in argv],
                                      result.returncode, result.stderr)
        return result

    def stream(self, argv, *, input=None, timeout=None):
        """Run ``argv`` and yield its stdout lines (str, without the newline)
        as they arrive; raise ``RemoteCommandFailed`` at the end if it exited
        non-zero. Closing the generator early abandons the command."""
        err = bytearray()
        partial = b""
        execution = self._execute(argv, input, timeout)
        try:
            while True:
                try:
                    kind, data = next(execution)
                except StopIteration as done:
                    returncode = done.value
                    break
                if kind == "err":
                    err.extend(data)
                    del err[:-_STDERR_KEEP]
                    continue
                *lines, partial = (partial + data).split(b"\n")
                for line in lines:
                    yield decode(line)
        finally:
            execution.close()
        if partial:
            yield decode(partial)
        if returncode != 0:
            raise RemoteCommandFailed(self.address, [str(a) for a in argv], returncode, decode(err))

    def command_argv(self, argv):
        """The local argv that runs ``argv`` on this server: the OpenSSH
        client (same identity, host keys verified) and the quoted command."""
        return [*self.ssh_argv(), "--", self.host, remote_command(argv)]

    def ssh_argv(self, shared=False):
        """The OpenSSH client command (without host) using the same port, user,
        identity and known_hosts -- for ``rsync -e "$(shlex.join(...))"``.

        ``shared``: reuse one master connection per server for 60 s
        (ControlMaster), so that a cycle of many short transfers to the same
        server pays the key exchange once (0.4 s -> 0.16 s per command here).
        A master was opened under the host keys known then: its socket's name
        carries a digest of the known_hosts file, so once the file changes (a
        key revoked or replaced) no new command reuses it, and the next one
        checks the host key again. Old masters exit on their own after 60 s.
        The name also carries who connects (the identity file) and from which
        network namespace: a master is reused only by the client that could
        have opened it. (Two lab servers share /tmp: without this, hn1's pulls
        rode a master hn2 opened, with hn2's key and through hn2's network, so
        a partition between hn1 and hn0 went unnoticed.)"""
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.port), "-l", self.user,
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={_ssh_option_path(self.known_hosts)}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}",
                # a peer cut off mid-transfer fails the command (as in liveness())
                "-o", f"ServerAliveInterval={liveness(self.connect_timeout)[0]}",
                "-o", f"ServerAliveCountMax={_ALIVE_COUNT}"]
        if self.identity:
            # -i is not re-parsed (no quotes) but does expand %-tokens.
            argv += ["-o", "IdentitiesOnly=yes", "-i", self.identity.replace("%", "%%")]
        if shared:
            tag = master_tag(self.known_hosts, self.identity)
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir()}/{tag}-%C",
                     "-o", "ControlPersist=60"]
        return argv


def known_hosts_digest(path):
    """12 hex digits naming the contents of a known_hosts file ("none" when
    it cannot be read: ssh then refuses the host itself)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        return "none"


def master_tag(known_hosts, identity):
    """12 hex digits naming what a ControlMaster connection was opened with:
    the known_hosts contents, the identity file and this process's network
    namespace (see ``SSHTransport.ssh_argv``)."""
    try:
        netns = str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        netns = ""
    parts = [known_hosts_digest(known_hosts), os.path.abspath(identity) if identity else "",
             netns]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def control_dir():
    """A private, short directory for ControlMaster sockets (unix socket paths
    are limited to 108 bytes, so not under a deep lab directory)."""
    path = f"/tmp/sdcadm-ssh-{os.getuid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise TransportError(f"{path} is not a private directory of this user",
                                 hint="remove it; sdcadm recreates it with mode 0700")
    return path


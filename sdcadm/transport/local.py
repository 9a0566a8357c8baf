"""Run argument lists on this machine: the ``Shell`` of ``interface.py``.

Code that drives a command-line tool (``zfs``) takes a *shell* and calls
``run`` / ``run_bytes`` / ``stream`` on it; handing it a ``LocalShell`` or an
``SSHTransport`` decides where the command runs. Argument lists only: a
string argv is a TypeError, nothing goes through a shell.

``spawn()`` starts a process with pipes for the few places that must move a
byte stream between two commands (``zfs send | zfs recv``). Spawned processes
get ``PR_SET_PDEATHSIG`` = SIGKILL: if the Python process that started them
is killed, they die with it instead of finishing work nobody records.
"""

import ctypes
import logging
import os
import select
import signal
import subprocess
import time

from sdcadm.errors import RemoteCommandFailed, TransportError
from sdcadm.transport.interface import Result, check_argv, decode

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_STDERR_KEEP = 65536
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when its parent (thread) dies."""
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _input_bytes(data):
    if data is None:
        return None
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        chunk = data.read()
        return chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk or b"")
    raise TypeError(f"input must be str, bytes or a file object, not {type(data).__name__}")


class LocalShell:
    """Commands on this machine; same calls and errors as ``SSHTransport``."""

    host = "localhost"
    address = "localhost"

    def __init__(self, env=None):
        self.env = env  # None: inherit the environment

    def __repr__(self):
        return "LocalShell()"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self):
        pass

    def close(self):
        pass

    def _failed(self, argv, returncode, stderr):
        return RemoteCommandFailed(self.address, argv, returncode, stderr)

    def _start_error(self, argv, e):
        return TransportError(f"cannot run {argv[0]}: {e.strerror or e}",
                              hint=f"is {argv[0]} installed and on PATH?")

    def run_bytes(self, argv, input=None, check=True, timeout=None):
        """Like ``run`` but ``stdout`` and ``stderr`` are bytes."""
        argv = check_argv(argv)
        log.debug("local: %s", argv)
        try:
            proc = subprocess.run(argv, input=_input_bytes(input), capture_output=True,
                                  timeout=timeout, env=self.env,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TransportError(f"{argv[0]} did not finish within {timeout:g} s",
                                 hint="it was killed; raise the timeout or find out why "
                                      "it hangs") from None
        except OSError as e:
            raise self._start_error(argv, e) from None
        # A signal death is -N for subprocess; SSH reports -1: keep one convention.
        returncode = -1 if proc.returncode < 0 else proc.returncode
        result = Result(returncode, proc.stdout, proc.stderr)
        if check and returncode != 0:
            raise self._failed(argv, returncode, decode(proc.stderr))
        return result

    def run(self, argv, input=None, check=True, timeout=None):
        """Run ``argv`` and wait; ``Result(returncode, stdout, stderr)`` as text."""
        raw = self.run_bytes(argv, input=input, check=False, timeout=timeout)
        result = Result(raw.returncode, decode(raw.stdout), decode(raw.stderr))
        if check and result.returncode != 0:
            raise self._failed(check_argv(argv), result.returncode, result.stderr)
        return result

    def stream(self, argv, *, input=None, timeout=None):
        """Yield stdout lines (str, no newline) as they arrive; raise
        ``RemoteCommandFailed`` at the end on a non-zero exit. Closing the
        generator early kills the command."""
        argv = check_argv(argv)
        data = _input_bytes(input)
        deadline = None if timeout is None else time.monotonic() + timeout
        proc = self.spawn(argv, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = bytearray()
        partial = b""
        try:
            if data is not None:
                # Small inputs only (argument files, configs): write then close.
                try:
                    proc.stdin.write(data)
                except BrokenPipeError:
                    pass
                proc.stdin.close()
            fds = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
            while fds:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select(list(fds), [], [], wait)
                if not ready:
                    raise TransportError(f"{argv[0]} did not finish within {timeout:g} s",
                                         hint="it was killed")
                for fd in ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        del fds[fd]
                    elif fds[fd] == "err":
                        err.extend(chunk)
                        del err[:-_STDERR_KEEP]
                    else:
                        *lines, partial = (partial + chunk).split(b"\n")
                        for line in lines:
                            yield decode(line)
            returncode = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in (proc.stdout, proc.stderr):
                f.close()
        if partial:
            yield decode(partial)
        if returncode != 0:
            raise self._failed(argv, -1 if returncode < 0 else returncode, decode(err))

    def spawn(self, argv, *, stdin=None, stdout=None, stderr=None):
        """Start ``argv`` (a ``subprocess.Popen``) that dies with its parent."""
        argv = check_argv(argv)
        log.debug("local spawn: %s", argv)
        try:
            return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                    env=self.env, preexec_fn=die_with_parent)
        except OSError as e:
            raise self._start_error(argv, e) from None

    def command_argv(self, argv):
        """The local argv that runs ``argv`` here: itself."""
        return check_argv(argv)


"""What every shell offers, wherever it runs commands.

Code that drives a command-line tool (``zfs``) takes a *shell* and makes
only the calls of ``Shell``; ``LocalShell`` (this machine),
``SSHTransport`` (another server) and the fakes of unit tests all provide
them, so handing in one or the other decides where the commands run and
nothing else. Argument lists only: a string argv is a TypeError and nothing
is ever interpreted by a shell that sdcadm did not quote itself.

This module sits under both transports (they import it, never each other).
"""

import os
import shlex
from typing import Iterator, NamedTuple, Protocol, runtime_checkable


class Result(NamedTuple):
    """What a command did. ``returncode`` is -1 when the command was killed
    by a signal (SSH then reports no exit status; local runs say -1 too)."""

    returncode: int
    stdout: str | bytes
    stderr: str | bytes


@runtime_checkable
class Shell(Protocol):
    """Runs argument lists somewhere. Failures raise the ``TransportError``
    tree of ``sdcadm.errors`` (``RemoteCommandFailed`` on a non-zero exit
    when ``check``), the same from every implementation."""

    address: str  # for messages: "localhost", "10.0.0.1:22", ...

    def run(self, argv, input=None, check=True, timeout=None) -> Result:
        """Run ``argv``, wait; ``Result`` with stdout/stderr decoded as UTF-8."""

    def run_bytes(self, argv, input=None, check=True, timeout=None) -> Result:
        """Like ``run`` with stdout/stderr as bytes."""

    def stream(self, argv, *, input=None, timeout=None) -> Iterator[str]:
        """Yield stdout lines as they arrive; raise at the end on failure."""

    def command_argv(self, argv) -> list[str]:
        """The argv that, run on *this* machine, runs ``argv`` where the
        shell does (for a pipe between two commands: ``zfs send | recv``)."""


def remote_command(argv):
    """``argv`` as one command line: every argument shell-quoted.

    Also the one check of an argv for every shell: a list of str, int or
    paths, no NUL byte, not empty."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a list of arguments, not a string "
                        "(sdcadm never builds a shell string from input)")
    args = []
    for arg in argv:
        if isinstance(arg, os.PathLike):
            arg = os.fsdecode(arg)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            arg = str(arg)
        elif not isinstance(arg, str):
            raise TypeError(f"argument {arg!r} is not a str, int or path")
        if "\0" in arg:
            raise ValueError(f"argument {arg!r} contains a NUL byte")
        args.append(arg)
    if not args:
        raise ValueError("argv is empty")
    return shlex.join(args)


def check_argv(argv):
    """``argv`` as a list of str, checked as ``remote_command`` does."""
    remote_command(argv)  # raises TypeError/ValueError on a bad argv
    return [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]


def decode(data):
    """Command output as text; undecodable bytes replaced, never an error."""
    return bytes(data).decode("utf-8", errors="replace")

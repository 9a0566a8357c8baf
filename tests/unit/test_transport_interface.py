"""The one shell interface both transports provide (and fakes imitate)."""

from sdcadm.transport.interface import Result, Shell, check_argv, decode
from sdcadm.transport.local import LocalShell
from sdcadm.transport.ssh import SSHTransport


def test_both_transports_are_shells():
    assert isinstance(LocalShell(), Shell)
    assert isinstance(SSHTransport("10.0.0.1", 2222, known_hosts="/kh"), Shell)


def test_a_local_run_gives_the_shared_result():
    result = LocalShell().run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert result == Result(3, "out\n", "err\n")


def test_check_argv_gives_strings():
    assert check_argv(["zfs", 3]) == ["zfs", "3"]


def test_decode_never_fails_on_bad_bytes():
    assert decode(b"ok \xff") == "ok \ufffd"

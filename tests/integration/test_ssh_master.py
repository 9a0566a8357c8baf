"""The shared SSH master connection (ControlMaster) never outlives a change
of known_hosts: a replaced or revoked host key takes effect on the next
command, not when the master expires."""

import shutil
import subprocess

import pytest

from sdcadm.transport.ssh import SSHTransport
from tests.conftest import needs_sshd

pytestmark = [pytest.mark.integration, needs_sshd]


def ssh(transport, *argv):
    return subprocess.run([*transport.ssh_argv(shared=True), transport.host, *argv],
                          capture_output=True, text=True, timeout=30)


def test_a_changed_known_hosts_is_not_bypassed_by_an_open_master(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    shutil.copy(sshd.known_hosts, known)
    address = sshd.listen_addresses[0]
    transport = SSHTransport(address, sshd.port, user=sshd.user, identity=sshd.identity,
                             known_hosts=known, connect_timeout=5)
    first = ssh(transport, "echo", "through-the-master")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "through-the-master"
    try:
        # The key is replaced by another one: the server is now "someone else".
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                       check=True)
        key_type, key = (tmp_path / "other.pub").read_text().split()[:2]
        known.write_text(f"[{address}]:{sshd.port} {key_type} {key}\n")
        second = ssh(transport, "echo", "must-not-run")
        assert second.returncode == 255 and "must-not-run" not in second.stdout
        assert "Host key verification failed" in second.stderr or "HOST IDENTIFICATION" in second.stderr
    finally:
        shutil.copy(sshd.known_hosts, known)
        ssh(transport, "true")
        for argv in (transport.ssh_argv(shared=True),):
            subprocess.run([*argv, "-O", "exit", transport.host], capture_output=True, timeout=30)

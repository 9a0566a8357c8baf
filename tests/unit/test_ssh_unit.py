"""The pure parts of the SSH transport and the lab sshd."""

import io
import os
import shlex
from pathlib import Path

import paramiko
import pytest

from sdcadm import fsutil
from sdcadm.errors import AuthError, HostKeyError, LabError, TransportError, Unreachable
from sdcadm.lab import sshd as sshd_mod
from sdcadm.lab.sshd import LabSshd, render_sshd_config
from sdcadm.transport import ssh
from sdcadm.transport.interface import remote_command
from sdcadm.transport.ssh import (
    SSHTransport,
    keyscan_command,
    known_hosts_line,
    known_hosts_name,
    liveness,
    master_tag,
)

# -- remote command -------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["echo", "hello"],
    ["printf", "%s", "a; touch /tmp/x"],
    ["sh", "-c", "echo $(id) `id` | cat && rm -rf /"],
    ["it's", '"double"', "back\\slash", "new\nline", "tab\there", "*", "~", ""],
])
def test_remote_command_quotes_every_argument(argv):
    assert shlex.split(remote_command(argv)) == argv


def test_remote_command_accepts_paths_and_ints():
    assert remote_command(["ls", Path("/a b"), 3]) == "ls '/a b' 3"


@pytest.mark.parametrize("argv, error", [
    ("echo hello", TypeError),
    (b"echo", TypeError),
    ([], ValueError),
    (["echo", b"bytes"], TypeError),
    (["echo", None], TypeError),
    (["echo", True], TypeError),
    (["echo", "a\0b"], ValueError),
])
def test_remote_command_rejects(argv, error):
    with pytest.raises(error):
        remote_command(argv)


# -- known_hosts -----------------------------------------------------------------

def test_known_hosts_names_follow_openssh():
    assert known_hosts_name("127.100.1.2", 22) == "127.100.1.2"
    assert known_hosts_name("127.100.1.2", 2222) == "[127.100.1.2]:2222"
    assert known_hosts_name("::1", 2222) == "[::1]:2222"
    assert known_hosts_line("10.0.0.1", 2222, "ssh-ed25519", "AAAAKEY") == \
        "[10.0.0.1]:2222 ssh-ed25519 AAAAKEY\n"


def test_known_hosts_line_is_read_back_by_paramiko(tmp_path):
    key = paramiko.RSAKey.generate(1024)
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts_line("127.100.1.2", 2222, key.get_name(), key.get_base64()))
    keys = paramiko.HostKeys(str(path))
    assert keys.lookup("[127.100.1.2]:2222")[key.get_name()] == key
    assert keys.lookup("127.100.1.2") is None


def test_keyscan_command():
    assert keyscan_command("h", 22, "/k") == "ssh-keyscan h >> /k"
    assert keyscan_command("h", 2222, "/a b") == "ssh-keyscan -p 2222 h >> '/a b'"


# -- transport without a server ----------------------------------------------------

def test_ssh_argv_pins_known_hosts_identity_and_port():
    t = SSHTransport("127.100.1.2", 2222, user="admin", identity="/keys/id 50%",
                     known_hosts="/etc/my known_hosts", connect_timeout=2.5)
    argv = t.ssh_argv()
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    pairs = list(zip(argv, argv[1:]))
    assert ("-p", "2222") in pairs and ("-l", "admin") in pairs
    assert ("-o", 'UserKnownHostsFile="/etc/my known_hosts"') in pairs
    assert ("-o", "StrictHostKeyChecking=yes") in pairs
    assert ("-o", "GlobalKnownHostsFile=/dev/null") in pairs
    assert ("-o", "ConnectTimeout=3") in pairs
    assert ("-i", "/keys/id 50%%") in pairs
    # a server cut off mid-transfer fails the command within ~3 x 2 s
    assert ("-o", "ServerAliveInterval=2") in pairs and ("-o", "ServerAliveCountMax=3") in pairs


def test_liveness_follows_the_connect_timeout():
    assert liveness(10) == (5, 15) and liveness(5.0) == (3, 9)
    assert liveness(0.1) == (1, 3)          # never a keepalive of 0 (off) or a fraction


def test_a_connection_ends_once_its_traffic_goes_unacknowledged():
    """The socket sdcadm connects with carries TCP_USER_TIMEOUT = dead_after
    (the kernel's own limit would be ~15 minutes)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    try:
        t = SSHTransport("127.0.0.1", server.getsockname()[1], connect_timeout=4)
        sock = t._open_socket()
        try:
            ms = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        finally:
            sock.close()
    finally:
        server.close()
    assert ms == liveness(4)[1] * 1000 == 6000


def test_transport_defaults():
    t = SSHTransport("h")
    assert (t.port, t.user, t.identity, t.known_hosts, t.connect_timeout) == \
        (22, "root", None, "/etc/sdcadm/known_hosts", 10.0)
    assert t.address == "h:22" and SSHTransport("::1", 2).address == "[::1]:2"


def test_input_chunks():
    assert ssh._input_chunks(None) is None
    assert b"".join(ssh._input_chunks("é")) == "é".encode()
    assert b"".join(ssh._input_chunks(b"x" * 200000)) == b"x" * 200000
    assert b"".join(ssh._input_chunks(io.BytesIO(b"abc"))) == b"abc"
    assert b"".join(ssh._input_chunks(io.StringIO("abc"))) == b"abc"
    with pytest.raises(TypeError):
        ssh._input_chunks(42)


def test_run_refuses_a_shell_string_before_connecting():
    with pytest.raises(TypeError):
        SSHTransport("127.0.0.1", 1).run("echo hi")


def test_missing_identity_file_is_auth_error(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    t = SSHTransport("127.0.0.1", 1, identity=tmp_path / "nope", known_hosts=known)
    with pytest.raises(AuthError, match="does not exist"):
        t._auth_options()


@pytest.fixture(scope="module")
def keys():
    return paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)


def test_error_mapping(keys):
    t = SSHTransport("127.100.1.2", 2222, user="admin", identity="/k/id",
                     known_hosts="/k/known_hosts")
    unknown = t._connect_error(ssh._UnknownHostKey("[127.100.1.2]:2222", keys[0]))
    assert isinstance(unknown, HostKeyError)
    assert "/k/known_hosts" in str(unknown) and keys[0].fingerprint in str(unknown)
    assert "ssh-keyscan -p 2222 127.100.1.2 >> /k/known_hosts" in str(unknown)

    changed = t._connect_error(paramiko.BadHostKeyException("127.100.1.2", keys[0], keys[1]))
    assert isinstance(changed, HostKeyError)
    assert "man-in-the-middle" in str(changed)
    assert "ssh-keygen -f /k/known_hosts -R '[127.100.1.2]:2222'" in str(changed)

    auth = t._connect_error(paramiko.AuthenticationException("Authentication failed."))
    assert isinstance(auth, AuthError)
    assert "admin@127.100.1.2:2222" in str(auth) and "/k/id" in str(auth)

    assert type(t._connect_error(paramiko.IncompatiblePeer("no kex"))) is TransportError
    assert isinstance(t._connect_error(paramiko.SSHException("Error reading SSH protocol banner")),
                      Unreachable)
    assert isinstance(t._connect_error(EOFError()), Unreachable)


# -- lab sshd ---------------------------------------------------------------------

def render(**overrides):
    options = dict(host_key="/lab/ssh/hk", pid_file="/lab/ssh/sshd.pid",
                   authorized_keys="/lab/ssh/authorized_keys", user="alice")
    options.update(overrides)
    return render_sshd_config(["127.100.0.1", "127.100.0.2"], 2222, **options)


def test_sshd_config_rendering():
    lines = render().splitlines()
    for line in ["Port 2222", "ListenAddress 127.100.0.1", "ListenAddress 127.100.0.2",
                 "HostKey /lab/ssh/hk", "PidFile /lab/ssh/sshd.pid",
                 "AuthorizedKeysFile /lab/ssh/authorized_keys", "AllowUsers alice",
                 "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                 "StrictModes no", "PermitRootLogin prohibit-password", "LogLevel VERBOSE",
                 "Subsystem sftp internal-sftp"]:
        assert line in lines


def test_sshd_config_quotes_and_escapes_paths():
    text = render(host_key="/my lab/hk", authorized_keys="/lab/50%/authorized_keys")
    assert 'HostKey "/my lab/hk"' in text.splitlines()
    assert "AuthorizedKeysFile /lab/50%%/authorized_keys" in text.splitlines()
    with pytest.raises(LabError):
        render(pid_file='/bad"dir/sshd.pid')


def test_sshd_config_rejects_a_bad_address():
    with pytest.raises(LabError):
        render_sshd_config(["not-an-ip"], 22, host_key="h", pid_file="p",
                           authorized_keys="a", user="u")


def test_lab_sshd_paths_and_user(tmp_path):
    lab = LabSshd(tmp_path / "ssh", "127.100.0.1", 2222)
    assert lab.listen_addresses == ["127.100.0.1"]
    assert (lab.identity, lab.known_hosts) == (tmp_path / "ssh" / "id_ed25519",
                                               tmp_path / "ssh" / "known_hosts")
    assert lab.port == 2222 and lab.user == sshd_mod.current_user()
    t = lab.transport("127.100.0.1", connect_timeout=1)
    assert (t.host, t.port, t.user, t.identity, t.known_hosts) == \
        ("127.100.0.1", 2222, lab.user, str(lab.identity), str(lab.known_hosts))
    with pytest.raises(LabError):
        LabSshd(tmp_path, ["localhost"], 2222)
    with pytest.raises(LabError):
        LabSshd(tmp_path, [], 2222)


def test_stale_pid_file_never_gets_another_process_killed(tmp_path):
    lab = LabSshd(tmp_path, ["127.100.0.1"], 2222)
    assert lab.pid is None and not lab.running()
    lab.pid_path.write_text(f"{os.getpid()}\n")  # a live process, but not our sshd
    assert lab.pid is None
    assert lab.stop() is False  # and we are still here
    assert not lab.pid_path.exists()


def test_missing_sshd_says_what_to_install(monkeypatch):
    monkeypatch.setattr(fsutil, "which", lambda name: None)
    with pytest.raises(LabError) as err:
        fsutil.find_program("sshd", LabError, "the lab's sshd")
    assert "sshd is not installed; the lab's sshd needs it" in str(err.value)
    assert "apt-get install openssh-server" in str(err.value)


def test_a_shared_master_is_reused_only_by_the_client_that_could_open_it(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("[h]:22 ssh-ed25519 AAAA\n")

    def control_path(identity):
        argv = SSHTransport("h", identity=identity, known_hosts=known).ssh_argv(shared=True)
        return next(a for a in argv if a.startswith("ControlPath="))

    assert control_path("/hn1/id") == control_path("/hn1/id")
    assert control_path("/hn1/id") != control_path("/hn2/id")     # another server's key
    assert master_tag(known, "/k") != master_tag(tmp_path / "gone", "/k")

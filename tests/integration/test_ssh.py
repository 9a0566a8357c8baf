"""SSHTransport against a real LabSshd on a random loopback address."""

import hashlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

import sdcadm
from sdcadm.errors import AuthError, HostKeyError, LabError, RemoteCommandFailed, TransportError, Unreachable
from sdcadm.lab.procs import proc_state
from sdcadm.lab.sshd import LabSshd
from sdcadm.transport.ssh import SSHTransport
from tests.conftest import free_port, random_address, wait_for


def _sshd_installed():
    return bool(shutil.which("sshd") or os.path.exists("/usr/sbin/sshd"))


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _sshd_installed(),
                       reason="sshd is not installed (apt-get install openssh-server)"),
    pytest.mark.skipif(not shutil.which("ssh-keygen"),
                       reason="ssh-keygen is not installed (apt-get install openssh-client)"),
]

USER_DIR_PREFIX = "sdcadm-ssh-user-"


def _raised(call, *args):
    try:
        call(*args)
    except Exception as e:  # noqa: BLE001 - returned for the test to judge
        return e
    return None



def sshd_processes(marker):
    """Pids of processes whose command line mentions ``marker``, but for the
    session's etcd (tests/conftest.py): its data lives under the base temp
    directory too, and it runs on when a test of this worker started it
    before this module's (the order two test workers take)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            state = proc_state(int(entry))
            if state and state[0] != "Z" and os.fsencode(marker) in state[1] \
                    and os.path.basename(state[1].split(b"\0")[0]) != b"etcd":
                pids.append(int(entry))
    return pids


@pytest.fixture(scope="module", autouse=True)
def nothing_left_running(tmp_path_factory):
    base = str(tmp_path_factory.getbasetemp())
    yield

    def leftovers():
        return sshd_processes(base) + sshd_processes(os.path.join(tempfile.gettempdir(),
                                                                  USER_DIR_PREFIX))

    # stopped, they may take a moment to exit on a loaded machine (two test workers)
    try:
        wait_for(lambda: not leftovers(), 15, "the module's sshd processes to exit")
    except AssertionError:
        pytest.fail(f"processes left running: {leftovers()}")


@pytest.fixture
def transport(sshd):
    with sshd.transport(connect_timeout=5) as t:
        yield t


# -- commands ---------------------------------------------------------------

def test_echo_hello(transport):
    result = transport.run(["echo", "hello"])
    assert result == (0, "hello\n", "")


def test_argv_is_passed_literally_never_through_a_shell(transport, tmp_path):
    marker = tmp_path / "pwned"
    nasty = [f"a; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", "it's \"quoted\"",
             "two  spaces", "*", "~", "$HOME", "line\nbreak", f"| touch {marker}", "&&", ""]
    result = transport.run(["printf", r"%s\0", *nasty])
    assert result.stdout.split("\0")[:-1] == nasty
    assert not marker.exists()


def test_stdin_input_text_bytes_and_file(transport, tmp_path):
    assert transport.run(["cat"], input="héllo\nworld\n").stdout == "héllo\nworld\n"
    blob = bytes(range(256)) * 8192  # 2 MiB, every byte value: more than one window
    result = transport.run_bytes(["cat"], input=blob)
    assert result.stdout == blob
    source = tmp_path / "in.bin"
    source.write_bytes(blob)
    with open(source, "rb") as f:
        digest = transport.run(["sha256sum"], input=f).stdout.split()[0]
    assert digest == hashlib.sha256(blob).hexdigest()


def test_large_stdout_and_stderr_together_do_not_deadlock(transport):
    # Repeated: the tail of the output ("end") was once lost when the channel
    # closed between draining and checking for the end (seen under load).
    for _ in range(5):
        result = transport.run_bytes(
            ["sh", "-c", "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo end"],
            timeout=60)
        assert len(result.stdout) == 3000004 and len(result.stderr) == 3000000
        assert result.stdout.endswith(b"end\n")


def test_undecodable_output_is_replaced_in_run(transport):
    result = transport.run(["printf", r"a\377b"])
    assert result.stdout == "a\ufffdb"


def test_nonzero_exit_raises_with_exit_code_and_stderr(transport):
    argv = ["sh", "-c", "echo partial; echo 'it broke' >&2; exit 3"]
    with pytest.raises(RemoteCommandFailed) as err:
        transport.run(argv)
    assert err.value.returncode == 3
    assert err.value.argv == argv
    assert "it broke" in str(err.value) and transport.address in str(err.value)
    assert transport.run(argv, check=False) == (3, "partial\n", "it broke\n")


def until_exists(path, then, first="", tries=600):
    """A remote shell command: ``first``, wait (at most ``tries`` x 0.05 s)
    until the test creates ``path``, then ``then``."""
    return ["sh", "-c", f'{first}i=0; while [ ! -e "$1" ] && [ $i -lt {tries} ]; do '
                        f'sleep 0.05; i=$((i+1)); done; {then}', "sh", str(path)]


def test_stream_yields_lines_in_order_as_they_arrive(transport, tmp_path):
    go = tmp_path / "go"
    lines = transport.stream(until_exists(go, "printf three", first="echo one; echo two; "))
    # The command cannot end before the test lets it: these two come while it runs.
    assert [next(lines), next(lines)] == ["one", "two"], "lines must be yielded before the end"
    go.touch()
    assert list(lines) == ["three"]


def test_stream_raises_at_the_end_on_nonzero_exit(transport):
    lines = []
    with pytest.raises(RemoteCommandFailed) as err:
        for line in transport.stream(["sh", "-c", "echo a; echo b; echo oops >&2; exit 5"]):
            lines.append(line)
    assert lines == ["a", "b"]
    assert err.value.returncode == 5 and "oops" in str(err.value)


def test_stream_closed_early_abandons_the_command(transport):
    lines = transport.stream(["sh", "-c", "while :; do echo y; done"])
    assert next(lines) == "y"
    lines.close()
    assert transport.run(["echo", "still usable"]).stdout == "still usable\n"


def test_timeout(transport, tmp_path):
    go = tmp_path / "go"
    try:
        # The command ends only once the test lets it (or after 30 s, which
        # run() without a working timeout would wait for and then return).
        with pytest.raises(TransportError, match="did not finish within 0.5 s"):
            transport.run(until_exists(go, "true"), timeout=0.5)
    finally:
        go.touch()
    assert transport.run(["echo", "still usable"]).stdout == "still usable\n"


def test_connection_is_reused(transport):
    first = transport.run(["printenv", "SSH_CONNECTION"]).stdout
    second = transport.run(["printenv", "SSH_CONNECTION"]).stdout
    assert first == second  # same client port: the same connection


def test_concurrent_calls_from_threads(transport):
    results = {}

    def work(i):
        results[i] = transport.run(["sh", "-c", 'sleep 0.2; echo "$1"', "sh", str(i)]).stdout

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"{i}\n" for i in range(8)}


@pytest.mark.skipif(not shutil.which("ssh"), reason="the OpenSSH client is not installed")
def test_openssh_client_with_ssh_argv(sshd):
    t = sshd.transport()
    proc = subprocess.run(t.ssh_argv() + [t.host, "echo", "via-openssh"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "via-openssh\n"


def test_reconnects_after_sshd_restart(tmp_path):
    addr = random_address()
    lab = LabSshd(tmp_path / "ssh", [addr], free_port(addr))
    lab.start()  # runs setup() itself the first time
    try:
        with lab.transport(connect_timeout=5) as t:
            assert t.run(["echo", "1"]).stdout == "1\n"
            lab.stop()
            lab.start()
            assert t.run(["echo", "2"]).stdout == "2\n"
    finally:
        lab.stop()


# -- failures to connect -------------------------------------------------------

def test_refused_port_is_unreachable(sshd):
    addr = sshd.listen_addresses[0]
    port = free_port(addr)
    t = SSHTransport(addr, port, user=sshd.user, identity=sshd.identity,
                     known_hosts=sshd.known_hosts, connect_timeout=5)
    with pytest.raises(Unreachable, match="connection refused") as err:
        t.run(["true"])
    assert f"{addr}:{port}" in str(err.value)
    assert err.value.exit_code == 3


def test_silent_listener_is_unreachable_after_connect_timeout(sshd):
    addr = random_address()
    with socket.socket() as listener:
        listener.bind((addr, 0))
        listener.listen(5)  # the kernel completes the handshake; nobody ever speaks
        port = listener.getsockname()[1]
        t = SSHTransport(addr, port, user=sshd.user, identity=sshd.identity,
                         known_hosts=sshd.known_hosts, connect_timeout=1)
        # Nobody ever speaks: without the connect timeout run() would hang.
        errors = []
        attempt = threading.Thread(target=lambda: errors.append(_raised(t.run, ["true"])),
                                   daemon=True)
        attempt.start()
        wait_for(lambda: errors, 30, "run() giving up on a silent listener")
    assert isinstance(errors[0], Unreachable), errors
    assert f"{addr}:{port}" in str(errors[0])


def test_empty_known_hosts_rejects_the_host_key(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    addr = sshd.listen_addresses[0]
    t = SSHTransport(addr, sshd.port, user=sshd.user, identity=sshd.identity,
                     known_hosts=known, connect_timeout=5)
    with pytest.raises(HostKeyError) as err:
        t.run(["true"])
    text = str(err.value)
    assert str(known) in text
    assert f"ssh-keyscan -p {sshd.port} {addr} >> {known}" in text
    assert "SHA256:" in text
    assert known.read_text() == ""  # never auto-added


def test_missing_known_hosts_file(sshd, tmp_path):
    t = SSHTransport(sshd.listen_addresses[0], sshd.port, user=sshd.user,
                     identity=sshd.identity, known_hosts=tmp_path / "nope", connect_timeout=5)
    with pytest.raises(HostKeyError, match="does not exist"):
        t.run(["true"])


def test_changed_host_key_is_refused_as_possible_mitm(sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True)
    key_type, key = (tmp_path / "other.pub").read_text().split()[:2]
    addr = sshd.listen_addresses[0]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{addr}]:{sshd.port} {key_type} {key}\n")
    t = SSHTransport(addr, sshd.port, user=sshd.user, identity=sshd.identity,
                     known_hosts=known, connect_timeout=5)
    with pytest.raises(HostKeyError, match="man-in-the-middle") as err:
        t.run(["true"])
    assert str(known) in str(err.value)


def test_wrong_identity_is_auth_error(sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(tmp_path / "stranger")], check=True)
    t = SSHTransport(sshd.listen_addresses[0], sshd.port, user=sshd.user,
                     identity=tmp_path / "stranger", known_hosts=sshd.known_hosts,
                     connect_timeout=5)
    with pytest.raises(AuthError) as err:
        t.run(["true"])
    assert f"{sshd.user}@" in str(err.value) and str(tmp_path / "stranger") in str(err.value)


def test_missing_identity_is_auth_error(sshd, tmp_path):
    t = SSHTransport(sshd.listen_addresses[0], sshd.port, user=sshd.user,
                     identity=tmp_path / "absent", known_hosts=sshd.known_hosts)
    with pytest.raises(AuthError, match="does not exist"):
        t.run(["true"])


def test_user_not_allowed_is_auth_error(sshd):
    other = "nobody" if sshd.user != "nobody" else "root"
    t = SSHTransport(sshd.listen_addresses[0], sshd.port, user=other, identity=sshd.identity,
                     known_hosts=sshd.known_hosts, connect_timeout=5)
    with pytest.raises(AuthError, match=f"{other}@"):
        t.run(["true"])


# -- the lab sshd itself ---------------------------------------------------------

def test_setup_and_start_are_idempotent(tmp_path):
    addrs = [random_address(), random_address()]
    lab = LabSshd(tmp_path / "ssh", addrs, free_port(addrs[0]))
    lab.setup()
    keys = {p: (lab.dir / p).read_bytes() for p in ("ssh_host_ed25519_key", "id_ed25519")}
    lab.setup()
    assert keys == {p: (lab.dir / p).read_bytes() for p in keys}
    assert len(lab.known_hosts.read_text().splitlines()) == 2
    try:
        pid = lab.start()
        assert lab.start() == pid and lab.running()
        for addr in addrs:  # every address is a "server"
            with lab.transport(addr) as t:
                assert t.run(["printenv", "SSH_CONNECTION"]).stdout.split()[2] == addr
    finally:
        assert lab.stop() is True
    assert lab.stop() is False and not lab.running()
    assert proc_state(pid) is None


def test_stop_from_another_process(tmp_path):
    addr = random_address()
    lab = LabSshd(tmp_path / "ssh", [addr], free_port(addr))
    pid = lab.start()
    try:
        script = ("import sys; from sdcadm.lab.sshd import LabSshd; "
                  "print(LabSshd(sys.argv[1], [sys.argv[2]], int(sys.argv[3])).stop())")
        out = subprocess.run([sys.executable, "-c", script, str(lab.dir), addr, str(lab.port)],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        assert out.strip() == "True"
        assert not lab.running()
    finally:
        lab.stop()
    assert proc_state(pid) is None


def test_start_fails_clearly_when_the_port_is_taken(tmp_path):
    addr = random_address()
    with socket.socket() as squatter:
        squatter.bind((addr, 0))
        squatter.listen(1)
        lab = LabSshd(tmp_path / "ssh", [addr], squatter.getsockname()[1])
        with pytest.raises(LabError, match="already in use"):
            lab.start()
    assert not lab.running()


def _python_for(user):
    """An interpreter ``user`` can run that can import sdcadm and paramiko, with
    the environment to do so; or the reason there is none."""
    repo = str(Path(sdcadm.__file__).resolve().parent.parent)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin",
           "PYTHONPATH": os.pathsep.join([repo, sysconfig.get_paths()["purelib"],
                                          sysconfig.get_paths()["platlib"]])}
    probe = "import sys, paramiko, sdcadm.lab.sshd; print('%d.%d' % sys.version_info[:2])"
    want = "%d.%d" % sys.version_info[:2]
    for python in (sys.executable, "/usr/bin/python3"):
        proc = subprocess.run([shutil.which("runuser"), "-u", user, "--", python, "-c", probe],
                              env=env, capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 and proc.stdout.strip() == want:
            return python, env, None
    return None, None, (f"no Python {want} that user {user} can run can import sdcadm: "
                        f"{proc.stderr.strip()[-200:]}")


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="not root: cannot create a user, and the other tests already run "
                           "sshd as a normal user")
@pytest.mark.skipif(not (shutil.which("useradd") and shutil.which("runuser")),
                    reason="useradd/runuser are not installed")
def test_lab_sshd_as_a_normal_user():
    user = f"sdcadmt{random.randint(0, 999999):06d}"
    work = Path(tempfile.mkdtemp(prefix=USER_DIR_PREFIX))
    addr = random_address()
    port = free_port(addr)
    created = False
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(work),
                        "--shell", "/bin/sh", user], check=True, capture_output=True, timeout=60)
        created = True
        account = pwd.getpwnam(user)
        os.chown(work, account.pw_uid, account.pw_gid)
        python, env, reason = _python_for(user)
        if python is None:
            pytest.skip(reason)

        def as_user(code):
            script = textwrap.dedent(f"""
                from sdcadm.lab.sshd import LabSshd
                lab = LabSshd({str(work / 'ssh')!r}, [{addr!r}], {port})
            """) + code
            argv = [shutil.which("runuser"), "-u", user, "--", python, "-c", script]
            return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)

        # The starter stays to reap its sshd once another process stopped it
        # (as `lab up` would not: there init reaps it).
        starter = as_user("lab.setup(); print(lab.start(), lab.user, flush=True); lab._proc.wait()")
        try:
            first = starter.stdout.readline().split()
            assert len(first) == 2, starter.stderr.read() if starter.poll() is not None else first
            pid, lab_user = int(first[0]), first[1]
            assert lab_user == user
            uid = [line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("Uid:")][0]
            assert int(uid) == account.pw_uid  # sshd runs as the user
            lab = LabSshd(work / "ssh", [addr], port)
            with SSHTransport(addr, port, user=user, identity=lab.identity,
                              known_hosts=lab.known_hosts, connect_timeout=5) as t:
                assert t.run(["id", "-un"]).stdout == f"{user}\n"
                assert t.run(["cat"], input="x").stdout == "x"
            stopper = as_user("print(lab.stop(), lab.running())")
            out, err = stopper.communicate(timeout=60)
            assert stopper.returncode == 0, err
            assert out.split() == ["True", "False"]
            assert starter.wait(timeout=30) == 0
        finally:
            if starter.poll() is None:
                starter.kill()
                starter.wait()
            starter.stdout.close()
            starter.stderr.close()
        assert proc_state(pid) is None
    finally:
        for pid in sshd_processes(str(work)):  # only if something above failed
            os.kill(pid, 9)
        if created:
            subprocess.run(["userdel", user], capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)

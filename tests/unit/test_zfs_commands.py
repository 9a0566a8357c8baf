"""The zfs wrapper: exact command lines (fake shell), error mapping, and the
send | recv relay (with a stand-in zfs script, no pool needed)."""

import os
import stat
import textwrap
from pathlib import Path

import pytest

from sdcadm.errors import (
    AuthError,
    HostKeyError,
    ReplicaDiverged,
    Unreachable,
    ZfsBusy,
    ZfsError,
    ZfsExists,
    ZfsHasClones,
    ZfsHoldExists,
    ZfsNoSuchHold,
    ZfsNotFound,
    ZfsReceiveDiverged,
    ZfsStreamError,
)
from sdcadm.transport.interface import Result
from sdcadm.transport import zfs as zfsmod
from sdcadm.transport.local import LocalShell
from sdcadm.transport.zfs import Zfs, map_error, map_ssh_error, send_recv


class FakeShell:
    """The part of transport.interface.Shell that Zfs uses (``run``,
    ``address``): records every argv; answers from a queue of (returncode,
    stdout, stderr)."""

    address = "fake:22"

    def __init__(self, *answers):
        self.calls = []
        self.answers = list(answers)

    def run(self, argv, input=None, check=True, timeout=None):
        self.calls.append(list(argv))
        rc, out, err = self.answers.pop(0) if self.answers else (0, "", "")
        return Result(rc, out, err)


def zfs_with(*answers):
    shell = FakeShell(*answers)
    return Zfs(shell), shell


# -- command lines ---------------------------------------------------------------

def test_get_parses_values_and_dashes():
    z, shell = zfs_with((0, "p/a@s\tguid\t123\np/a@s\tuserrefs\t-\n", ""))
    assert z.get("p/a@s", ("guid", "userrefs")) == {"p/a@s": {"guid": "123", "userrefs": None}}
    assert shell.calls == [["zfs", "get", "-H", "-p", "-o", "name,property,value", "guid,userrefs",
                            "p/a@s"]]


def test_get_of_nothing_runs_nothing():
    z, shell = zfs_with()
    assert z.get([]) == {}
    assert shell.calls == []


def test_snapshots_one_command_filters_and_sorts():
    out = "".join(f"{n}\t{p}\t{v}\n" for n, p, v in [
        ("p/a", "guid", "1"), ("p/a", "createtxg", "5"), ("p/a", "userrefs", "-"),
        ("p/a@new", "guid", "30"), ("p/a@new", "createtxg", "30"), ("p/a@new", "creation", "1700"),
        ("p/a@new", "userrefs", "2"),
        ("p/a@old", "guid", "20"), ("p/a@old", "createtxg", "20"), ("p/a@old", "creation", "1600"),
        ("p/a@old", "userrefs", "0"),
        ("p/a/child", "guid", "9"), ("p/a/child@x", "guid", "10"),
    ])
    z, shell = zfs_with((0, out, ""))
    snaps = z.snapshots("p/a")
    assert shell.calls == [["zfs", "get", "-H", "-p", "-r", "-d", "1", "-o", "name,property,value",
                            "guid,createtxg,creation,userrefs", "p/a"]]
    assert [(s.name, s.guid, s.createtxg, s.creation, s.userrefs) for s in snaps] == [
        ("p/a@old", "20", 20, 1600, 0), ("p/a@new", "30", 30, 1700, 2)]
    assert snaps[1].short == "new"


def test_snapshot_held_is_one_round_trip_with_values_as_parameters():
    listing = "p/a@new\tguid\t7\np/a@new\tcreatetxg\t9\np/a@new\tuserrefs\t1\n"
    z, shell = zfs_with((0, listing, ""))
    snaps = z.snapshot_held("p/a", "new", "sdcadm-r1", {"sdcadm:hold:r1": "sdcadm-r1"})
    assert [(s.name, s.guid, s.userrefs) for s in snaps] == [("p/a@new", "7", 1)]
    (argv,) = shell.calls
    assert argv[:2] == ["sh", "-c"]
    script = argv[2]
    assert script == zfsmod._SNAPSHOT_HELD  # a constant: values never in the script text
    assert argv[3:] == ["sh", "zfs", "p/a", "p/a@new", "sdcadm-r1", "", "", "-o",
                        "sdcadm:hold:r1=sdcadm-r1"]
    for step in ('snapshot "$@" "$snap"', 'hold "$tag" "$snap"', 'destroy -d "$snap"',
                 'get -H -p -r -d 1'):
        assert step in script


def test_snapshot_held_maps_errors():
    z, _ = zfs_with((1, "", "cannot create snapshot 'p/a@new': dataset already exists\n"))
    with pytest.raises(ZfsExists):
        z.snapshot_held("p/a", "new", "t")
    z, _ = zfs_with((1, "", "cannot open 'p/a': dataset does not exist\n"))
    with pytest.raises(ZfsNotFound):
        z.snapshot_held("p/a", "new", "t")


FAKE_LIST = textwrap.dedent("""\
    #!/bin/sh
    echo "$@" >> "$LOG"
    if [ "$1" = list ]; then
        printf '%s\\n' "$DS@manual" "$DS@sdcadm-sync-1" "$DS@sdcadm-sync-2" "$DS@s;rm -rf x"
    fi
""")


def test_snapshot_held_really_runs_in_sh(tmp_path, monkeypatch):
    log = tmp_path / "log"
    fake = tmp_path / "zfs"
    fake.write_text(FAKE_LIST)
    fake.chmod(0o755)
    monkeypatch.setenv("LOG", str(log))
    monkeypatch.setenv("DS", "p/a b")
    Zfs(LocalShell(), str(fake)).snapshot_held("p/a b", "s;rm -rf x", "t$(id)", {"u:p": "v w"})
    get = "get -H -p -r -d 1 -o name,property,value guid,createtxg,creation,userrefs p/a b"
    assert log.read_text().splitlines() == [
        "snapshot -o u:p=v w p/a b@s;rm -rf x", "hold t$(id) p/a b@s;rm -rf x",
        "destroy -d p/a b@s;rm -rf x", get]
    log.unlink()
    Zfs(LocalShell(), str(fake)).snapshot_held("p/a b", "sdcadm-sync-3", "t", release_except="sdcadm-sync-2")
    assert log.read_text().splitlines() == [
        "snapshot p/a b@sdcadm-sync-3", "hold t p/a b@sdcadm-sync-3", "destroy -d p/a b@sdcadm-sync-3",
        "list -H -t snapshot -o name -r p/a b",
        "release t p/a b@sdcadm-sync-1",  # not manual, not the base (2), not the new one
        get]


def test_list_snapshot_names():
    z, shell = zfs_with((0, "p/a@x\np/a/child@y\np/a@z\n", ""))
    assert z.list_snapshot_names("p/a") == ["p/a@x", "p/a@z"]
    assert shell.calls == [["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", "p/a"]]


@pytest.mark.parametrize("call, argv", [
    (lambda z: z.snapshot("p/a@s"), ["zfs", "snapshot", "p/a@s"]),
    (lambda z: z.snapshot("p/a@s", {"sdcadm:hold:r": "sdcadm-r"}),
     ["zfs", "snapshot", "-o", "sdcadm:hold:r=sdcadm-r", "p/a@s"]),
    (lambda z: z.create("p/a/b", {"mountpoint": "none"}, parents=True),
     ["zfs", "create", "-p", "-o", "mountpoint=none", "p/a/b"]),
    (lambda z: z.destroy("p/a@s"), ["zfs", "destroy", "p/a@s"]),
    (lambda z: z.destroy("p/a", recursive=True), ["zfs", "destroy", "-r", "p/a"]),
    (lambda z: z.hold("sdcadm-r1", "p/a@s"), ["zfs", "hold", "sdcadm-r1", "p/a@s"]),
    (lambda z: z.release("sdcadm-r1", "p/a@s"), ["zfs", "release", "sdcadm-r1", "p/a@s"]),
    (lambda z: z.set("p/a", "readonly", "on"), ["zfs", "set", "readonly=on", "p/a"]),
    (lambda z: z.inherit("p/a@s", "sdcadm:x"), ["zfs", "inherit", "sdcadm:x", "p/a@s"]),
    (lambda z: z.clone("p/a@s", "p/c", {"mountpoint": "/t"}),
     ["zfs", "clone", "-o", "mountpoint=/t", "p/a@s", "p/c"]),
    (lambda z: z.rename("p/a", "p/b"), ["zfs", "rename", "p/a", "p/b"]),
    (lambda z: z.rollback("p/a@s", destroy_newer=True), ["zfs", "rollback", "-r", "p/a@s"]),
    (lambda z: z.mount("p/a"), ["zfs", "mount", "p/a"]),
])
def test_exact_command_lines(call, argv):
    z, shell = zfs_with()
    call(z)
    assert shell.calls == [argv]


def test_stream_argvs():
    z = Zfs(FakeShell(), binary="/usr/sbin/zfs")
    assert z.send_argv("p/a@s2") == ["/usr/sbin/zfs", "send", "p/a@s2"]
    assert z.send_argv("p/a@s2", "p/a@s1") == ["/usr/sbin/zfs", "send", "-i", "p/a@s1", "p/a@s2"]
    assert z.send_argv("p/a@s2", "p/a@s1", intermediates=True)[2] == "-I"
    assert z.recv_argv("q/r") == ["/usr/sbin/zfs", "recv", "-F", "q/r"]
    assert z.recv_argv("q/r", force=False) == ["/usr/sbin/zfs", "recv", "q/r"]


def test_exists_maps_not_found_to_false():
    z, _ = zfs_with((1, "", "cannot open 'p/x': dataset does not exist\n"), (0, "p/a\ttype\tfilesystem\n", ""))
    assert z.exists("p/x") is False
    assert z.exists("p/a") is True


def test_destroy_retries_busy_only_when_asked():
    busy = (1, "", "cannot destroy 'p/a': dataset is busy\n")
    z, shell = zfs_with(busy, busy, (0, "", ""))
    z.destroy("p/a", busy_timeout=5)
    assert len(shell.calls) == 3
    z, shell = zfs_with(busy)
    with pytest.raises(ZfsBusy):
        z.destroy("p/a")
    clones = (1, "", "cannot destroy 'p/a@s': snapshot has dependent clones\n")
    z, shell = zfs_with(clones, (0, "", ""))
    with pytest.raises(ZfsHasClones):
        z.destroy("p/a@s", busy_timeout=5)
    assert len(shell.calls) == 1


# -- error mapping ---------------------------------------------------------------

@pytest.mark.parametrize("stderr, cls", [
    ("cannot open 'p/x': dataset does not exist", ZfsNotFound),
    ("cannot create snapshot 'p/a@s': dataset already exists", ZfsExists),
    ("cannot receive new filesystem stream: destination 'p/r' exists\nmust specify -F to overwrite it",
     ZfsExists),
    ("cannot receive incremental stream: destination p/r has been modified\nsince most recent snapshot",
     ZfsReceiveDiverged),
    ("cannot receive incremental stream: most recent snapshot of p/r does not\nmatch incremental source",
     ZfsReceiveDiverged),
    ("cannot receive new filesystem stream: destination has snapshots (eg. p/r@s3)\n"
     "must destroy them to overwrite it", ZfsReceiveDiverged),
    ("cannot destroy 'p/a@s': dataset is busy", ZfsBusy),
    ("cannot destroy 'p/a@s': snapshot has dependent clones", ZfsHasClones),
    ("cannot release 'x' from 'p/a@s': no such tag on this dataset", ZfsNoSuchHold),
    ("cannot hold 'p/a@s': tag already exists on this dataset", ZfsHoldExists),
    ("cannot receive: invalid backup stream", ZfsStreamError),
    ("something nobody expected", ZfsError),
])
def test_map_error(stderr, cls):
    error = map_error(["zfs", "x"], 1, stderr, "h:22")
    assert type(error) is cls
    assert "h:22" in str(error) and stderr.splitlines()[0] in str(error)


def test_diverged_receive_is_a_replica_diverged_with_a_reseed_hint():
    error = map_error(["zfs", "recv"], 1, "destination p/r has been modified")
    assert isinstance(error, ReplicaDiverged)
    assert "--reseed" in str(error)


def test_missing_zfs_says_what_to_install():
    error = map_error(["zfs", "get"], 127, "bash: line 1: zfs: command not found")
    assert "apt-get install zfs-fuse" in str(error)


def test_map_ssh_error():
    assert map_ssh_error("h", 1, "anything") is None
    assert isinstance(map_ssh_error("h", 255, "ssh: connect to host h port 22: Connection refused"),
                      Unreachable)
    assert isinstance(map_ssh_error("h", 255, "Host key verification failed."), HostKeyError)
    assert isinstance(map_ssh_error("h", 255, "root@h: Permission denied (publickey)."), AuthError)


# -- send | recv through a stand-in zfs --------------------------------------------

FAKE_ZFS = textwrap.dedent("""\
    #!/bin/sh
    # send [-i base] snap: writes $SIZE bytes; recv [-F] target: stores stdin
    case "$1" in
    send) [ -n "$SEND_FAIL" ] && { echo "$SEND_FAIL" >&2; exit 1; }
          head -c "$SIZE" /dev/zero ;;
    recv) [ -n "$RECV_FAIL" ] && { cat >/dev/null; echo "$RECV_FAIL" >&2; exit 1; }
          cat > "$OUT" ;;
    esac
""")


@pytest.fixture
def fake_zfs(tmp_path, monkeypatch):
    path = tmp_path / "zfs"
    path.write_text(FAKE_ZFS)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("OUT", str(tmp_path / "received"))
    monkeypatch.setenv("SIZE", str(3 * 1024 * 1024 + 17))
    monkeypatch.delenv("SEND_FAIL", raising=False)
    monkeypatch.delenv("RECV_FAIL", raising=False)
    return str(path)


def test_send_recv_moves_and_counts_bytes(fake_zfs, tmp_path):
    events = []
    local = Zfs(LocalShell(), fake_zfs)
    moved = send_recv(local, local, "p/a@s2", "q/r", base="p/a@s1", observer=events.append)
    assert moved == 3 * 1024 * 1024 + 17
    assert os.path.getsize(tmp_path / "received") == moved
    assert events[-1].done == moved == events[-1].total


def test_send_recv_maps_the_receivers_error(fake_zfs, monkeypatch):
    monkeypatch.setenv("RECV_FAIL", "cannot receive incremental stream: most recent snapshot of q/r "
                                     "does not match incremental source")
    local = Zfs(LocalShell(), fake_zfs)
    with pytest.raises(ZfsReceiveDiverged):
        send_recv(local, local, "p/a@s2", "q/r", base="p/a@s1")


def test_send_recv_maps_the_senders_error(fake_zfs, monkeypatch):
    monkeypatch.setenv("SEND_FAIL", "cannot open 'p/a@s2': dataset does not exist")
    monkeypatch.setenv("SIZE", "0")
    local = Zfs(LocalShell(), fake_zfs)
    with pytest.raises(ZfsNotFound):
        send_recv(local, local, "p/a@s2", "q/r")


class FakeSSH:
    """A 'remote' shell whose piped command is an ssh that cannot connect."""

    host = address = "10.9.9.9:22"

    def command_argv(self, argv):
        return ["sh", "-c", "echo 'ssh: connect to host 10.9.9.9 port 22: Connection refused' >&2; "
                            "exit 255"]


def test_send_recv_unreachable_source(fake_zfs):
    remote = Zfs(FakeSSH(), "zfs")
    local = Zfs(LocalShell(), fake_zfs)
    with pytest.raises(Unreachable):
        send_recv(remote, local, "p/a@s2", "q/r")


def test_command_argv_over_ssh_quotes_the_remote_command():
    from sdcadm.transport.ssh import SSHTransport
    t = SSHTransport("10.0.0.1", 2222, identity="/k", known_hosts="/kh")
    argv = t.command_argv(["zfs", "send", "p/a@it's"])
    assert argv[:1] == ["ssh"] and "StrictHostKeyChecking=yes" in argv
    assert argv[-3:] == ["--", "10.0.0.1", "zfs send 'p/a@it'\"'\"'s'"]


def test_command_argv_locally_is_the_command_itself():
    assert LocalShell().command_argv(["zfs", "send", Path("/p")]) == ["zfs", "send", "/p"]


FAKE_SEND = textwrap.dedent("""\
    #!/bin/sh
    echo "$@" >> "$LOG"
    if [ "$1" = send ]; then cat "$STREAM"; fi
""")


@pytest.mark.parametrize("stream, unchanged", [
    (bytes.fromhex("0000000000000000accbbaf502000000") + bytes(296)
     + bytes.fromhex("05000000") + bytes(308), True),                      # BEGIN, END
    (bytes.fromhex("0000000000000000accbbaf502000000") + bytes(296)
     + bytes.fromhex("02000000") + bytes(308) + bytes.fromhex("05000000") + bytes(308),
     False),                                                               # + FREEOBJECTS
    (bytes.fromhex("0000000000000000accbbaf502000000") + bytes(296)
     + bytes.fromhex("00000005") + bytes(308), False),                     # big-endian END
    (b"", False),                                                          # send failed
])
def test_snapshot_held_probe_says_unchanged_only_for_an_empty_stream(tmp_path, monkeypatch,
                                                                    stream, unchanged):
    log, fake, data = tmp_path / "log", tmp_path / "zfs", tmp_path / "stream"
    fake.write_text(FAKE_SEND)
    fake.chmod(0o755)
    data.write_bytes(stream)
    monkeypatch.setenv("LOG", str(log))
    monkeypatch.setenv("STREAM", str(data))
    snaps, said = Zfs(LocalShell(), str(fake)).snapshot_held(
        "p/a", "sdcadm-sync-3", "t", release_except="sdcadm-sync-2", probe=True)
    assert said is unchanged
    calls = log.read_text().splitlines()
    assert "send -i p/a@sdcadm-sync-2 p/a@sdcadm-sync-3" in calls
    # an empty stream: the new snapshot is released again (deferred destroy removes it)
    assert ("release t p/a@sdcadm-sync-3" in calls) is unchanged


def test_unchanged_since_probes_with_a_scratch_snapshot_it_destroys(tmp_path, monkeypatch):
    log, fake, data = tmp_path / "log", tmp_path / "zfs", tmp_path / "stream"
    fake.write_text(FAKE_SEND)
    fake.chmod(0o755)
    data.write_bytes(bytes.fromhex("0000000000000000accbbaf502000000") + bytes(296)
                     + bytes.fromhex("05000000") + bytes(308))
    monkeypatch.setenv("LOG", str(log))
    monkeypatch.setenv("STREAM", str(data))
    assert Zfs(LocalShell(), str(fake)).unchanged_since("p/a@base", "probe") is True
    assert log.read_text().splitlines() == [
        "snapshot p/a@probe", "send -i p/a@base p/a@probe", "destroy p/a@probe"]
    data.write_bytes(b"")
    assert Zfs(LocalShell(), str(fake)).unchanged_since("p/a@base", "probe") is False

"""rsync argument building, --stats parsing and exit mapping; LocalShell."""

import shlex

import pytest

from sdcadm.errors import (
    AuthError,
    DatasetError,
    HostKeyError,
    RemoteCommandFailed,
    TransportError,
    Unreachable,
)
from sdcadm.transport import rsync
from sdcadm.transport.local import LocalShell

STATS = """
Number of files: 52 (reg: 47, dir: 5)
Number of created files: 1 (reg: 1)
Number of deleted files: 0
Number of regular files transferred: 2
Total file size: 6,393,180 bytes
Total transferred file size: 1,064,960 bytes
Literal data: 81,920 bytes
Matched data: 983,040 bytes
File list size: 0
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 10,873
Total bytes received: 83,401

sent 10,873 bytes  received 83,401 bytes  188,548.00 bytes/sec
total size is 6,393,180  speedup is 67.82
"""


def test_parse_stats():
    s = rsync.parse_stats(STATS)
    assert s == rsync.RsyncStats(files=52, transferred_files=2, total_size=6393180,
                                 transferred_size=1064960, literal=81920, matched=983040,
                                 sent=10873, received=83401)
    assert s.wire_bytes == 94274
    assert rsync.parse_stats("") == rsync.RsyncStats()


def test_parse_progress():
    chunk = "\r      1,048,576  12%   10.00MB/s    0:00:01 (xfr#1, to-chk=5/9)\r      2,097,152  25%"
    assert rsync.parse_progress(chunk) == 2_097_152
    assert rsync.parse_progress("Number of files: 3") is None


def test_rsync_args():
    ssh = ["ssh", "-p", "2222", "-o", "UserKnownHostsFile=/k h"]
    args = rsync.rsync_args(ssh, "10.0.0.1", "/zones/u/data", "/r/.tmp-x", link_dest="/r/s/a")
    assert args == ["-a", "--numeric-ids", "--modify-window=-1", "--stats", "-e", shlex.join(ssh), "--delete",
                    "--link-dest=/r/s/a", "10.0.0.1:/zones/u/data/", "/r/.tmp-x/"]
    args = rsync.rsync_args(ssh, "fd00::1", "/d/", "/x", progress=True)
    assert "--info=progress2" in args and args[-2] == "[fd00::1]:/d/"


@pytest.mark.parametrize("code, stderr, cls", [
    (255, "ssh: connect to host 10.0.0.1 port 22: Connection refused\nrsync: connection "
          "unexpectedly closed (0 bytes received so far) [Receiver]", Unreachable),
    (12, "rsync: connection unexpectedly closed", Unreachable),
    (255, "Host key verification failed.\nrsync: connection unexpectedly closed", HostKeyError),
    (255, "root@10.0.0.1: Permission denied (publickey).", AuthError),
    (23, 'rsync: [sender] change_dir "/nope" failed: No such file or directory (2)\n'
         "rsync error: some files/attrs were not transferred (code 23)", DatasetError),
    (24, "file has vanished: \"/d/x\"", DatasetError),
    (2, "rsync: protocol incompatibility", TransportError),
])
def test_map_exit(code, stderr, cls):
    error = rsync.map_exit(code, stderr, "10.0.0.1:22")
    assert type(error) is cls
    if code == 23:
        assert "change_dir" in str(error)


def test_parse_vanished_names_files_relative_to_the_source():
    stderr = ('file has vanished: "/zones/u/data/.k1.tmp9"\n'
              'file has vanished: "/zones/u/data/sub/.k2.tmp9"\n'
              "rsync warning: some files vanished before they could be transferred (code 24) "
              "at main.c(1865) [generator=3.2.7]\n")
    assert rsync.parse_vanished(stderr, "/zones/u/data/") == (".k1.tmp9", "sub/.k2.tmp9")
    assert rsync.parse_vanished(stderr, "/elsewhere") == ("/zones/u/data/.k1.tmp9",
                                                          "/zones/u/data/sub/.k2.tmp9")
    assert rsync.parse_vanished("rsync error: x (code 23)", "/d") == ()


def test_map_exit_ok():
    assert rsync.map_exit(0, "", "h") is None


def test_local_shell_run_and_errors():
    sh = LocalShell()
    assert sh.run(["echo", "a b"]).stdout == "a b\n"
    assert sh.run(["cat"], input="x").stdout == "x"
    assert sh.run_bytes(["printf", "\\377"]).stdout == b"\xff"
    with pytest.raises(RemoteCommandFailed) as e:
        sh.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert e.value.returncode == 3 and "boom" in str(e.value)
    assert sh.run(["false"], check=False).returncode == 1
    with pytest.raises(TypeError):
        sh.run("echo hi")
    with pytest.raises(TransportError):
        sh.run(["/nonexistent/program"])
    with pytest.raises(TransportError):
        sh.run(["sleep", "5"], timeout=0.2)


def test_local_shell_stream():
    sh = LocalShell()
    assert list(sh.stream(["printf", "a\\nb\\nc"])) == ["a", "b", "c"]
    with pytest.raises(RemoteCommandFailed):
        list(sh.stream(["sh", "-c", "echo x; exit 4"]))

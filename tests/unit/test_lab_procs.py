"""Process supervision of the lab (procs.py), on real short-lived processes."""

import subprocess
import sys

from sdcadm.lab import procs


def test_stop_tree_stops_a_daemon_and_everything_under_it(tmp_path):
    proc = procs.spawn_daemon(["sh", "-c", "sleep 60 & sleep 60 & wait"], tmp_path / "log")
    try:
        assert procs.wait_until(lambda: len(procs.descendants(proc.pid)) == 2, 10)
        children = procs.descendants(proc.pid)
        procs.stop_tree(proc.pid, 5.0, child=proc, what="the test daemon")
        assert proc.poll() is not None
        assert all(procs.gone(pid) for pid in children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_wait_until_gives_up_when_the_process_exits(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert procs.wait_until(lambda: False, 60, proc=proc) is False


def test_a_pid_file_is_written_whole(tmp_path):
    pidfile = tmp_path / "x.pid"
    procs.write_pid(pidfile, 1234)
    assert procs.read_pid(pidfile) == 1234
    assert [p.name for p in tmp_path.iterdir()] == ["x.pid"]

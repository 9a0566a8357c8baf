"""DirBackend: real rsync over a real LabSshd on a random loopback address."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest

from sdcadm.datasets.base import SourceRef
from sdcadm.datasets.dirbackend import DirBackend
from sdcadm.errors import DatasetError, Unreachable
from tests import filedigest
from tests.conftest import kill_when_marked, random_address, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")),
                       reason="sshd is not installed (apt-get install openssh-server)"),
    pytest.mark.skipif(not shutil.which("rsync"), reason="rsync is not installed (apt-get install rsync)"),
    pytest.mark.skipif(not shutil.which("ssh"), reason="ssh is not installed (apt-get install openssh-client)"),
]

MiB = 1 << 20
RECEIVER_A = "aaaaaaaa-0000-4000-8000-000000000001"
RECEIVER_B = "bbbbbbbb-0000-4000-8000-000000000002"
INSTANCE = "11111111-2222-4333-8444-555555555555"




@pytest.fixture
def backend(sshd):
    return DirBackend(transport_factory=lambda host: sshd.transport(host))


def write_random(path, size, seed):
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rng.randbytes(size))


@pytest.fixture
def source_dir(tmp_path):
    """A few MiB of mixed file sizes."""
    src = tmp_path / "source" / "data"
    for i in range(6):
        write_random(src / f"big{i}.bin", MiB, seed=i)
    for i in range(40):
        write_random(src / "small" / f"f{i:02d}.txt", 1000 + 97 * i, seed=100 + i)
    (src / "empty").mkdir()
    return src


def source_ref(sshd, path, host=None):
    return SourceRef(server_uuid="5e4e0000-0000-4000-8000-000000000000", hostname="cn0",
                     host=host or sshd.listen_addresses[0], instance_uuid=INSTANCE, path=str(path))


def tree_hashes(root):
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = hashlib.sha256(os.fsencode(os.readlink(full))).hexdigest()
            else:
                found[rel] = filedigest.of_file(full)
    return found


def total_size(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def change_one_percent(src):
    """Rewrite 64 KiB in the middle of one 1 MiB file and add a 16 KiB file."""
    with open(src / "big3.bin", "r+b") as f:
        f.seek(300_000)
        f.write(random.Random(7).randbytes(64 * 1024))
    write_random(src / "small" / "new.txt", 16 * 1024, seed=99)


def test_full_then_incremental_moves_only_changes(backend, sshd, source_dir, tmp_path):
    replica = tmp_path / "replica"
    first = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    total = total_size(source_dir)
    assert not first.incremental
    assert first.total_bytes == total
    assert first.bytes_moved >= total
    assert first.files == tree_hashes(source_dir)
    current = backend.current_path(replica)
    assert tree_hashes(current) == tree_hashes(source_dir)
    assert [c.name for c in backend.copies(replica)] == [first.snapshot]
    assert os.readlink(replica / "current") == f"snapshots/{first.snapshot}"

    change_one_percent(source_dir)
    second = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    assert second.incremental
    assert second.files == tree_hashes(source_dir)
    changed = 64 * 1024 + 16 * 1024
    assert second.bytes_moved < 0.05 * second.total_bytes, (second.bytes_moved, changed)
    new = backend.current_path(replica)
    assert new != current and tree_hashes(new) == tree_hashes(source_dir)
    # unchanged files are hard links to the previous copy; the changed one is not
    assert os.stat(os.path.join(new, "big0.bin")).st_ino == os.stat(os.path.join(current, "big0.bin")).st_ino
    assert os.stat(os.path.join(new, "big3.bin")).st_ino != os.stat(os.path.join(current, "big3.bin")).st_ino
    # the previous copy is untouched
    assert tree_hashes(current) == first.files
    assert len(backend.copies(replica)) == 2
    assert backend.verify(replica, second.files) == []


def test_unchanged_sync_reuses_hashes(backend, sshd, source_dir, tmp_path):
    replica = tmp_path / "replica"
    backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    again = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    assert again.bytes_moved < 0.05 * again.total_bytes
    cache = json.loads((replica / "hashes" / f"{again.snapshot}.json").read_text())
    # same inode as the previous copy: hash carried over (and still right)
    assert {k: v[-1] for k, v in cache.items()} == tree_hashes(source_dir)


def test_several_receivers_and_prune(backend, sshd, source_dir, tmp_path):
    ra, rb = tmp_path / "hn-a", tmp_path / "hn-b"
    ref = source_ref(sshd, source_dir)
    for _ in range(2):
        backend.sync(ref, ra, RECEIVER_A)
        backend.sync(ref, rb, RECEIVER_B)
    assert len(backend.copies(ra)) == 2
    removed = backend.prune(ra, 1)
    assert len(removed) == 1 and len(backend.copies(ra)) == 1
    assert not any((ra / "hashes" / f"{n}.json").exists() for n in removed)
    change_one_percent(source_dir)
    a = backend.sync(ref, ra, RECEIVER_A)
    b = backend.sync(ref, rb, RECEIVER_B)
    assert a.incremental and b.incremental
    assert a.files == b.files == tree_hashes(source_dir)
    assert len(backend.copies(rb)) == 3
    kept = backend.prune(rb, 2)
    names = [c.name for c in backend.copies(rb)]
    assert len(names) == 2 and b.snapshot in names and set(kept).isdisjoint(names)
    assert backend.current_path(rb).endswith(b.snapshot)


def test_unreachable_source_keeps_copy(backend, sshd, source_dir, tmp_path):
    replica = tmp_path / "replica"
    good = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    dead = random_address()
    while dead in sshd.listen_addresses:
        dead = random_address()
    with pytest.raises(Unreachable):
        backend.sync(source_ref(sshd, source_dir, host=dead), replica, RECEIVER_A)
    assert [c.name for c in backend.copies(replica)] == [good.snapshot]
    assert tree_hashes(backend.current_path(replica)) == good.files
    assert [e for e in os.listdir(replica / "snapshots") if e.startswith(".tmp")] == []


def test_missing_source_path_is_a_dataset_error(backend, sshd, tmp_path):
    with pytest.raises(DatasetError):
        backend.sync(source_ref(sshd, tmp_path / "nope"), tmp_path / "replica", RECEIVER_A)
    assert backend.copies(tmp_path / "replica") == []
    assert backend.current_path(tmp_path / "replica") is None


def test_reseed_sends_everything_again(backend, sshd, source_dir, tmp_path):
    replica = tmp_path / "replica"
    backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    again = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A, reseed=True)
    assert not again.incremental and again.bytes_moved >= again.total_bytes
    assert again.files == tree_hashes(source_dir)


def test_clone_is_zero_copy_and_destroyed(backend, sshd, source_dir, tmp_path):
    replica = tmp_path / "replica"
    result = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    target = tmp_path / "zones" / INSTANCE / "data"
    target.parent.mkdir(parents=True)
    path = backend.clone(replica, target)
    assert path == str(target)
    assert tree_hashes(target) == result.files
    copy = backend.current_path(replica)
    assert os.stat(target / "big1.bin").st_ino == os.stat(os.path.join(copy, "big1.bin")).st_ino
    assert (target / "empty").is_dir()
    with pytest.raises(DatasetError):
        backend.clone(replica, target)  # already there
    with pytest.raises(DatasetError):
        backend.clone(replica, tmp_path / "other", snapshot="../../etc")
    backend.destroy_clone(target)
    assert not target.exists()
    assert tree_hashes(copy) == result.files  # the copy survives its clone
    backend.destroy(replica)
    assert not replica.exists()


def test_hostile_symlinks_never_escape(backend, sshd, source_dir, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("outside")
    os.symlink(str(secret), source_dir / "abs-link")
    os.symlink("../../../../secret", source_dir / "small" / "up-link")
    replica = tmp_path / "replica"
    result = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    copy = backend.current_path(replica)
    assert os.path.islink(os.path.join(copy, "abs-link"))  # copied as a link, never followed
    assert result.files["abs-link"] == hashlib.sha256(os.fsencode(str(secret))).hexdigest()
    target = tmp_path / "clone"
    with pytest.raises(DatasetError, match="outside"):
        backend.clone(replica, target)
    assert not target.exists() and not any(p.name.startswith("clone.tmp") for p in tmp_path.iterdir())
    with pytest.raises(DatasetError, match="outside"):
        backend.verify(replica, result.files)
    os.unlink(source_dir / "abs-link")
    os.unlink(source_dir / "small" / "up-link")
    clean = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    with pytest.raises(DatasetError, match="unsafe path"):
        backend.verify(replica, {**clean.files, "../secret": "0" * 64})
    # tampering inside the copy is reported
    victim = os.path.join(backend.current_path(replica), "small", "f00.txt")
    os.unlink(victim)
    with open(victim, "w") as f:
        f.write("tampered")
    assert backend.verify(replica, clean.files) == ["sha256 differs: small/f00.txt"]


CHILD = textwrap.dedent("""
    import os, sys, time
    from sdcadm.datasets.base import SourceRef
    from sdcadm.datasets.dirbackend import DirBackend
    from sdcadm.transport.ssh import SSHTransport
    host, port, identity, known_hosts, src, replica, marker = sys.argv[1:]
    def observer(event):
        if event.done:
            open(marker, "w").close()
            time.sleep(3600)   # hold the sync here until the test kills us
    backend = DirBackend(transport_factory=lambda h: SSHTransport(
        h, int(port), user="root" if os.geteuid() == 0 else os.environ["USER"],
        identity=identity, known_hosts=known_hosts))
    ref = SourceRef("s", "cn0", host, "i", src)
    backend.sync(ref, replica, "recv", observer=observer)
""")


def rsync_processes(marker):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if os.fsencode(marker) in cmdline and b"rsync" in cmdline:
                pids.append(int(entry))
    return pids


def test_sigkill_mid_sync_keeps_previous_copy(backend, sshd, source_dir, tmp_path):
    replica = tmp_path / "replica"
    good = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    for i in range(12):  # enough new data that the transfer is still running
        write_random(source_dir / "more" / f"m{i}.bin", 2 * MiB, seed=1000 + i)
    marker = tmp_path / "marker"
    env = {**os.environ, "USER": sshd.user}
    child = subprocess.Popen([sys.executable, "-c", CHILD, sshd.listen_addresses[0], str(sshd.port),
                              str(sshd.identity), str(sshd.known_hosts), str(source_dir),
                              str(replica), str(marker)], env=env)
    kill_when_marked(child, marker, "the sync")
    wait_for(lambda: rsync_processes(str(replica)) == [], 10, "rsync ending with the killed sync")
    leftovers = [e for e in os.listdir(replica / "snapshots") if e.startswith(".tmp-")]
    assert len(leftovers) == 1
    assert [c.name for c in backend.copies(replica)] == [good.snapshot]
    assert tree_hashes(backend.current_path(replica)) == good.files
    assert backend.verify(replica, good.files) == []
    after = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    assert after.files == tree_hashes(source_dir)
    assert [e for e in os.listdir(replica / "snapshots") if e.startswith(".tmp-")] == []
    assert [c.name for c in backend.copies(replica)] == [good.snapshot, after.snapshot]


def test_concurrent_sync_of_one_replica_is_refused(backend, sshd, source_dir, tmp_path):
    from sdcadm.datasets.dirbackend import locked
    replica = tmp_path / "replica"
    with locked(str(replica)):
        with pytest.raises(DatasetError, match="another sync"):
            backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)


def test_same_size_rewrite_within_the_same_second_is_copied(backend, sshd, source_dir, tmp_path):
    """rsync's default quick check compares whole seconds: a same-size rewrite
    whose mtime differs only in nanoseconds must still reach the copy."""
    replica = tmp_path / "replica"
    target = source_dir / "big1.bin"
    backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    before = os.stat(target).st_mtime_ns
    with open(target, "r+b") as f:
        f.write(b"\xff" * 4096)
    second = before - before % 1_000_000_000
    os.utime(target, ns=(before, second + (before % 1_000_000_000 + 1) % 1_000_000_000))
    result = backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A)
    assert result.files == tree_hashes(source_dir)
    assert tree_hashes(backend.current_path(replica)) == tree_hashes(source_dir)


def test_files_vanishing_from_a_busy_source_keep_the_copy(backend, sshd, source_dir, tmp_path):
    """A writer renaming its temporary files while rsync runs (rsync exit 24):
    each sync succeeds, names what vanished, and its copy and hashes describe
    exactly what was copied (verify is clean)."""
    import threading

    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            tmp = source_dir / f".k{n}.tmp"
            write_random(tmp, 64 * 1024, seed=n)
            os.rename(tmp, source_dir / f"k{n % 50}")

    replica = tmp_path / "replica"
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    seen, failed = [], []
    try:
        def a_sync_saw_files_vanish():
            try:
                seen.append(backend.sync(source_ref(sshd, source_dir), replica, RECEIVER_A))
            except DatasetError as e:   # what rsync's exit 24 was before: stop and say so
                failed.append(e)
                return True
            return seen[-1].vanished

        wait_for(a_sync_saw_files_vanish, 120, "a sync seeing files vanish", interval=0)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert failed == [], failed
    vanished = seen[-1].vanished
    print(f"{len(seen)} sync(s) until files vanished: {vanished}")
    assert all(v.startswith(".k") and v.endswith(".tmp") for v in vanished), vanished
    for result in seen:   # every copy holds exactly what its hashes say
        assert tree_hashes(replica / "snapshots" / result.snapshot) == result.files
    assert not any(v in seen[-1].files for v in vanished)
    assert backend.current_path(replica).endswith(seen[-1].snapshot)
    assert backend.verify(replica, seen[-1].files) == []


def test_nothing_changed_makes_no_copy_and_a_change_is_still_copied(sshd, source_dir, tmp_path):
    """The gate: with nothing changed the sync stops after the source's
    fingerprint (no new copy, the current one stays); a change, a removed
    file and a copy modified through a clone are each noticed and copied."""
    backend = DirBackend(transport_factory=lambda host: sshd.transport(host), gate_margin=-1)
    replica, ref = tmp_path / "replica", source_ref(sshd, source_dir)
    first = backend.sync(ref, replica, RECEIVER_A)
    same = backend.sync(ref, replica, RECEIVER_A)
    assert same.unchanged and same.snapshot == first.snapshot and same.bytes_moved == 0
    assert same.files == first.files == tree_hashes(source_dir)
    assert [c.name for c in backend.copies(replica)] == [first.snapshot]
    assert [e for e in os.listdir(replica / "snapshots") if e.startswith(".tmp-")] == []

    change_one_percent(source_dir)
    changed = backend.sync(ref, replica, RECEIVER_A)
    assert not changed.unchanged and changed.snapshot != first.snapshot
    assert changed.files == tree_hashes(source_dir)
    assert tree_hashes(backend.current_path(replica)) == tree_hashes(source_dir)

    (source_dir / "small" / "f07.txt").unlink()
    removed = backend.sync(ref, replica, RECEIVER_A)
    assert not removed.unchanged and "small/f07.txt" not in removed.files
    assert removed.files == tree_hashes(source_dir)

    # the source is unchanged, but a file of the current copy was rewritten
    # in place (as a restored instance does through a hard-link clone)
    assert backend.sync(ref, replica, RECEIVER_A).unchanged
    with open(os.path.join(backend.current_path(replica), "big2.bin"), "r+b") as f:
        f.write(b"\0" * 4096)
    repaired = backend.sync(ref, replica, RECEIVER_A)
    assert not repaired.unchanged
    assert tree_hashes(backend.current_path(replica)) == tree_hashes(source_dir)
    assert backend.verify(replica, repaired.files) == []


def test_a_fingerprint_taken_while_the_source_changes_is_not_trusted(backend, sshd, source_dir,
                                                                     tmp_path):
    """Files changed within the margin (seconds) of the fingerprint: a
    filesystem with coarse times could change them again unseen, so no
    fingerprint is recorded and the next sync copies."""
    replica, ref = tmp_path / "replica", source_ref(sshd, source_dir)
    backend.sync(ref, replica, RECEIVER_A)   # source_dir was just written
    assert not (replica / "gate.json").exists()
    again = backend.sync(ref, replica, RECEIVER_A)
    assert not again.unchanged and len(backend.copies(replica)) == 2


def test_an_empty_dataset_with_nothing_changed_makes_no_copy(sshd, tmp_path):
    backend = DirBackend(transport_factory=lambda host: sshd.transport(host), gate_margin=-1)
    empty = tmp_path / "empty-source"
    empty.mkdir()
    replica, ref = tmp_path / "replica", source_ref(sshd, empty)
    first = backend.sync(ref, replica, RECEIVER_A)
    again = backend.sync(ref, replica, RECEIVER_A)
    assert again.unchanged and again.snapshot == first.snapshot and again.files == {}
    (empty / "now").write_bytes(b"x")
    assert backend.sync(ref, replica, RECEIVER_A).files == tree_hashes(empty)

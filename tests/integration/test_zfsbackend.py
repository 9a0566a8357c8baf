"""ZfsBackend on zfs-fuse: file-backed pools, the source reached over a real
LabSshd, the replica received locally."""

import hashlib
import os
import random
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from sdcadm.datasets import plan, zfspool
from sdcadm.datasets.base import SourceRef
from sdcadm.errors import DatasetError, ReplicaDiverged, Unreachable
from sdcadm.transport.local import LocalShell
from tests import filedigest
from tests.conftest import kill_when_marked, random_address, wait_for


def _why_not():
    if os.geteuid() != 0:
        return "zfs needs root"
    for program in ("zfs", "zpool", "zfs-fuse"):
        if not (shutil.which(program) or os.path.exists(f"/usr/sbin/{program}")):
            return f"{program} is not installed (apt-get install zfs-fuse)"
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        return "sshd is not installed (apt-get install openssh-server)"
    return None


pytestmark = [pytest.mark.integration, pytest.mark.zfs,
              pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")]

MiB = 1 << 20
RECEIVER_A = "aaaaaaaa-0000-4000-8000-00000000000a"
RECEIVER_B = "bbbbbbbb-0000-4000-8000-00000000000b"



@pytest.fixture(scope="module")
def daemon():
    started = zfspool.ensure_zfs_fuse()
    yield
    zfspool.stop_zfs_fuse(started)  # only if this module started it


@pytest.fixture(scope="module")
def pool(daemon, tmp_path_factory):
    name = f"sdcadmt{uuid.uuid4().hex[:8]}"
    file = tmp_path_factory.mktemp("pool") / f"{name}.img"
    zfspool.create_pool(name, file, "1G")
    yield name
    zfspool.destroy_pool(name, file)



@pytest.fixture(scope="module")
def zfs():
    return zfspool.Zfs(LocalShell(), zfspool.zfs_program("zfs"))


@pytest.fixture
def make_backend(pool, sshd):
    made = []

    def make(root):
        from sdcadm.datasets.zfsbackend import ZfsBackend
        backend = ZfsBackend(f"{pool}/{root}", transport_factory=lambda h: sshd.transport(h),
                             prune_grace=0)
        made.append(backend)
        return backend
    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def source(zfs, pool, sshd, tmp_path):
    """A fresh delegate dataset with ~8 MiB of mixed files, and its SourceRef."""
    instance = str(uuid.uuid4())
    mnt = tmp_path / "zones" / instance / "data"
    dataset = zfspool.create_source_dataset(zfs, f"{pool}/src", instance, mnt)
    for i in range(7):
        write_random(mnt / f"big{i}.bin", MiB, seed=i)
    for i in range(30):
        write_random(mnt / "small" / f"f{i:02d}.txt", 1000 + 211 * i, seed=100 + i)
    ref = SourceRef(server_uuid=str(uuid.uuid4()), hostname="cn0", host=sshd.listen_addresses[0],
                    instance_uuid=instance, path=str(mnt), zfs_dataset=dataset)
    yield ref
    zfspool.destroy_source_dataset(zfs, dataset)


def write_random(path, size, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))


def tree_hashes(root):
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = hashlib.sha256(os.fsencode(os.readlink(full))).hexdigest()
            elif os.path.isfile(full):     # not a FIFO: a problem, not data
                found[rel] = filedigest.of_file(full)
    return found


def change_one_percent(mnt):
    """Rewrite 64 KiB (inside one 128 KiB record) of one file, add a 16 KiB file."""
    with open(Path(mnt) / "big3.bin", "r+b") as f:
        f.seek(256 * 1024)
        f.write(random.Random(7).randbytes(64 * 1024))
    write_random(Path(mnt) / "small" / "new.txt", 16 * 1024, seed=99)


def source_snapshots(zfs, ref):
    return zfs.snapshots(ref.zfs_dataset)


def test_full_then_incremental(make_backend, source, zfs, tmp_path):
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    first = backend.sync(source, replica, RECEIVER_A)
    assert not first.incremental
    assert first.files == tree_hashes(source.path)
    assert first.bytes_moved >= first.total_bytes > 7 * MiB
    current = backend.current_path(replica)
    assert current == str(replica / "mnt")
    assert tree_hashes(current) == first.files  # reads it (atime) ...
    with pytest.raises(OSError):
        open(os.path.join(current, "new"), "w").close()  # ... and it is read-only
    src = source_snapshots(zfs, source)
    assert [s.short for s in src] == [first.snapshot] and src[0].userrefs == 1
    assert first.guid == src[0].guid

    change_one_percent(source.path)
    second = backend.sync(source, replica, RECEIVER_A)
    assert second.incremental
    assert second.files == tree_hashes(source.path)
    assert second.bytes_moved < 0.1 * second.total_bytes, second.bytes_moved
    assert [c.name for c in backend.copies(replica)] == [first.snapshot, second.snapshot]
    # the source keeps this receiver's newest sync snapshot and its base (released
    # by the next sync, which does not need it)
    assert [(s.short, s.userrefs) for s in source_snapshots(zfs, source)] == [
        (first.snapshot, 1), (second.snapshot, 1)]
    assert backend.verify(replica, second.files) == []

    third = backend.sync(source, replica, RECEIVER_A)  # nothing changed
    assert third.incremental and third.bytes_moved < 0.02 * third.total_bytes
    assert third.files == second.files
    assert [(s.short, s.userrefs) for s in source_snapshots(zfs, source)] == [
        (second.snapshot, 1), (third.snapshot, 1)]


def test_modified_replica_is_rolled_back(make_backend, source, zfs, tmp_path):
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    first = backend.sync(source, replica, RECEIVER_A)
    dataset = backend._dataset(str(replica))
    zfs.set(dataset, "readonly", "off")
    (replica / "mnt" / "stray").write_text("someone wrote here")
    second = backend.sync(source, replica, RECEIVER_A)
    assert second.incremental
    assert not (replica / "mnt" / "stray").exists()
    assert second.files == first.files
    with pytest.raises(OSError):  # read-only again (zfs-fuse's `get readonly` of a
        (replica / "mnt" / "stray").write_text("x")  # mounted fs is unreliable)


def test_several_receivers_keep_their_bases(make_backend, source, zfs, tmp_path):
    a, b = make_backend("hnA"), make_backend("hnB")
    ra, rb = tmp_path / "hn-a", tmp_path / "hn-b"
    a.sync(source, ra, RECEIVER_A)
    b_first = b.sync(source, rb, RECEIVER_B)
    for _ in range(2):   # a change each time: a sync with nothing new makes no snapshot
        change_one_percent(source.path)
        a.sync(source, ra, RECEIVER_A)
    # B's base survived A's releases (A's first snapshot is gone), held by B only
    snaps = {s.short: s for s in source_snapshots(zfs, source)}
    assert b_first.snapshot in snaps and snaps[b_first.snapshot].userrefs == 1
    assert len(snaps) == 3 and all(s.userrefs == 1 for s in snaps.values())
    assert a.prune(ra, 1) and len(a.copies(ra)) == 1
    b_second = b.sync(source, rb, RECEIVER_B)
    assert b_second.incremental and b_second.files == tree_hashes(source.path)
    a_next = a.sync(source, ra, RECEIVER_A)
    assert a_next.incremental and a_next.files == b_second.files
    # each receiver holds its newest snapshot and its base; nothing else is left
    snaps = source_snapshots(zfs, source)
    assert sorted(s.short for s in snaps) == sorted([b_first.snapshot, b_second.snapshot,
                                                     a_next.snapshot, snaps[1].short])
    assert len(snaps) == 4 and all(s.userrefs == 1 for s in snaps)


def test_prune_keeps_n_and_clone(make_backend, source, zfs, tmp_path):
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    results = []
    for i in range(3):   # a change each time: a sync with nothing new makes no copy
        write_random(Path(source.path) / "small" / f"gen{i}.txt", 1000, seed=500 + i)
        results.append(backend.sync(source, replica, RECEIVER_A))
    assert len(backend.copies(replica)) == 3
    target = tmp_path / "restored" / "data"
    path = backend.clone(replica, target, snapshot=results[1].snapshot)
    assert path == str(target)
    clone = backend._clone_name(str(target))
    assert zfs.exists(clone) and zfs.get_one(clone, "origin").endswith("@" + results[1].snapshot)
    assert tree_hashes(target) == results[1].files
    (target / "written-by-restored-instance").write_text("ok")  # a clone is writable
    removed = backend.prune(replica, 1)
    # the copy the clone depends on stays (and so is not counted as removed)
    assert removed == [results[0].snapshot]
    assert [c.name for c in backend.copies(replica)] == [r.snapshot for r in results[1:]]
    with pytest.raises(DatasetError, match="clone"):
        backend.destroy(replica)
    backend.destroy_clone(target)
    assert not zfs.exists(clone) and not target.exists()
    assert backend.prune(replica, 1) == [results[1].snapshot]
    with pytest.raises(DatasetError):
        backend.clone(replica, tmp_path / "x", snapshot="../../etc")
    dataset = backend._dataset(str(replica))
    backend.destroy(replica)
    assert not zfs.exists(dataset) and not replica.exists()


def test_unreachable_source_keeps_copy(make_backend, source, tmp_path, sshd):
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    good = backend.sync(source, replica, RECEIVER_A)
    dead = random_address()
    while dead in sshd.listen_addresses:
        dead = random_address()
    gone = SourceRef(source.server_uuid, source.hostname, dead, source.instance_uuid, source.path,
                     source.zfs_dataset)
    with pytest.raises(Unreachable):
        backend.sync(gone, replica, RECEIVER_A)
    assert [c.name for c in backend.copies(replica)] == [good.snapshot]
    assert tree_hashes(backend.current_path(replica)) == good.files


def test_no_common_snapshot_then_reseed(make_backend, source, zfs, tmp_path):
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    good = backend.sync(source, replica, RECEIVER_A)
    for snap in source_snapshots(zfs, source):  # pruned behind the receiver's back
        zfs.release(plan.hold_tag(RECEIVER_A), snap.name)  # deferred destroy: it goes now
        if zfs.exists(snap.name):
            zfs.destroy(snap.name)
    assert source_snapshots(zfs, source) == []
    with pytest.raises(ReplicaDiverged, match="no common snapshot") as e:
        backend.sync(source, replica, RECEIVER_A)
    assert "--reseed" in str(e.value)
    assert [c.name for c in backend.copies(replica)] == [good.snapshot]
    assert tree_hashes(backend.current_path(replica)) == good.files
    assert source_snapshots(zfs, source) == []  # nothing made on the source either
    fixed = backend.sync(source, replica, RECEIVER_A, reseed=True)
    assert not fixed.incremental and fixed.files == tree_hashes(source.path)
    assert [c.name for c in backend.copies(replica)] == [fixed.snapshot]
    assert backend.current_path(replica) == str(replica / "mnt")
    dataset = backend._dataset(str(replica))
    assert not zfs.exists(dataset + "-reseed") and not zfs.exists(dataset + "-old")
    assert backend.sync(source, replica, RECEIVER_A).incremental


def test_diverged_replica_needs_reseed(make_backend, source, zfs, tmp_path):
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    backend.sync(source, replica, RECEIVER_A)
    dataset = backend._dataset(str(replica))
    zfs.snapshot(f"{dataset}@local-change")
    with pytest.raises(ReplicaDiverged, match="local-change"):
        backend.sync(source, replica, RECEIVER_A)
    assert backend.sync(source, replica, RECEIVER_A, reseed=True).files == tree_hashes(source.path)


def test_hostile_symlink_never_escapes(make_backend, source, zfs, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("outside")
    os.symlink(str(secret), os.path.join(source.path, "abs-link"))
    os.symlink("../../../../../secret", os.path.join(source.path, "small", "up-link"))
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    result = backend.sync(source, replica, RECEIVER_A)
    assert result.files["abs-link"] == hashlib.sha256(os.fsencode(str(secret))).hexdigest()
    target = tmp_path / "clone"
    with pytest.raises(DatasetError, match="outside"):
        backend.clone(replica, target)
    assert not zfs.exists(backend._clone_name(str(target)))
    with pytest.raises(DatasetError, match="outside"):
        backend.verify(replica, result.files)
    with pytest.raises(DatasetError, match="unsafe path"):
        backend.verify(replica, {"../../etc/passwd": "0" * 64})


CHILD = textwrap.dedent("""
    import os, sys, time
    from sdcadm.datasets.base import SourceRef
    from sdcadm.datasets.zfsbackend import ZfsBackend
    from sdcadm.transport.ssh import SSHTransport
    (root, host, port, identity, known_hosts, instance, path, dataset, replica, receiver,
     marker) = sys.argv[1:]
    def observer(event):
        if event.done:
            open(marker, "w").close()
            time.sleep(3600)  # the stream stalls here until the test kills us
    backend = ZfsBackend(root, prune_grace=0, transport_factory=lambda h: SSHTransport(
        h, int(port), user="root", identity=identity, known_hosts=known_hosts))
    ref = SourceRef("s", "cn0", host, instance, path, dataset)
    backend.sync(ref, replica, receiver, observer=observer)
""")


def processes_mentioning(text):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if os.fsencode(text) in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_sigkill_mid_sync(make_backend, source, zfs, pool, sshd, tmp_path):
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    good = backend.sync(source, replica, RECEIVER_A)
    for i in range(4):
        write_random(tmp_path / "zones" / source.instance_uuid / "data" / "more" / f"m{i}.bin",
                     2 * MiB, seed=500 + i)
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", CHILD, f"{pool}/hn0", sshd.listen_addresses[0],
                              str(sshd.port), str(sshd.identity), str(sshd.known_hosts),
                              source.instance_uuid, source.path, source.zfs_dataset, str(replica),
                              RECEIVER_A, str(marker)])
    kill_when_marked(child, marker, "the sync")
    wait_for(lambda: processes_mentioning(source.zfs_dataset + "@") == [], 10,
             "zfs send/recv ending with the killed sync")
    # the replica is exactly the previous copy
    assert [c.name for c in backend.copies(replica)] == [good.snapshot]
    assert tree_hashes(backend.current_path(replica)) == good.files
    assert backend.verify(replica, good.files) == []
    after = backend.sync(source, replica, RECEIVER_A)
    assert after.incremental and after.files == tree_hashes(source.path)
    # the killed sync's snapshot (held by this receiver) was released and so destroyed
    assert [s.short for s in source_snapshots(zfs, source)] == [good.snapshot, after.snapshot]


def test_nothing_changed_is_one_round_trip_and_a_change_is_still_received(make_backend, source,
                                                                         zfs, tmp_path):
    """With nothing new on either side since the base, a sync keeps the copy
    it has (the source's new snapshot is released again, nothing is sent);
    a write to the replica, or a change on the source, is still noticed.
    (The source is not read in between: reading it changes its atimes.)"""
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    first = backend.sync(source, replica, RECEIVER_A)
    same = backend.sync(source, replica, RECEIVER_A)
    assert same.unchanged and same.snapshot == first.snapshot and same.guid == first.guid
    assert same.files == first.files and same.bytes_moved == 0
    assert [(s.short, s.userrefs) for s in source_snapshots(zfs, source)] == [(first.snapshot, 1)]
    assert [c.name for c in backend.copies(replica)] == [first.snapshot]
    dataset = backend._dataset(str(replica))
    assert [s.short for s in zfs.snapshots(dataset)] == [first.snapshot]   # no probe left

    zfs.set(dataset, "readonly", "off")
    (replica / "mnt" / "stray").write_text("someone wrote here")
    rolled = backend.sync(source, replica, RECEIVER_A)
    assert not rolled.unchanged and rolled.snapshot != first.snapshot
    assert not (replica / "mnt" / "stray").exists() and rolled.files == first.files
    # a probe snapshot left by a killed sync does not stop the next one
    zfs.snapshot(f"{dataset}@sdcadm-probe")
    after = backend.sync(source, replica, RECEIVER_A)
    assert after.unchanged and after.snapshot == rolled.snapshot
    assert [s.short for s in zfs.snapshots(dataset)] == [first.snapshot, rolled.snapshot]

    change_one_percent(source.path)
    changed = backend.sync(source, replica, RECEIVER_A)
    assert not changed.unchanged and changed.snapshot != rolled.snapshot
    assert changed.files == tree_hashes(source.path) == tree_hashes(backend.current_path(replica))


def _random_edit(rng, mnt, names):
    """One change an instance might make to its data, picked at random."""
    op = rng.choice(["overwrite", "overwrite", "append", "truncate", "extend", "create",
                     "delete", "recreate", "sparse", "link", "rename", "grow_small"])
    existing = sorted(n for n in names if (mnt / n).exists())
    name = rng.choice(existing) if existing else None
    if op == "create" or name is None:
        new = f"d{rng.randrange(3)}/n{rng.randrange(10**6)}"
        write_random(mnt / new, rng.choice([0, 1, 511, 4096, 130_000, 300_001]), rng.random())
        names.add(new)
    elif op == "overwrite":
        size = (mnt / name).stat().st_size
        with open(mnt / name, "r+b") as f:
            f.seek(rng.randrange(size + 1))
            f.write(rng.randbytes(rng.choice([1, 100, 8192, 65536, 200_000])))
    elif op == "append":
        with open(mnt / name, "ab") as f:
            f.write(rng.randbytes(rng.choice([1, 1000, 131072])))
    elif op == "truncate":
        size = (mnt / name).stat().st_size
        os.truncate(mnt / name, rng.randrange(size + 1))
    elif op == "extend":                       # a hole after the old end
        os.truncate(mnt / name, (mnt / name).stat().st_size + rng.choice([5, 70_000, 400_000]))
    elif op == "delete":
        (mnt / name).unlink()
    elif op == "recreate":                     # same name, new object, maybe the same number
        (mnt / name).unlink()
        write_random(mnt / name, rng.choice([10, 4000, 131072, 262145]), rng.random())
    elif op == "sparse":
        with open(mnt / name, "r+b") as f:
            f.seek(rng.choice([1 << 20, 3 << 20]) + rng.randrange(1000))
            f.write(b"tail")
    elif op == "link":
        other = f"{name}.hl{rng.randrange(1000)}"
        if not (mnt / other).exists():
            os.link(mnt / name, mnt / other)
            names.add(other)
    elif op == "rename":
        new = f"d{rng.randrange(3)}/r{rng.randrange(10**6)}"
        (mnt / new).parent.mkdir(parents=True, exist_ok=True)
        os.rename(mnt / name, mnt / new)
        names.add(new)
    elif op == "grow_small":                   # one block of 512 B .. past 128 KiB
        with open(mnt / name, "r+b") as f:
            f.seek(0, 2)
            f.write(rng.randbytes(140_000))


@pytest.mark.parametrize("recordsize", ["128K", "8K"])
def test_digests_from_the_stream_match_the_copy(make_backend, source, zfs, tmp_path, recordsize):
    """The manifest's digests are taken from the send stream and the base's
    chunk hashes: after every kind of change, they must be what reading the
    copy gives, and an incremental sync must read back little of it."""
    zfs.set(source.zfs_dataset, "recordsize", recordsize)
    mnt = Path(source.path)
    names = {str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.is_file()}
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    first = backend.sync(source, replica, RECEIVER_A)
    assert first.files == tree_hashes(mnt) == tree_hashes(backend.current_path(replica))
    rng = random.Random(f"zstream-{recordsize}")
    for round_ in range(8):
        for _ in range(rng.randrange(1, 6)):
            _random_edit(rng, mnt, names)
        result = backend.sync(source, replica, RECEIVER_A)
        assert result.incremental
        expected = tree_hashes(mnt)
        assert result.files == expected, f"round {round_}"
        assert tree_hashes(backend.current_path(replica)) == expected
    # One 64 KiB write into one 1 MiB file: nothing like the file (let alone
    # the copy) is read back. 128K records: the stream carries the whole
    # chunk. 8K records: it carries half of it, so that chunk is read, and
    # so is, for a file ending in a hole, the chunk where its data ends
    # (each dnode block sent again frees "past the data" from inside it).
    with open(mnt / "big0.bin", "r+b") as f:
        f.seek(3 * 128 * 1024)
        f.write(random.Random(1).randbytes(64 * 1024))
    result = backend.sync(source, replica, RECEIVER_A)
    assert result.files == tree_hashes(mnt)
    assert result.read_back < (128 if recordsize == "128K" else 1024) * 1024, result.read_back
    assert result.read_back < result.total_bytes / 8


def test_a_stream_not_understood_is_read_back(make_backend, source, monkeypatch, tmp_path):
    """If the stream reader gives up, the copy is read instead: same digests."""
    from sdcadm.datasets import zstream
    monkeypatch.setattr(zstream, "HEADER", 311)    # every record misread from the start
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    first = backend.sync(source, replica, RECEIVER_A)
    assert first.files == tree_hashes(Path(source.path))
    assert first.read_back == first.total_bytes


def _random_tree_edit(rng, mnt, names):
    """Changes to the tree itself: directories made, moved, removed; links."""
    op = rng.choice(["mkdir", "rmtree", "mvdir", "symlink", "relink", "fifo", "unfifo"])
    dirs = sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*")
                  if p.is_dir() and not p.is_symlink())
    if op == "mkdir":
        new = mnt / f"t{rng.randrange(100)}" / f"u{rng.randrange(100)}"
        new.mkdir(parents=True, exist_ok=True)
        write_random(new / "in.bin", rng.choice([0, 777, 140_000]), rng.random())
        names.add(str((new / "in.bin").relative_to(mnt)))
    elif op == "rmtree" and dirs:
        shutil.rmtree(mnt / rng.choice(dirs))
    elif op == "mvdir" and dirs:
        src = rng.choice(dirs)
        dst = mnt / f"m{rng.randrange(10**6)}"
        os.rename(mnt / src, dst)
        names.update(str(p.relative_to(mnt)) for p in dst.rglob("*") if p.is_file())
    elif op == "symlink":
        where = mnt / (rng.choice(dirs) if dirs else "")
        target = rng.choice(["small/f01.txt", "../x", "big1.bin", "/etc/passwd", "nowhere"])
        link = where / f"l{rng.randrange(10**6)}"
        if not os.path.lexists(link):
            os.symlink(target, link)
    elif op == "relink":
        links = [p for p in mnt.rglob("*") if p.is_symlink()]
        if links:
            link = rng.choice(links)
            link.unlink()
            os.symlink(rng.choice(["big2.bin", "../../escape"]), link)
    elif op == "fifo":
        path = mnt / f"fifo{rng.randrange(100)}"
        if not os.path.lexists(path):
            os.mkfifo(path)
    elif op == "unfifo":
        fifos = [p for p in mnt.glob("fifo*")]
        if fifos:
            rng.choice(fifos).unlink()


def test_the_listing_from_the_stream_matches_a_walk(make_backend, source, tmp_path):
    """An incremental sync lists and stat's only what the stream touched:
    after every kind of change to files and to the tree (directories made,
    moved, removed; symlinks, escaping ones, special files), what it reports
    -- digests, sizes, links, problems -- must be what a full walk of the
    copy finds."""
    from sdcadm.datasets.tree import scan_tree
    mnt = Path(source.path)
    names = {str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.is_file()}
    backend = make_backend("hn0")
    replica = tmp_path / "replica"
    backend.sync(source, replica, RECEIVER_A)
    rng = random.Random("listing")
    for round_ in range(12):
        for _ in range(rng.randrange(1, 5)):
            (_random_tree_edit if rng.random() < 0.5 else _random_edit)(rng, mnt, names)
        result = backend.sync(source, replica, RECEIVER_A)
        walked = scan_tree(backend.current_path(replica))
        assert result.tree.files == walked.files, f"round {round_}"
        assert result.tree.links == walked.links, f"round {round_}"
        assert sorted(result.tree.problems) == sorted(walked.problems), f"round {round_}"
        assert result.files == walked.digests == tree_hashes(mnt)

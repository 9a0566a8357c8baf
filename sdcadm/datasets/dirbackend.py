"""The ``dir`` backend: plain directories, rsync ``--link-dest`` copies.

Layout of a replica directory::

    current -> snapshots/<stamp>     the newest complete copy (relative symlink)
    snapshots/<stamp>/               complete copies, <stamp> = 20250102T030405Z[-N]
    snapshots/.tmp-<stamp>/          a sync in progress (or killed: removed by the next one)
    hashes/<stamp>.json              {path: [inode, size, mtime_ns, sha256]} of that copy
    gate.json                        {"copy", "fingerprint", "links"}: the source as that copy holds it
    .lock                            flock held while a sync/prune/destroy runs

A sync rsyncs the source into ``.tmp-<stamp>`` with ``--link-dest`` against
the current copy (unchanged files become hard links: no bytes moved, no
space used), hashes it (a file hard-linked from the previous copy has the
same inode and keeps its hash), flushes what it created (the files rsync
wrote -- a hard-linked file is the previous copy's, durable already -- and
every directory; ``syncfs`` when there are many), renames it into place and
then switches ``current`` atomically (new symlink + rename). Until that
rename nothing a reader can see has changed.

Nothing changed: the one SSH command of the sync first compares the source's
fingerprint with the one recorded for the current copy (``rsync.pull``'s
gate) and, if equal, stops there -- no file list, no new copy, the current
copy stays current (``SyncResult.unchanged``) -- if the current copy is
still exactly what was hashed (a local stat walk, made only then), else it
is copied again (a copy changed through a clone).

The source is a live directory: files its instance creates and renames while
rsync runs (a write's temporary file) vanish between rsync's listing and
their transfer (rsync exit 24). That is expected, not a failure: the copy
holds everything else, as consistent as any copy of a live directory, and is
kept; ``SyncResult.vanished`` names what vanished (the zfs backend copies a
snapshot, so nothing vanishes there).

Copies share inodes: a file is never modified in place by rsync (it writes a
new file and renames), but a hard-link ``clone`` shares them too -- an
instance restored from a clone that rewrites a file in place changes that
file in the copies as well. ``verify`` shows it.
"""

import fcntl
import json
import logging
import os
import shutil
import stat
import time
from contextlib import contextmanager

from sdcadm.datasets import plan, tree
from sdcadm.datasets.base import Copy, DatasetBackend, SyncResult
from sdcadm.datasets.linktree import link_tree
from sdcadm.errors import DatasetError
from sdcadm.fsutil import (fsync_dir, fsync_new, sha256_bytes, syncfs, write_cache_atomic,
                           write_json_atomic)
from sdcadm.transport import rsync
from sdcadm.transport.ssh import DEFAULT_KNOWN_HOSTS, SSHTransport

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots"
CURRENT = "current"
HASHES = "hashes"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
GATE = "gate.json"
FSYNC_MAX_FILES = 256   # more new files than this: one syncfs instead of one fsync each


@contextmanager
def locked(replica_dir):
    """Exclusive lock on ``replica_dir`` (released when the process dies)."""
    os.makedirs(replica_dir, exist_ok=True)
    fd = os.open(os.path.join(replica_dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(f"another sync of {replica_dir} is running",
                               hint="wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class DirBackend(DatasetBackend):
    name = "dir"

    def __init__(self, *, port=22, user="root", identity=None, known_hosts=DEFAULT_KNOWN_HOSTS,
                 connect_timeout=10.0, transport_factory=None, gate_margin=rsync.GATE_MARGIN):
        """SSH options as in the ``ssh.*`` config keys; ``transport_factory(host)``
        -> SSHTransport overrides them (tests, the lab). ``gate_margin``: see
        ``rsync.GATE_MARGIN``."""
        self._ssh = dict(port=port, user=user, identity=identity, known_hosts=known_hosts,
                         connect_timeout=connect_timeout)
        self._factory = transport_factory
        self.gate_margin = gate_margin

    def transport(self, host):
        return self._factory(host) if self._factory else SSHTransport(host, **self._ssh)

    # -- reading ---------------------------------------------------------------
    def copies(self, replica_dir):
        snaps = os.path.join(replica_dir, SNAPSHOTS)
        try:
            names = sorted(n for n in os.listdir(snaps) if plan.stamp_time(n) is not None
                           and os.path.isdir(os.path.join(snaps, n)))
        except FileNotFoundError:
            return []
        return [Copy(name=n, created=plan.stamp_time(n)) for n in names]

    def _current_name(self, replica_dir):
        try:
            target = os.readlink(os.path.join(replica_dir, CURRENT))
        except OSError:
            return None
        head, name = os.path.split(target)
        if head != SNAPSHOTS or plan.stamp_time(name) is None:
            return None
        return name

    def current_path(self, replica_dir):
        name = self._current_name(replica_dir)
        if name is None:
            return None
        path = os.path.join(replica_dir, SNAPSHOTS, name)
        return path if os.path.isdir(path) else None

    def copy_path(self, replica_dir, snapshot=None):
        """Directory of copy ``snapshot`` (default: current); DatasetError if none."""
        if snapshot is None:
            path = self.current_path(replica_dir)
        else:
            try:
                plan.safe_component(snapshot, "copy name")
            except ValueError as e:
                raise DatasetError(str(e)) from None
            path = os.path.join(replica_dir, SNAPSHOTS, snapshot)
            path = path if os.path.isdir(path) and not os.path.islink(path) else None
        if path is None:
            raise DatasetError(f"no copy {snapshot or 'current'} in {replica_dir}",
                               hint="sync it first (sdcadm service sync-restore-data)")
        return path

    # -- sync ------------------------------------------------------------------
    def sync(self, source, replica_dir, receiver_id, *, reseed=False, observer=None):
        replica_dir = os.path.abspath(replica_dir)
        started = time.time()
        with locked(replica_dir):
            snaps = os.path.join(replica_dir, SNAPSHOTS)
            os.makedirs(snaps, exist_ok=True)
            os.makedirs(os.path.join(replica_dir, HASHES), exist_ok=True)
            self._remove_leftovers(snaps)
            base = None if reseed else self._current_name(replica_dir)
            tc = time.monotonic()
            previous = self._hash_cache(replica_dir, base)   # None: not recorded
            gate = self._gate(replica_dir, base, previous)
            previous = previous or {}
            name = plan.copy_name(started, [c.name for c in self.copies(replica_dir)])
            tmp = os.path.join(snaps, TMP_PREFIX + name)
            os.mkdir(tmp)
            timings, t0 = {}, time.monotonic()
            check = round(t0 - tc, 3)
            try:
                def pull(known):
                    return rsync.pull(self.transport(source.host), source.path, tmp,
                                      link_dest=os.path.join(snaps, base) if base else None,
                                      observer=observer, accept_vanished=True, gate=True,
                                      known=known, gate_margin=self.gate_margin)

                stats = pull(gate["fingerprint"] if gate else None)
                t1 = time.monotonic()
                if stats.unchanged:
                    if self._intact(replica_dir, base, gate, previous):
                        os.rmdir(tmp)
                        return self._unchanged(replica_dir, base, gate, previous, started, {
                            "check": round(check + time.monotonic() - t1, 3),
                            "transfer": round(t1 - t0, 3)})
                    stats = pull(None)   # the copy changed since it was made: copy again
                    t1 = time.monotonic()
                hashed = tree.hash_tree(tmp, previous)
                write_cache_atomic(os.path.join(replica_dir, HASHES, f"{name}.json"), hashed.cache)
                t2 = time.monotonic()
                flushed = self._flush(tmp, previous, hashed)
                os.rename(tmp, os.path.join(snaps, name))
                fsync_dir(snaps)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._switch_current(replica_dir, name)
            self._write_gate(replica_dir, name, None if stats.vanished else stats.fingerprint,
                             hashed)
            timings = {"check": check, "transfer": round(t1 - t0, 3), "hash": round(t2 - t1, 3),
                       "flush": round(time.monotonic() - t2, 3), "flushed_files": flushed}
        log.info("dir sync %s -> %s/%s: %d bytes moved, %d re-hashed", source.path, replica_dir,
                 name, stats.wire_bytes, hashed.hashed_bytes)
        if stats.vanished:
            log.warning("dir sync %s: %d file(s) vanished while copied (kept the copy): %s",
                        source.path, len(stats.vanished), ", ".join(stats.vanished[:5]),
                        extra={"event": "dataset-files-vanished",
                               "instance": source.instance_uuid})
        return SyncResult(snapshot=name, guid=None, bytes_moved=stats.wire_bytes,
                          files=hashed.digests, total_bytes=hashed.bytes,
                          incremental=base is not None, started=started, finished=time.time(),
                          timings=timings, vanished=stats.vanished, tree=hashed)

    def _flush(self, tmp, previous, hashed):
        """Make the new copy durable before it becomes visible. Few new files
        (the cycles that run all day): fsync them and every directory --
        ``syncfs`` would also wait for every other process's dirty data on
        the disk. Many (a first copy, a big change): one ``syncfs``, cheaper
        than thousands of fsyncs, and the copy's data is most of what it
        waits for. Returns the number of files fsync'd (-1: syncfs)."""
        old = {v[0] for v in previous.values() if isinstance(v, list) and v}
        new = sum(1 for rel, k in hashed.cache.items() if k[0] not in old)
        if new > FSYNC_MAX_FILES:
            syncfs(tmp)
            return -1
        return fsync_new(tmp, old)

    # -- the nothing-changed gate ---------------------------------------------
    def _gate(self, replica_dir, base, previous):
        """The record of the source's fingerprint as copy ``base`` holds it,
        or None (none, or not for this copy: the sync copies)."""
        if base is None or previous is None:   # (an empty dataset's cache is {}: fine)
            return None
        gate = _read_json(os.path.join(replica_dir, GATE))
        if not (isinstance(gate, dict) and gate.get("copy") == base
                and isinstance(gate.get("fingerprint"), str)
                and isinstance(gate.get("links"), dict)):
            return None
        return gate

    def _intact(self, replica_dir, base, gate, previous):
        """Whether copy ``base`` is still exactly what was made -- every
        file's inode, size and mtime as hashed, no entry added or gone, the
        same symlinks (a clone rewriting a shared file in place shows).
        Asked only once the source said it had not changed."""
        root = os.path.join(replica_dir, SNAPSHOTS, base)
        seen, links = 0, {}
        try:
            for rel, st in tree.walk(root):
                if stat.S_ISDIR(st.st_mode):
                    continue
                if stat.S_ISLNK(st.st_mode):
                    links[rel] = sha256_bytes(os.fsencode(os.readlink(os.path.join(root, rel))))
                    continue
                entry = previous.get(rel)
                if not (stat.S_ISREG(st.st_mode) and isinstance(entry, list)
                        and entry[:-1] == tree.key_inode(st)):
                    break
                seen += 1
            else:
                if seen == len(previous) and links == gate["links"]:
                    return True
        except OSError:
            pass
        log.info("copy %s of %s changed since it was made: copying", base, replica_dir)
        return False

    def _unchanged(self, replica_dir, base, gate, previous, started, timings):
        files = {rel: v[-1] for rel, v in previous.items()}
        files.update(gate["links"])
        log.info("dir sync: %s unchanged since copy %s", replica_dir, base)
        return SyncResult(snapshot=base, guid=None, bytes_moved=0,
                          files=dict(sorted(files.items())),
                          total_bytes=sum(v[1] for v in previous.values()), incremental=True,
                          started=started, finished=time.time(), timings=timings,
                          unchanged=True)

    def _write_gate(self, replica_dir, name, fingerprint, hashed):
        """Record the source's fingerprint for copy ``name`` (none: remove the
        record, the next sync copies)."""
        path = os.path.join(replica_dir, GATE)
        if fingerprint is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        links = {rel: sha256_bytes(os.fsencode(t)) for rel, t in hashed.links.items()}
        write_json_atomic(path, {"copy": name, "fingerprint": fingerprint, "links": links})

    def _remove_leftovers(self, snaps):
        for entry in os.listdir(snaps):
            if entry.startswith(TMP_PREFIX):
                log.info("removing %s left by an interrupted sync", entry)
                shutil.rmtree(os.path.join(snaps, entry))

    def _hash_cache(self, replica_dir, name):
        """Copy ``name``'s hash cache, or None (no such copy or record)."""
        if name is None:
            return None
        data = _read_json(os.path.join(replica_dir, HASHES, f"{name}.json"))
        return data if isinstance(data, dict) else None

    def _switch_current(self, replica_dir, name):
        link = os.path.join(replica_dir, CURRENT)
        tmp = f"{link}.tmp-{os.getpid()}"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join(SNAPSHOTS, name), tmp)
        os.replace(tmp, link)
        fsync_dir(replica_dir)

    def drop_copy(self, replica_dir, name, back_to=None):
        """Remove copy ``name`` that turned out bad once made (e.g. it does not
        match the manifest it was pulled for) and point ``current`` back at
        ``back_to``: a bad copy must not become the base of the next sync."""
        plan.safe_component(name, "copy name")
        if name == back_to:   # the copy was current before: nothing new to drop
            return
        with locked(replica_dir):
            if back_to and self._current_name(replica_dir) == name:
                self._switch_current(replica_dir, back_to)
            elif self._current_name(replica_dir) == name:
                os.unlink(os.path.join(replica_dir, CURRENT))
            shutil.rmtree(os.path.join(replica_dir, SNAPSHOTS, name), ignore_errors=True)
            try:
                os.unlink(os.path.join(replica_dir, HASHES, f"{name}.json"))
            except FileNotFoundError:
                pass

    # -- clones ----------------------------------------------------------------
    def clone(self, replica_dir, target, snapshot=None, name=None):
        src = self.copy_path(replica_dir, snapshot)
        link_tree(src, os.path.abspath(target))
        return os.path.abspath(target)

    def destroy_clone(self, target, name=None):
        if os.path.islink(target):
            raise DatasetError(f"{target} is a symlink, not a clone")
        if os.path.exists(target):
            shutil.rmtree(target)

    # -- pruning ---------------------------------------------------------------
    def prune(self, replica_dir, keep):
        if not os.path.isdir(replica_dir):
            return []
        with locked(replica_dir):
            names = [c.name for c in self.copies(replica_dir)]
            current = self._current_name(replica_dir)
            doomed = plan.copies_to_prune(names, keep, protect={current} if current else ())
            for name in doomed:
                shutil.rmtree(os.path.join(replica_dir, SNAPSHOTS, name))
                try:
                    os.unlink(os.path.join(replica_dir, HASHES, f"{name}.json"))
                except FileNotFoundError:
                    pass
        return doomed

    def destroy(self, replica_dir):
        if not os.path.isdir(replica_dir):
            return
        with locked(replica_dir):
            for entry in os.listdir(replica_dir):
                if entry == LOCK:
                    continue
                path = os.path.join(replica_dir, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        shutil.rmtree(replica_dir, ignore_errors=True)

"""The ``zfs`` backend: snapshots, incremental send/recv by GUID, holds, clones.

The source is ``SourceRef.zfs_dataset`` on the source server, driven with
``zfs`` over SSH. The replica is the dataset ``<pool>/sdcadm/restore/<instance
uuid>`` on this server (``pool`` = ``datasets.zfs_pool``; it may be a dataset
such as ``lab/hn0``), ``readonly=on`` (reading it never updates atime, which
would break the next incremental receive) and mounted at
``<replica_dir>/mnt``: that is the current copy. Its snapshots
``@sdcadm-sync-<stamp>`` are the copies. ``replica_dir`` holds::

    zfs.json      {"dataset", "mountpoint", "source_host", "source_dataset", "receiver"}
    mnt/          mountpoint of the replica (the current copy, read-only)
    chunks.json   the current copy's chunk hashes per object (``chunkcache.py``)
    listing.json  the current copy's entries: kind, inode, size, digest (``listing.py``)
    .lock         flock held while a sync/prune/destroy runs

A sync (``tag`` = ``sdcadm-<receiver id>``): in one round trip to the source,
snapshot it ``@sdcadm-sync-<stamp>``, hold that with ``tag``, mark it for
deferred destroy (zfs destroys it when its last hold goes), release ``tag``
from this receiver's other sync snapshots except its base (the replica's
newest), and list the source's snapshots; find the newest common snapshot by
GUID; ``zfs send -i base new | zfs recv -F replica`` (-F rolls back whatever
touched the replica since its last snapshot), hashing the chunks the stream
writes as it passes (``zstream.py``); remount the replica (zfs-fuse keeps
stale FUSE caches otherwise); name its files: chunks from the stream, the
others from the base's ``chunks.json``, and only what neither can say is
read back (``digest.py``, ``chunkcache.py``); with the base's
``listing.json``, only the directories and files the stream touched are
listed and stat'ed again (``listing.py``). Each receiver thus holds its
base and its newest snapshot, so several headnodes pull one source
independently. A receive is all-or-nothing: a killed sync leaves the replica
as it was. A first sync receives a full stream; a reseed receives a full
stream into ``<replica>-reseed`` and swaps it in only once complete (an
interrupted swap is finished by the next sync). Nothing new on either side
since the base (the source's round trip reads the head of the incremental
stream: BEGIN and END only; the replica is then probed the same way):
the new snapshot is released again and the current copy stays, its files
from ``listing.json`` -- no receive, no remount, no hashing walk. See
docs/datasets.md.

Clones live in ``<pool>/sdcadm/scratch/<sha256(target)[:16]>``, mounted at the
target. They depend on their replica snapshot: prune skips that snapshot
and ``destroy`` refuses while one exists.
"""

import hashlib
import json
import logging
import os
import shutil
import time

from sdcadm.datasets import chunkcache, listing, plan, tree, zstream
from sdcadm.datasets.base import Copy, DatasetBackend, SyncResult
from sdcadm.datasets.dirbackend import locked
from sdcadm.datasets.zfspool import zfs_program
from sdcadm.errors import DatasetError, SdcadmError, ZfsBusy, ZfsError, ZfsExists, ZfsNoSuchHold, ZfsNotFound
from sdcadm.fsutil import write_json_atomic
from sdcadm.transport.local import LocalShell
from sdcadm.transport.ssh import DEFAULT_KNOWN_HOSTS, SSHTransport
from sdcadm.transport.zfs import Zfs, send_recv

log = logging.getLogger(__name__)

POINTER = "zfs.json"
MOUNT = "mnt"
OBSOLETE = ("hashes.json", "digests.json")   # records of earlier versions: removed
PROBE_SNAPSHOT = "sdcadm-probe"
RESEED_SUFFIX = "-reseed"
OLD_SUFFIX = "-old"
PROP_REPLICA_DIR = "sdcadm:replica-dir"
PROP_CLONE_TARGET = "sdcadm:clone-target"
BUSY_TIMEOUT = 10.0  # zfs-fuse calls a just-mounted or just-read filesystem busy for a moment


def _read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clone_id(target):
    return hashlib.sha256(os.path.abspath(target).encode()).hexdigest()[:16]


class ZfsBackend(DatasetBackend):
    name = "zfs"

    def __init__(self, pool, *, port=22, user="root", identity=None,
                 known_hosts=DEFAULT_KNOWN_HOSTS, connect_timeout=10.0, transport_factory=None,
                 local_shell=None, remote_zfs="zfs", prune_grace=120.0):
        """``pool``: pool (or dataset) under which ``sdcadm/`` datasets live.
        SSH options as the ``ssh.*`` keys, or ``transport_factory(host)``.
        ``remote_zfs``: the zfs command on sources (found on the login PATH).
        ``prune_grace``: seconds an unheld source sync snapshot younger than
        the newest one is kept (another receiver may be about to hold it)."""
        if not pool:
            raise DatasetError("the zfs dataset backend needs datasets.zfs_pool",
                               hint="set datasets.zfs_pool to the pool holding the replicas")
        self.pool = pool.rstrip("/")
        self.root = f"{self.pool}/sdcadm"
        self._ssh = dict(port=port, user=user, identity=identity, known_hosts=known_hosts,
                         connect_timeout=connect_timeout)
        self._factory = transport_factory
        self.local = Zfs(local_shell or LocalShell(), zfs_program("zfs"))
        self.remote_zfs = remote_zfs
        self.prune_grace = prune_grace
        self._transports = {}
        self._parents_made = False

    def transport(self, host):
        """One SSH connection per source server, reused by every sync."""
        if host not in self._transports:
            self._transports[host] = (self._factory(host) if self._factory
                                      else SSHTransport(host, **self._ssh))
        return self._transports[host]

    def close(self):
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()

    def replica_dataset(self, instance_uuid):
        plan.safe_component(instance_uuid, "instance uuid")
        return f"{self.root}/restore/{instance_uuid}"

    # -- the pointer file ------------------------------------------------------
    def _pointer(self, replica_dir):
        data = _read_json(os.path.join(replica_dir, POINTER))
        if not data or not isinstance(data.get("dataset"), str):
            return None
        if not data["dataset"].startswith(f"{self.root}/restore/"):
            raise DatasetError(f"{replica_dir}/{POINTER} names {data['dataset']}, which is not "
                               f"under {self.root}/restore",
                               hint="the pool changed (datasets.zfs_pool) or the file was "
                                    "edited; remove the replica dir and sync again")
        return data

    def _dataset(self, replica_dir):
        pointer = self._pointer(replica_dir)
        return pointer["dataset"] if pointer else None

    def _claim(self, dataset, replica_dir):
        """DatasetError unless ``dataset`` is free or already this replica dir's."""
        if not self.local.exists(dataset):
            return
        owner = self.local.get_one(dataset, PROP_REPLICA_DIR)
        if owner != replica_dir:
            raise DatasetError(
                f"{dataset} already exists and belongs to {owner or 'something else'}, "
                f"not {replica_dir}",
                hint="each headnode needs its own pool (or datasets.zfs_pool dataset); "
                     f"if it is stale: zfs destroy -r {dataset}")

    # -- reading ---------------------------------------------------------------
    def _sync_snapshots(self, dataset):
        try:
            snaps = self.local.snapshots(dataset)
        except ZfsNotFound:
            return []
        return [s for s in snaps if plan.is_sync_snapshot(s.short)]

    def copies(self, replica_dir):
        dataset = self._dataset(replica_dir)
        if dataset is None:
            return []
        return [Copy(name=s.short, created=float(s.creation), guid=s.guid)
                for s in self._sync_snapshots(dataset)]

    def current_path(self, replica_dir):
        dataset = self._dataset(replica_dir)
        if dataset is None:
            return None
        mnt = os.path.join(os.path.abspath(replica_dir), MOUNT)
        if not os.path.ismount(mnt):
            try:  # e.g. after zfs-fuse restarted
                self.local.mount(dataset)
            except ZfsError:
                return None
        return mnt if os.path.ismount(mnt) else None

    # -- sync ------------------------------------------------------------------
    def sync(self, source, replica_dir, receiver_id, *, reseed=False, observer=None):
        replica_dir = os.path.abspath(replica_dir)
        started = time.time()
        if not source.zfs_dataset:
            raise DatasetError(f"instance {source.instance_uuid} has no zfs dataset on "
                               f"{source.hostname}", hint="its server uses the dir backend?")
        tag = plan.hold_tag(receiver_id)
        with locked(replica_dir):
            dataset = self._dataset(replica_dir) or self.replica_dataset(source.instance_uuid)
            self._claim(dataset, replica_dir)
            self._ensure_parents()
            self._recover(dataset)
            remote = Zfs(self.transport(source.host), self.remote_zfs)
            exists = self.local.exists(dataset)
            rep_snaps = self.local.snapshots(dataset) if exists else None
            # The replica's newest sync snapshot is the base: it stays held, this
            # receiver's other holds go now (they are a sync behind, by design).
            base = next((r.short for r in reversed(rep_snaps or [])
                         if plan.is_sync_snapshot(r.short)), None) if not reseed else None
            rep_snaps = self._drop_scratch(dataset, rep_snaps)
            known = self._digests(replica_dir, base)
            t0 = time.monotonic()
            # Nothing changed on either side since the base? The source is
            # asked in its one round trip; then (only then) the replica, which
            # could have been written to (a sync rolls that back).
            new, listed, unchanged = self._snapshot_source(remote, source, receiver_id, started,
                                                           base, probe=known is not None)
            if unchanged and not self._replica_unchanged(dataset, base):
                log.info("replica %s changed since %s: syncing", dataset, base)
                new, listed, _ = self._snapshot_source(remote, source, receiver_id, time.time(),
                                                       base)
                unchanged = False
            t1 = time.monotonic()
            if unchanged:
                return self._unchanged(remote, dataset, base, rep_snaps, listed, known, tag,
                                       started, round(t1 - t0, 3))
            src_snaps = [s for s in listed if s.name != new]
            hasher = zstream.StreamHasher()
            try:
                decision = plan.plan_zfs_sync(src_snaps, rep_snaps, reseed=reseed)
                target = dataset + RESEED_SUFFIX if (decision.full and exists) else dataset
                moved = send_recv(remote, self.local, new, target, base=decision.base,
                                  force=not decision.full, observer=observer, tap=hasher.feed)
                if target != dataset:
                    self._swap(dataset, target)
            except BaseException:
                self._abandon(remote, new, tag)
                raise
            t2 = time.monotonic()
            self._finish_replica(dataset, replica_dir, source, receiver_id,
                                 remount=not decision.full)
            snap = next((s for s in listed if s.name == new), None)
            self._tidy_source(remote, listed, new, tag, released=base is not None)
            t3 = time.monotonic()
            hashed, read = self._hash(replica_dir, hasher, decision, new.partition("@")[2])
            timings = {"snapshot": round(t1 - t0, 3), "transfer": round(t2 - t1, 3),
                       "finish": round(t3 - t2, 3), "hash": round(time.monotonic() - t3, 3)}
        log.info("zfs sync %s -> %s (%s): %d bytes moved, %d hashed from the stream, %d read "
                 "back", new, dataset, decision.reason, moved, hasher.hashed_bytes, read)
        return SyncResult(snapshot=new.partition("@")[2], guid=snap.guid if snap else None,
                          bytes_moved=moved,
                          files=hashed.digests, total_bytes=hashed.bytes,
                          incremental=not decision.full, started=started, finished=time.time(),
                          timings=timings, read_back=read, tree=hashed)

    def _replica_unchanged(self, dataset, base):
        try:
            return self.local.unchanged_since(f"{dataset}@{base}", PROBE_SNAPSHOT)
        except ZfsError as e:
            log.info("probing the replica %s failed: %s", dataset, e)
            return False

    def _drop_scratch(self, dataset, rep_snaps):
        """Destroy a probe snapshot a killed sync left on the replica (a
        receive would take it for a snapshot the source lacks)."""
        if not rep_snaps or not any(r.short == PROBE_SNAPSHOT for r in rep_snaps):
            return rep_snaps
        self.local.destroy(f"{dataset}@{PROBE_SNAPSHOT}", busy_timeout=BUSY_TIMEOUT)
        return [r for r in rep_snaps if r.short != PROBE_SNAPSHOT]

    def _digests(self, replica_dir, base):
        """What naming copy ``base`` found ({"files", "bytes"}, from its
        ``listing.json``), or None (no base, or not recorded for it)."""
        entries = listing.load(replica_dir, base) if base is not None else None
        if entries is None:
            return None
        named = listing.as_tree(entries)
        return {"files": named.digests, "bytes": named.bytes}

    def _unchanged(self, remote, dataset, base, rep_snaps, listed, known, tag, started, seconds):
        """The source had nothing new since ``base`` (its stream was empty):
        the replica stays as it is -- provided ``base`` is still the common
        snapshot by GUID; otherwise the sync is refused as any other would be."""
        decision = plan.plan_zfs_sync(listed, rep_snaps)
        if decision.full or decision.base.partition("@")[2] != base:
            raise DatasetError(f"the source of {dataset} no longer has {base} (by GUID), "
                               "though its stream from it was empty",
                               hint="sync again; if it persists, sync with reseed")
        self._tidy_source(remote, listed, None, tag, released=True)
        guid = next((r.guid for r in rep_snaps if r.short == base), None)
        log.info("zfs sync: %s unchanged since %s", dataset, base)
        return SyncResult(snapshot=base, guid=guid, bytes_moved=0, files=known["files"],
                          total_bytes=known["bytes"], incremental=True, started=started,
                          finished=time.time(), timings={"snapshot": seconds}, unchanged=True)

    def _snapshot_source(self, remote, source, receiver_id, now, base, probe=False):
        """Snapshot the source ``@sdcadm-sync-<stamp>``, held by this receiver
        and marked for deferred destroy, and release this receiver's holds on
        other sync snapshots but ``base`` -- one round trip; returns its name,
        the source's snapshots (it included) and whether (``probe``) the
        source had nothing new since ``base`` (the new snapshot is then gone
        again)."""
        tag = plan.hold_tag(receiver_id)
        taken = []
        for _ in range(5):  # another receiver may have taken this second's name
            short = plan.sync_snapshot_name(now, taken)
            try:
                # The property says who may hold it (`zfs holds` is broken on zfs-fuse).
                listed = remote.snapshot_held(
                    source.zfs_dataset, short, tag, {plan.hold_property(receiver_id): tag},
                    release_except=base, probe=probe)
                listed, unchanged = listed if probe else (listed, False)
                return f"{source.zfs_dataset}@{short}", listed, unchanged
            except ZfsExists:
                taken.append(short)
            except ZfsNotFound:
                raise DatasetError(f"source dataset {source.zfs_dataset} does not exist on "
                                   f"{source.hostname} ({source.host})") from None
        raise DatasetError(f"cannot name a new snapshot of {source.zfs_dataset}: "
                           f"{', '.join(taken)} exist")

    def _tidy_source(self, remote, snaps, new, tag, released):
        """Destroy source sync snapshots nobody held already when listed (left
        by a sync that failed before holding). Unless the snapshot script
        already ``released`` them (incremental syncs: the base stays held
        until the next sync), release this receiver's holds on the others --
        a sync snapshot is marked for deferred destroy, so zfs destroys it
        when its last hold goes."""
        if not released:
            for snap in plan.holds_to_release(snaps, new):
                try:
                    remote.release(tag, snap.name)
                except (ZfsNoSuchHold, ZfsNotFound):
                    pass  # another receiver's hold, or gone meanwhile
        for snap in plan.source_snapshots_to_destroy(snaps, grace=self.prune_grace):
            try:
                remote.destroy(snap.name)
            except (ZfsBusy, ZfsNotFound):  # held or destroyed meanwhile by another receiver
                pass

    def _ensure_parents(self):
        if self._parents_made:
            return
        for name in (self.root, f"{self.root}/restore", f"{self.root}/scratch"):
            if not self.local.exists(name):
                try:
                    self.local.create(name, {"mountpoint": "none"}, parents=True)
                except ZfsError:
                    if not self.local.exists(name):  # another sync made it meanwhile
                        raise
        self._parents_made = True

    def _recover(self, dataset):
        """Finish or undo a reseed that was interrupted."""
        reseed, old = dataset + RESEED_SUFFIX, dataset + OLD_SUFFIX
        if self.local.exists(reseed):
            if self.local.exists(dataset):
                log.info("removing %s left by an interrupted reseed", reseed)
                self.local.destroy(reseed, recursive=True, busy_timeout=BUSY_TIMEOUT)
            else:  # killed between the two renames: the new copy is complete
                self.local.rename(reseed, dataset)
        if self.local.exists(old):
            if self.local.exists(dataset):
                self._destroy_quietly(old)
            else:
                self.local.rename(old, dataset)

    def _swap(self, dataset, reseeded):
        old = dataset + OLD_SUFFIX
        self.local.set(dataset, "mountpoint", "none")
        self.local.rename(dataset, old)
        self.local.rename(reseeded, dataset)
        self._destroy_quietly(old)

    def _destroy_quietly(self, name):
        try:
            self.local.destroy(name, recursive=True, busy_timeout=BUSY_TIMEOUT)
        except ZfsBusy as e:
            log.warning("keeping %s: %s (a clone of it is in use)", name, e)

    def _finish_replica(self, dataset, replica_dir, source, receiver_id, remount):
        mnt = os.path.join(replica_dir, MOUNT)
        props = self.local.get(dataset, ("readonly", "mountpoint", PROP_REPLICA_DIR))[dataset]
        wanted = {"readonly": "on", PROP_REPLICA_DIR: replica_dir, "mountpoint": mnt}
        for prop, value in wanted.items():
            if props.get(prop) != value:
                self.local.set(dataset, prop, value)
        if remount and props.get("mountpoint") == mnt:
            self._remount(dataset)
        write_json_atomic(os.path.join(replica_dir, POINTER), {
            "dataset": dataset, "mountpoint": mnt, "source_host": source.host,
            "source_dataset": source.zfs_dataset, "receiver": str(receiver_id)})

    def _remount(self, dataset):
        """zfs-fuse does not invalidate the kernel's FUSE caches when it
        receives into a mounted filesystem: readers would see the previous
        copy's data and attributes until it is mounted again."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self.local.unmount(dataset)
                break
            except ZfsError as e:
                if "not currently mounted" in e.stderr:
                    break
                if time.monotonic() >= deadline:  # a reader keeps it open: force it
                    log.warning("forcing the unmount of %s: %s", dataset, e)
                    self.local.unmount(dataset, force=True)
                    break
                time.sleep(0.2)
        self._mount(dataset)

    def _mount(self, dataset):
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:  # zfs-fuse: "mountpoint or dataset is busy" right after an unmount
            try:
                self.local.mount(dataset)
                return
            except ZfsBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _abandon(self, remote, snapshot, tag):
        """After a failed sync: release the new source snapshot; zfs destroys
        it unless another receiver holds it (best effort: the source may be
        unreachable -- the next successful sync releases it then)."""
        try:
            remote.release(tag, snapshot)
        except (SdcadmError, OSError) as e:
            log.info("could not release %s after a failed sync: %s", snapshot, e)

    def _hash(self, replica_dir, hasher, decision, snapshot):
        """Name the files of the copy just received (``snapshot``); return
        the Tree and the bytes read back. ``hasher`` read the stream; the
        base's chunk hashes serve an incremental receive from that very
        base. Only chunks neither can vouch for are read."""
        mnt = self.current_path(replica_dir)
        if mnt is None:
            raise DatasetError(f"the replica for {replica_dir} is not mounted at "
                               f"{os.path.join(replica_dir, MOUNT)}",
                               hint="zfs mount -a; is the mountpoint directory empty?")
        base = listed = None
        if hasher.finish() and not decision.full:
            base = chunkcache.load(replica_dir, decision.base.partition("@")[2])
            listed = listing.load(replica_dir, decision.base.partition("@")[2])
        resolver = chunkcache.Resolver(mnt, hasher if hasher.ok else None, base)
        if base is not None and listed is not None:
            # Only what the stream touched is listed, stat'ed and named again.
            touched = hasher.touched
            hashed, entries = listing.update(mnt, listed, touched, resolver)
            objects = {n: o for n, o in base.items() if n not in touched} | resolver.objects
        else:
            entries = {}
            hashed = tree.hash_tree(mnt, resolve=resolver, entries=entries)
            objects = resolver.objects
        live = {e[1] for e in entries.values() if e[0] == "f"}
        chunkcache.save(replica_dir, snapshot,
                        {n: o for n, o in objects.items() if n in live})
        listing.save(replica_dir, snapshot, entries)
        for name in OBSOLETE:
            try:
                os.unlink(os.path.join(replica_dir, name))
            except FileNotFoundError:
                pass
        return hashed, resolver.read_bytes

    # -- clones ----------------------------------------------------------------
    def _clone_name(self, target):
        return f"{self.root}/scratch/{clone_id(target)}"

    def clone(self, replica_dir, target, snapshot=None, name=None):
        dataset = self._dataset(replica_dir)
        names = [c.name for c in self.copies(replica_dir)]
        if dataset is None or not names:
            raise DatasetError(f"no copy in {replica_dir}", hint="sync it first")
        snapshot = snapshot or names[-1]
        if snapshot not in names:
            raise DatasetError(f"no copy {snapshot!r} in {replica_dir}",
                               hint=f"copies: {', '.join(names)}")
        target = os.path.abspath(target)
        if os.path.islink(target) or (os.path.exists(target) and os.listdir(target)):
            raise DatasetError(f"{target} exists and is not an empty directory")
        self._ensure_parents()
        if name is None:
            name = self._clone_name(target)
        else:
            parent = name.rsplit("/", 1)[0]
            if not self.local.exists(parent):
                self.local.create(parent, {"mountpoint": "none"}, parents=True)
        self.local.clone(f"{dataset}@{snapshot}", name,
                         {"mountpoint": target, PROP_CLONE_TARGET: target})
        try:
            tree.check_tree(target)
        except BaseException:
            self.local.destroy(name, busy_timeout=BUSY_TIMEOUT)
            raise
        return target

    def destroy_clone(self, target, name=None):
        target = os.path.abspath(target)
        name = name or self._clone_name(target)
        if not self.local.exists(name):
            return
        if self.local.get_one(name, PROP_CLONE_TARGET) != target:
            raise DatasetError(f"{name} is not the clone made for {target}")
        self.local.destroy(name, busy_timeout=BUSY_TIMEOUT)
        try:
            os.rmdir(target)
        except OSError:
            pass

    # -- pruning ---------------------------------------------------------------
    def prune(self, replica_dir, keep):
        dataset = self._dataset(replica_dir)
        if dataset is None:
            return []
        removed = []
        with locked(replica_dir):
            names = [s.short for s in self._sync_snapshots(dataset)]
            for name in plan.copies_to_prune(names, keep):
                try:
                    self.local.destroy(f"{dataset}@{name}")
                except ZfsBusy as e:
                    log.info("keeping copy %s: %s", name, e)
                    continue
                removed.append(name)
        return removed

    def destroy(self, replica_dir):
        replica_dir = os.path.abspath(replica_dir)
        dataset = self._dataset(replica_dir)
        if not os.path.isdir(replica_dir):
            return
        with locked(replica_dir):
            for name in filter(None, (dataset, dataset and dataset + RESEED_SUFFIX,
                                      dataset and dataset + OLD_SUFFIX)):
                if self.local.exists(name):
                    try:
                        self.local.destroy(name, recursive=True, busy_timeout=BUSY_TIMEOUT)
                    except ZfsBusy as e:
                        raise DatasetError(f"cannot destroy the replica {name}: {e.stderr.strip()}",
                                           hint="a clone of it is in use (a restored instance?): "
                                                "destroy or promote it first") from None
            mnt = os.path.join(replica_dir, MOUNT)
            if os.path.ismount(mnt):
                raise DatasetError(f"{mnt} is still mounted", hint=f"umount {mnt}")
        shutil.rmtree(replica_dir, ignore_errors=True)

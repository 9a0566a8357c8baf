"""Pure decisions of dataset replication: plain data in, plain data out.

Nothing here touches a disk, a process or a network; the backends gather the
facts (snapshot lists, copy names), call these, and carry out the answer.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sdcadm.errors import ReplicaDiverged
from sdcadm.transport.zfs import Snapshot

SYNC_PREFIX = "sdcadm-sync-"
HOLD_PREFIX = "sdcadm-"
HOLD_PROPERTY_PREFIX = "sdcadm:hold:"   # + receiver id = hold tag, on source snapshots
RESEED_HINT = "run the sync again with --reseed to send a full copy (the current copy is kept until the new one is complete)"
_STAMP = "%Y%m%dT%H%M%SZ"
_STAMP_RE = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")


@dataclass(frozen=True)
class SyncPlan:
    """What a zfs sync sends: ``full`` (no base) or incremental from ``base``
    (the source's name of the newest common snapshot)."""

    full: bool
    base: str | None = None
    base_guid: str | None = None
    reason: str = ""


# -- names ---------------------------------------------------------------------

def timestamp(now):
    """``now`` (unix seconds) as the UTC stamp in copy and snapshot names."""
    return datetime.fromtimestamp(now, timezone.utc).strftime(_STAMP)


def stamp_time(stamp):
    """Unix seconds of a stamp made by ``timestamp``/``copy_name`` (suffix
    ignored), or None if ``stamp`` is not one."""
    m = _STAMP_RE.match(stamp)
    if not m:
        return None
    return datetime.strptime(m.group(1), _STAMP).replace(tzinfo=timezone.utc).timestamp()


def copy_name(now, existing=()):
    """A copy name for ``now`` that sorts after ``existing`` ones of the same
    second: ``20250102T030405Z``, then ``20250102T030405Z-2``, ..."""
    base = timestamp(now)
    existing = set(existing)
    if base not in existing:
        return base
    n = 2
    while f"{base}-{n}" in existing:
        n += 1
    return f"{base}-{n}"


def sync_snapshot_name(now, existing=()):
    """``sdcadm-sync-<UTC stamp>`` (short name, without ``dataset@``), unique
    among ``existing`` short names."""
    taken = {e[len(SYNC_PREFIX):] for e in existing if e.startswith(SYNC_PREFIX)}
    return SYNC_PREFIX + copy_name(now, taken)


def is_sync_snapshot(short_name):
    return short_name.startswith(SYNC_PREFIX) and _STAMP_RE.match(short_name[len(SYNC_PREFIX):])


def hold_tag(receiver_id):
    """The hold tag of one receiving headnode on source snapshots."""
    receiver_id = str(receiver_id)
    if not receiver_id or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]*", receiver_id):
        raise ValueError(f"receiver id {receiver_id!r} cannot name a hold tag")
    return HOLD_PREFIX + receiver_id


def hold_property(receiver_id):
    """The user property naming a receiver's hold on a source snapshot
    (``zfs holds`` cannot list holds on zfs-fuse)."""
    hold_tag(receiver_id)
    return HOLD_PROPERTY_PREFIX + str(receiver_id).lower()


def safe_component(name, what="name"):
    """``name`` if it is one plain path component (no ``/``, not ``.``/``..``,
    no NUL, not hidden); ValueError otherwise."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\0" in name or name.startswith(".")):
        raise ValueError(f"{what} {name!r} is not a plain name")
    return name


# -- zfs: what to send ---------------------------------------------------------

def newest_common(source: list[Snapshot], replica: list[Snapshot]):
    """The newest snapshot (by the replica's createtxg) whose GUID both sides
    have, as ``(source snapshot, replica snapshot)``, or None."""
    by_guid = {s.guid: s for s in source}
    common = [r for r in replica if r.guid in by_guid]
    if not common:
        return None
    newest = max(common, key=lambda r: r.createtxg)
    return by_guid[newest.guid], newest


def plan_zfs_sync(source: list[Snapshot], replica: list[Snapshot] | None, *, reseed=False):
    """Decide how to bring the replica up to date.

    ``source``/``replica``: lists of Snapshot (``replica`` None when the
    replica dataset does not exist). Raises ReplicaDiverged when an
    incremental receive is impossible and ``reseed`` is false."""
    if replica is None:
        return SyncPlan(full=True, reason="no replica yet")
    if reseed:
        return SyncPlan(full=True, reason="reseed requested")
    if not replica:
        return SyncPlan(full=True, reason="replica has no snapshot")
    found = newest_common(source, replica)
    if found is None:
        newest = max(replica, key=lambda r: r.createtxg)
        raise ReplicaDiverged(
            f"no common snapshot: the replica's newest snapshot {newest.short} "
            f"(guid {newest.guid}) and every older one are gone from the source",
            hint=RESEED_HINT)
    src, rep = found
    newer = sorted((r for r in replica if r.createtxg > rep.createtxg), key=lambda r: r.createtxg)
    if newer:
        names = ", ".join(r.short for r in newer[:5])
        raise ReplicaDiverged(
            f"the replica has snapshots newer than the newest common one ({rep.short}) "
            f"that the source does not have: {names}",
            hint=RESEED_HINT)
    return SyncPlan(full=False, base=src.name, base_guid=src.guid,
                    reason=f"incremental from {src.short}")


def source_snapshots_to_destroy(snapshots: list[Snapshot], *, grace=0.0):
    """Source sync snapshots no receiver needs any more.

    A snapshot goes when it is an ``sdcadm-sync-*`` snapshot, nobody holds it
    (``userrefs`` 0), it is not the newest sync snapshot, and it is older than
    the newest by more than ``grace`` seconds (source clock): another receiver
    may have just made it and not be holding it yet. Oldest first."""
    sync = sorted((s for s in snapshots if is_sync_snapshot(s.short)), key=lambda s: s.createtxg)
    if not sync:
        return []
    newest = sync[-1]
    return [s for s in sync[:-1]
            if s.userrefs == 0 and s.creation <= newest.creation - grace]


def holds_to_release(snapshots: list[Snapshot], keep_name):
    """Sync snapshots this receiver may still hold, apart from ``keep_name``
    (full name): those held by someone (``userrefs`` > 0). ``zfs holds`` is
    not usable on zfs-fuse, so the receiver tries to release its tag on each."""
    return [s for s in snapshots
            if s.userrefs > 0 and s.name != keep_name and is_sync_snapshot(s.short)]


# -- copies kept on the receiver -----------------------------------------------

def copies_to_prune(names, keep, protect=()):
    """Which copies to remove so that the ``keep`` newest remain.

    ``names``: copy names oldest first. ``keep`` is at least 1: the newest
    copy is the base of the next incremental sync and never goes. Names in
    ``protect`` (the one ``current`` points to, one a clone depends on) stay
    too, in addition to the ``keep`` newest. Oldest first."""
    keep = max(1, int(keep))
    names = list(names)
    kept = names[-keep:]
    return [n for n in names[:-keep] if n not in protect and n not in kept]

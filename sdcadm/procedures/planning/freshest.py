"""Which headnode's copy a restore seeds each instance from, and the RPO limit.

``RestoreServices.prepare`` asks every reachable headnode's agent what it
holds (``GET /v1/restore-data``) and reads this headnode's own copies; the
decisions are here, over plain data:

    peer = read_holdings(hostname, uuid, answer)          # a peer's answer, checked
    choice = choose_copy(alias, uuid, local, local_age, peers, can_pull)
    check_data_age(choices, limit, accept)                # NotViable when too old

Why the agents' answers and not the store's sync records: what a restore
copies is what lies on the peer's disk, and its agent reads its signed
manifest to answer; the store's ``restore-status`` records are written after
each sync and go stale when a headnode's agent dies or its disk is replaced.
A peer's answer is remote input: anything malformed is dropped (and said),
never trusted, and the copy actually pulled is checked against its signed
manifest before it is used (``restore_data/peer_copy.py``).

Ages are compared, not timestamps: each headnode computes the age of its own
copies with its own clock, so a clock that is off between headnodes does not
make an old copy look new.
"""

import math
from dataclasses import dataclass

from sdcadm.procedures.planning.common import NotViable
from sdcadm.uuids import is_name, is_uuid

# A peer's copy must be this much newer than ours to be worth pulling: two
# copies taken by the same sync cycle differ by the time it takes to ask.
TIE_MARGIN = 1.0
MAX_AGE = 100 * 365 * 86400.0   # an age beyond this is garbage, not a copy
MAX_ROWS = 100_000
MAX_TEXT = 255


@dataclass(frozen=True)
class PeerCopy:
    """A peer headnode's copy of one instance, as its agent described it."""

    hostname: str
    server_uuid: str
    service: str
    instance: str
    age: float                  # seconds, by the peer's clock, when it answered
    last_success: float         # the peer's timestamp of that copy (its manifest says)
    snapshot: str | None        # its dataset copy (None: the instance has no dataset)


@dataclass(frozen=True)
class PeerHoldings:
    """What one other headnode answered (or why it did not)."""

    hostname: str
    server_uuid: str
    reachable: bool
    error: str | None = None     # unreachable, or an answer not understood
    copies: tuple = ()           # PeerCopy
    dropped: int = 0             # rows of its answer that were not understood

    def copy_of(self, instance_uuid):
        return next((c for c in self.copies if c.instance == instance_uuid), None)


@dataclass(frozen=True)
class CopyChoice:
    """Where an instance's data will come from."""

    alias: str
    service: str
    instance: str
    age: float | None                # of the copy chosen (None: no usable copy anywhere)
    source: str | None               # hostname the chosen copy is on (None: nowhere)
    here: bool                       # it is this headnode's own copy
    local_age: float | None          # of this headnode's copy (None: none usable)
    pull: tuple = ()                 # PeerCopy to try, best first (empty: seed from ours)
    not_pulled: str | None = None    # a newer copy exists that cannot be pulled: why


def unreachable(hostname, server_uuid, reason):
    return PeerHoldings(hostname, server_uuid, False, error=reason)


def read_holdings(hostname, server_uuid, answer):
    """The PeerHoldings of a headnode's ``GET /v1/restore-data`` ``answer``.

    Only rows that are entirely well formed count; the others are counted in
    ``dropped`` (a hostile or broken agent cannot crash the restore or pass a
    bad row for a copy). A row without a good copy (never synced, a broken
    manifest) is not a copy either."""
    if not isinstance(answer, dict) or not isinstance(answer.get("holdings"), list):
        return PeerHoldings(hostname, server_uuid, True,
                            error="its answer is not a restore-data listing (ignored)")
    rows = answer["holdings"]
    if len(rows) > MAX_ROWS:
        return PeerHoldings(hostname, server_uuid, True,
                            error=f"its answer lists {len(rows)} copies, over {MAX_ROWS} (ignored)")
    copies, seen, dropped = [], set(), 0
    for row in rows:
        copy = _copy_of_row(hostname, server_uuid, row)
        if copy is False:
            dropped += 1
        elif copy is not None and copy.instance not in seen:
            seen.add(copy.instance)
            copies.append(copy)
        elif copy is not None:
            dropped += 1          # the same instance twice: neither row is trusted more
    error = f"{dropped} row(s) of its answer not understood (ignored)" if dropped else None
    return PeerHoldings(hostname, server_uuid, True, error=error, copies=tuple(copies),
                        dropped=dropped)


def _copy_of_row(hostname, server_uuid, row):
    """PeerCopy; None for a well-formed row that holds no usable copy; False
    for a row that is not well formed."""
    if not isinstance(row, dict):
        return False
    status, service, instance = row.get("status"), row.get("service"), row.get("instance")
    if status == "broken":
        return None                        # its manifest cannot be read: nothing to pull
    if not (is_name(service) and is_uuid(instance)):
        return False
    age, last = row.get("age"), row.get("last_success")
    if age is None and last is None:
        return None                        # never synced
    if not (_number(age) and 0 <= age <= MAX_AGE and _number(last) and last > 0):
        return False
    snapshot = row.get("snapshot")
    if snapshot is not None and not (isinstance(snapshot, str) and 0 < len(snapshot) <= MAX_TEXT
                                     and "/" not in snapshot and snapshot not in (".", "..")):
        return False
    return PeerCopy(hostname, server_uuid, service, instance, float(age), float(last), snapshot)


def _number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def choose_copy(alias, service, instance_uuid, local_age, peers, can_pull=True):
    """The CopyChoice for one instance.

    ``local_age``: the age of this headnode's copy, None when it has none that
    passed its checks (missing, never synced, broken: such a copy is skipped).
    The newest copy wins; a peer's must be newer by more than TIE_MARGIN (a
    tie goes to this headnode: nothing to move). Every peer copy newer than
    ours is kept, newest first, as a fallback for the one before it (a copy
    that fails its checks once pulled). ``can_pull`` False (the zfs backend):
    ours is used and the newer one named."""
    offers = sorted((c for p in peers if p.reachable for c in [p.copy_of(instance_uuid)]
                     if c is not None and c.service == service),
                    key=lambda c: (c.age, c.hostname))
    better = [c for c in offers if local_age is None or c.age < local_age - TIE_MARGIN]
    if better and can_pull:
        return CopyChoice(alias, service, instance_uuid, better[0].age, better[0].hostname,
                          False, local_age, tuple(better))
    why = None
    if better:
        why = (f"{better[0].hostname} holds a newer copy ({better[0].age:.0f}s old), but pulling a "
               "zfs copy from another headnode is not supported yet: to restore from it, run the "
               f"restore on {better[0].hostname}")
    if local_age is None:
        return CopyChoice(alias, service, instance_uuid, None, None, False, None, (), why)
    return CopyChoice(alias, service, instance_uuid, local_age, None, True, local_age, (), why)


def too_old(choices, limit):
    """The choices whose copy is older than ``limit`` seconds."""
    return [c for c in choices if c.age is not None and c.age > limit]


def check_data_age(choices, limit, accept, here="this headnode"):
    """NotViable naming every instance whose newest copy is older than
    ``limit`` (``restore.max_data_age``), unless ``accept`` (--accept-data-age);
    and naming, whatever ``accept``, every instance whose only copies are on
    headnodes it cannot be pulled from (zfs)."""
    nowhere = [c for c in choices if c.age is None and c.not_pulled]
    if nowhere:
        raise NotViable("no copy here that can be restored of:\n"
                        + "\n".join(f"  - {c.alias} ({c.service}): {c.not_pulled}"
                                     for c in nowhere),
                        hint="run the restore on the headnode named above")
    old = too_old(choices, limit)
    if not old or accept:
        return old
    lines = [f"  - {c.alias} ({c.service}): {c.age:.0f}s old, on {c.source or here}"
             + (f" ({c.not_pulled})" if c.not_pulled else "") for c in old]
    raise NotViable(
        f"refusing to restore: the newest copy of {len(old)} instance(s) is older than "
        f"restore.max_data_age ({limit:.0f}s); every write made since would be lost:\n"
        + "\n".join(lines),
        hint="if their source can still be read, sync first (`sdcadm service sync-restore-data`);"
             " otherwise accept the loss of those writes with --accept-data-age (or raise "
             "restore.max_data_age)")


def freshest_summary(choices, peers, limit, here):
    """The lines of the summary that say where each instance's data comes from
    and how old it is (shown before the prompt)."""
    lines, ours = [], []
    for c in choices:
        if c.age is None:
            continue
        over = (f"; OLDER than restore.max_data_age ({limit:.0f}s): accepted"
                if c.age > limit else "")
        if c.here and not c.not_pulled and not over:
            ours.append(f"{c.alias} {c.age:.0f}s old")
            continue
        if c.here:
            line = f"data of {c.alias} ({c.service}): {c.age:.0f}s old, from {here} (this headnode)"
        else:
            was = f"{c.local_age:.0f}s old" if c.local_age is not None else "none usable"
            line = (f"data of {c.alias} ({c.service}): {c.age:.0f}s old, from {c.source}: pulled "
                    f"here first and checked against its signed manifest (ours: {was})")
        lines.append(line + (f"; {c.not_pulled}" if c.not_pulled else "") + over)
    if ours:
        lines.insert(0, f"data from {here} (this headnode, the newest copy of each): "
                        + ", ".join(ours))
    for p in peers:
        if not p.reachable:
            lines.append(f"headnode {p.hostname} not asked for its copies: {p.error}")
        elif p.error:
            lines.append(f"headnode {p.hostname}: {p.error}")
    return lines

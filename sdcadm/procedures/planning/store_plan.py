"""`sdcadm store recover` and `store status`, decided over plain facts.

``choose_snapshot`` picks the snapshot a lone headnode rebuilds the store
from: the newest good one (highest revision, then newest) among those found,
refusing with the reason when none is good, when the newest is older than the
limit (unless forced), or when the store still has a quorum (unless forced).
Nothing here does I/O: ``procedures.store_recover`` gathers the facts.
"""

from dataclasses import dataclass

from sdcadm.procedures.planning.common import NotViable


@dataclass(frozen=True)
class Candidate:
    """One headnode's snapshot of the store, as found (``problem``: why it is refused)."""

    headnode: str
    local: bool
    manifest: dict | None = None
    problem: str | None = None
    path: str | None = None          # where the snapshot file is (local, or fetched)

    @property
    def revision(self):
        return self.manifest["revision"] if self.manifest else None

    @property
    def taken(self):
        return self.manifest["taken"] if self.manifest else None


def usable(candidates, cluster_id=None):
    """(good candidates, refused [(headnode, reason)]): a candidate with a
    problem, or of another cluster than ``cluster_id`` (when known), is refused."""
    good, refused = [], []
    for c in candidates:
        if c.problem:
            refused.append((c.headnode, c.problem))
        elif cluster_id and c.manifest["cluster_id"] != cluster_id:
            refused.append((c.headnode, f"snapshot of etcd cluster {c.manifest['cluster_id']}, "
                                        f"not of this headnode's cluster {cluster_id}"))
        else:
            good.append(c)
    return good, refused


def choose_snapshot(candidates, now, max_age, force=False, cluster_id=None):
    """The Candidate to recover from; NotViable saying why none is taken."""
    good, refused = usable(candidates, cluster_id)
    if not good:
        why = "; ".join(f"{h}: {r}" for h, r in refused) or "no headnode was asked"
        raise NotViable(f"no good snapshot of the store on any reachable headnode ({why})",
                        hint="run `sdcadm store status` to see each headnode's snapshot; "
                             "a headnode keeps one in its restore data each sync (etcd store "
                             "only); --from-snapshot PATH uses a copy you hold")
    # Newest by revision; at equal revision this headnode's own copy (no transfer).
    best = max(good, key=lambda c: (c.revision, c.local, c.taken))
    age = now - best.taken
    if age > max_age and not force:
        raise NotViable(
            f"the newest snapshot of the store (revision {best.revision}, on {best.headnode}) "
            f"is {age:.0f}s old, older than the limit of {max_age:.0f}s "
            "(store.max_snapshot_age or --max-age)",
            hint="every write made since it would be lost; use it anyway with --force, or "
                 "bring back a headnode with a newer one")
    return best


def quorum_problem(health, force=False):
    """NotViable when a member still answers with a leader (``health``:
    {endpoint: bool}) and ``force`` is not given; else None."""
    alive = sorted(e for e, ok in health.items() if ok)
    if alive and not force:
        raise NotViable(
            f"the store still has a quorum ({', '.join(alive)} answer{'s' if len(alive) == 1 else ''} "
            "with a leader): recovering from a snapshot would throw away every write since it",
            hint="`store recover` is for a headnode that lost its quorum (two of three "
                 "headnodes gone); see `sdcadm store status`; --force if you know better")
    return None


def age_text(seconds):
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def summary_lines(best, now, member, old_data_dir, refused):
    """What `store recover` will do, for the operator to confirm."""
    m = best.manifest
    lines = [
        f"recover the DC store from {best.headnode}'s snapshot: revision {m['revision']}, "
        f"taken {age_text(now - m['taken'])} ago ({m['bytes']} bytes, cluster {m['cluster_id']})",
        f"  every write after revision {m['revision']} is lost",
        f"stop this headnode's etcd member ({member['name']}) and keep its data directory "
        f"as {old_data_dir}",
        f"start a new one-member cluster: {member['name']} at {member['peer_url']}, "
        f"clients at {member['client_url']}",
        f"point store.etcd_endpoints of this headnode's configuration at {member['client_url']}",
    ]
    lines += [f"  (not used: {h}: {r})" for h, r in refused]
    return lines

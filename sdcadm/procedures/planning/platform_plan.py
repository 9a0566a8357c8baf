"""Which headnodes `sdcadm platform install VERSION` sends the platform to, and
what `sdcadm platform ls` shows, decided from plain facts.

Each headnode's answer is the entry of ``usbkey.platform.held`` for the
version (state ``ok``, ``missing`` or ``damaged``, with its sha256), or the
text of the error met while asking it. A headnode is:

* *present*: it holds the version, intact, with the sha256 being installed
  (left untouched: installing twice changes nothing);
* *send*: it lacks the version, or its copy is damaged (replaced);
* *conflict*: it holds another file under that version (refused: a version
  names one file, and which one is right is the operator's call);
* *unreachable*: it could not be asked (refused unless skipped: it would
  silently miss the platform).
"""

from dataclasses import dataclass

from sdcadm.procedures.planning.common import NotViable
from sdcadm.errors import Unreachable


class PlatformUnreachable(NotViable):
    """Headnodes could not be asked; installing without them needs the operator's word."""

    exit_code = Unreachable.exit_code


@dataclass(frozen=True)
class PlatformPlan:
    version: str
    sha256: str
    size: int
    send: tuple = ()          # hostnames
    repair: tuple = ()        # the hostnames of ``send`` whose copy is damaged
    present: tuple = ()
    conflicts: tuple = ()     # (hostname, their sha256)
    unreachable: tuple = ()   # (hostname, why)


def plan_platform(version, sha256, size, answers):
    """The plan for ``answers`` (hostname -> held entry, or an error text)."""
    send, repair, present, conflicts, unreachable = [], [], [], [], []
    for host, answer in sorted(answers.items()):
        if isinstance(answer, str):
            unreachable.append((host, answer))
        elif answer.get("state") == "ok" and answer.get("sha256") == sha256:
            present.append(host)
        elif answer.get("state") == "ok":
            conflicts.append((host, str(answer.get("sha256"))))
        else:
            send.append(host)
            if answer.get("state") == "damaged":
                repair.append(host)
    return PlatformPlan(version, sha256, size, tuple(send), tuple(repair), tuple(present),
                        tuple(conflicts), tuple(unreachable))


def refusal(plan, skip_unreachable):
    """NotViable (or PlatformUnreachable) for what stops the install, else None."""
    problems = [f"{host} holds another platform {plan.version} (sha256 {sha[:16]}..., this "
                f"one's is {plan.sha256[:16]}...): a version names one file"
                for host, sha in plan.conflicts]
    if problems:
        return NotViable(f"cannot install platform {plan.version}:\n  - "
                         + "\n  - ".join(problems),
                         hint=f"check the file; if the copy held there is the wrong one, remove "
                              f"platforms/{plan.version} from that headnode's usbkey and run "
                              "the same command again")
    if plan.unreachable and not skip_unreachable:
        listed = "\n  - ".join(f"{host}: {why}" for host, why in plan.unreachable)
        return PlatformUnreachable(
            f"cannot install platform {plan.version}: headnode(s) could not be asked:\n  - "
            f"{listed}",
            hint="bring them back and run the same command again, or pass --skip-unreachable "
                 "to install on the others now (run it again later for these)")
    return None


def listing_rows(holdings, servers):
    """Rows of `sdcadm platform ls` (pure): one per version held by a headnode
    or named by a server's boot or current platform. ``holdings``: hostname
    -> held entries, or an error text (that headnode is left out of every
    row: it is reported apart). ``servers``: the store's Server records."""
    versions = {}

    def row(version):
        return versions.setdefault(version, {
            "version": version, "size": None, "sha256": None, "headnodes": [],
            "damaged": [], "missing": [], "boot": [], "current": []})

    reachable = sorted(h for h, e in holdings.items() if not isinstance(e, str))
    for host in reachable:
        for e in holdings[host]:
            r = row(e["version"])
            if e["state"] == "ok":
                r["headnodes"].append(host)
                r["size"], r["sha256"] = r["size"] or e["size"], r["sha256"] or e["sha256"]
            else:
                r["damaged"].append(host)
    for s in sorted(servers, key=lambda s: s.hostname):
        if s.boot_platform:
            row(s.boot_platform)["boot"].append(s.hostname)
        if s.current_platform:
            row(s.current_platform)["current"].append(s.hostname)
    for r in versions.values():
        r["missing"] = [h for h in reachable if h not in r["headnodes"] and h not in r["damaged"]]
    return [versions[v] for v in sorted(versions)]

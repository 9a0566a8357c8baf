"""``sdcadm lab drill --heal``: after the restore, back to three headnodes.

The operator's own commands, run as the operator types them on the surviving
headnode (the installed ``sdcadm``, its configuration), each timed:

1. the lost headnode is gone for good: powered off again (the drill brought
   it back to check its fencing);
2. ``sdcadm server delete hn0 --force``: its HA peer records, addresses and
   etcd member go (etcd refuses a new member while a member is down, so the
   lost member goes before the new one comes: the order differs from "set up,
   then delete" for that reason);
3. ``sdcadm server headnode-setup cn0``: the bundle, cn0's etcd member, flag
   H, recovery reservations, restore data on cn0;
4. ``sdcadm post-setup ha-SERVICE`` for each HA service the lab runs: its
   third peer on cn0 (the default: every headnode);
5. ``sdcadm service sync-restore-data``: every headnode holds copies of the
   restored instances (they were created on the survivor by the restore);
6. ``sdcadm check-health`` and ``sdcadm status``, until both exit 0.

The result says each step's seconds, and where each HA service runs and which
members the store's cluster has at the end.
"""

import json
import time

from sdcadm.errors import LabError
from sdcadm.lab import ctl
from sdcadm.lab.build import run_sdcadm
# The next drill rebuilds a healed lab; hn0's member, removed, is never started.
from sdcadm.lab.etcd import HEALED_MARK
from sdcadm.progress import Progress, notify

HA_COMMANDS = ("binder", "manatee", "moray")   # `sdcadm post-setup ha-*`


def check_heal(fault, lose, computenodes):
    """LabError unless ``--heal`` can run on this drill."""
    if fault != "kill":
        raise LabError("--heal follows a drill that kills hn0 (--fault kill)",
                       hint="drop --fault partition or --heal")
    if len(lose) != 1:
        raise LabError(f"--heal follows the loss of one headnode; --lose names {len(lose)}",
                       hint="drop --lose (default: hn0) or --heal")
    if computenodes < 1:
        raise LabError("--heal makes cn0 a headnode: the lab needs a compute node",
                       hint="use --computenodes 1 or more")


class Heal:
    def __init__(self, state, survivor, dead, timeout, observer):
        self.state, self.survivor, self.dead = state, survivor, dead
        self.timeout, self.observer = timeout, observer
        self.steps, self.problems = [], []

    def run(self, *argv, check=True):
        """``sdcadm ARGV`` on the survivor, as its operator runs it:
        (returncode, stdout, stderr)."""
        done = run_sdcadm(self.state, self.survivor, argv, timeout=self.timeout * 4)
        if check and done.returncode != 0:
            raise LabError(f"`sdcadm {' '.join(argv)}` on {self.survivor} failed "
                           f"(exit {done.returncode}): {_tail(done.stderr)}")
        return done.returncode, done.stdout, done.stderr

    def step(self, name, action):
        notify(self.observer, Progress("heal", name))
        started = time.monotonic()
        ok, error = True, None
        try:
            action()
        except LabError as e:
            ok, error = False, e.message
            self.problems.append(f"heal: {name}: {e.message}")
        self.steps.append({"step": name, "s": round(time.monotonic() - started, 3), "ok": ok,
                           **({"error": error} if error else {})})
        return ok

    def until_ok(self, *argv):
        """Run ``sdcadm ARGV`` until it exits 0 (the drill's timeout); its last output."""
        deadline = time.monotonic() + self.timeout
        while True:
            code, out, err = self.run(*argv, check=False)
            if code == 0:
                return out
            if time.monotonic() > deadline:
                raise LabError(f"`sdcadm {' '.join(argv)}` still exits {code} after "
                               f"{self.timeout:.0f}s: {_tail(err or out)}")
            time.sleep(1.0)


def heal(state, survivor, dead, new_headnode, store, timeout, observer=None):
    """Run the heal on ``survivor`` (hostnames); return its report (a dict)."""
    h = Heal(state, survivor, dead, timeout, observer)
    ha = sorted({i.service for i in store.list_instances()} & set(HA_COMMANDS))
    done = {}

    def power_off():
        ctl.kill(state, dead)

    def delete():
        h.run("server", "delete", dead, "--force", "-y", "-j")
        (state.path / HEALED_MARK).write_text(f"{dead}\n")

    def health():
        h.until_ok("check-health", "-q")

    def status():
        done["status"] = json.loads(h.until_ok("status", "-j"))

    plan = [(f"power {dead} off for good", power_off),
            (f"sdcadm server delete {dead} --force", delete),
            (f"sdcadm server headnode-setup {new_headnode}",
             lambda: h.run("server", "headnode-setup", new_headnode, "-y", "-j")),
            *[(f"sdcadm post-setup ha-{s}", lambda s=s: h.run("post-setup", f"ha-{s}", "-y", "-j"))
              for s in ha],
            ("sdcadm service sync-restore-data",
             lambda: h.run("service", "sync-restore-data", "-j")),
            ("sdcadm check-health", health),
            ("sdcadm status", status)]
    for name, action in plan:
        if not h.step(name, action):
            break
    report = {"steps": h.steps, "new_headnode": new_headnode, "deleted": dead,
              "ha": _ha_placement(store, ha), "members": _members(state),
              "status_ok": bool(done.get("status", {}).get("ok")),
              "total_s": round(sum(s["s"] for s in h.steps), 3)}
    for service, hosts in report["ha"].items():
        if len(set(hosts)) != 3 or new_headnode not in hosts:
            h.problems.append(f"heal: {service} runs on {', '.join(hosts) or 'nothing'}, not on "
                              f"three headnodes with {new_headnode}")
    if state.store == "etcd" and sorted(report["members"]) != sorted(
            s.hostname for s in store.list_servers() if s.headnode):
        h.problems.append(f"heal: the store's members ({', '.join(report['members'])}) are not "
                          "the headnodes")
    report["problems"] = h.problems
    return report


def _ha_placement(store, services):
    servers = {s.uuid: s for s in store.list_servers()}
    return {name: sorted(servers[i.server_uuid].hostname for i in store.list_instances()
                         if i.service == name and i.server_uuid in servers
                         and servers[i.server_uuid].headnode)
            for name in services}


def _members(state):
    if state.store != "etcd":
        return []
    from sdcadm.errors import StoreError
    from sdcadm.store.etcd_maintenance import cluster_members

    ends = [state.etcd_endpoint(s["hostname"]) for s in state.servers]
    try:
        return sorted(m["name"] for m in cluster_members(ends))
    except StoreError as e:
        return [f"? ({e.message})"]


def _tail(text, lines=6):
    return " | ".join((text or "").strip().splitlines()[-lines:])[:1200]


def render(report):
    """Lines for people."""
    lines = ["", f"heal ({report['total_s']:.1f}s): {report['deleted']} deleted, "
                 f"{report['new_headnode']} made a headnode"]
    for s in report["steps"]:
        lines.append(f"  {s['s']:>7.2f}s  {s['step']}" + ("" if s["ok"] else "  FAILED"))
    for service, hosts in report["ha"].items():
        lines.append(f"  {service:<8} on {', '.join(hosts)}")
    if report["members"]:
        lines.append(f"  store members: {', '.join(report['members'])}")
    lines.append(f"  sdcadm status: {'OK (exit 0)' if report['status_ok'] else 'NOT OK'}")
    return lines

"""`sdcadm status`: the one screen an operator reads first."""

import json
from collections import Counter

import click

from sdcadm.cli import context
from sdcadm.cli.context import pass_state
from sdcadm.errors import NotFound, ReportedFailure
from sdcadm.model import ADMIN_NETWORK

TITLES = {"setup": "setup", "servers": "servers", "restore_data": "restore data",
          "instances": "instances", "admin_network": "admin network", "tasks": "tasks"}


def gather(state):
    """The facts `sdcadm status` decides from (probes every instance once)."""
    from sdcadm.cli.health import check
    from sdcadm.status import StatusFacts

    store, config, now = state.store, state.config, context.now()
    servers = store.list_servers()
    instances = store.list_instances()
    try:
        network = store.get_network(ADMIN_NETWORK)
    except NotFound:
        network = None
    specs = state.catalog.services
    rows = check(instances, {s.uuid: s for s in servers}, specs, now,
                 config.agent.heartbeat_timeout)
    ha = frozenset(s.name for s in store.list_services()
                   if isinstance(s.params, dict) and s.params.get("ha"))
    return StatusFacts(
        servers=servers, instances=instances, specs=specs,
        restore_status=store.list_restore_status(), network=network,
        tasks=store.list_tasks(limit=200),
        health={r["uuid"]: (None if r["healthy"] else r["error"]) for r in rows},
        now=now, heartbeat_timeout=config.agent.heartbeat_timeout,
        # The RPO limit restore refuses beyond: a copy older is STALE.
        rpo_target=float(config.restore.max_data_age), store_backend=store.backend, ha_services=ha,
        store_members=_members(config))


def _members(config):
    """etcd: the cluster's members, each asked whether it answers; else None."""
    if config.store.backend != "etcd":
        return None
    from sdcadm.errors import StoreError
    from sdcadm.store.etcd_maintenance import cluster_members, healthy

    try:
        members = cluster_members(config.store.etcd_endpoints)
    except StoreError:
        return None
    return [{"name": m["name"], "peer_urls": m["peer_urls"],
             "reachable": any(healthy(u, timeout=2.0) for u in m["client_urls"])}
            for m in members]


def summary(name, section):
    """One line of detail per section."""
    if name == "setup":
        ha = ", ".join(f"{svc} {len(v['headnodes'])}/3" for svc, v in section["ha_services"].items())
        members = section.get("store_members")
        return (f"{len(section['headnodes'])} headnode(s); HA: {ha or 'none'}; store "
                f"{section['store_backend']}"
                + (f" ({len(members)} members)" if members is not None else ""))
    if name == "servers":
        return ", ".join(f"{n} {k}" for k, n in section["counts"].items() if n) or "none"
    if name == "restore_data":
        counts = Counter(c["state"] for c in section["copies"])
        return (f"{len(section['copies'])} copies (RPO target {section['rpo_target']:.0f}s): "
                + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none needed"))
    if name == "instances":
        return f"{section['total'] - section['unhealthy']} of {section['total']} healthy"
    if name == "admin_network":
        if "cidr" not in section:
            return "missing"
        return (f"{section['cidr']}: {section['free']} free, {section['allocated']} allocated, "
                f"{section['reserved']} reserved")
    return f"{len(section['problems'])} failed" if section["problems"] else "no failed procedure"


@click.command("status")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@pass_state
def status(state, as_json):
    """The DC's resilience at a glance; exit 1 when anything needs attention.

    Setup (headnodes, HA services at three instances on three headnodes, the
    store), servers (unreachable, fenced), restore data (for every instance
    of a non-HA service, on every other headnode: the age of the last good
    copy against the RPO target; OK, STALE, FAILED or MISSING), instances
    (health checks), the admin network (free addresses) and tasks (the
    procedures whose last run failed). Every problem comes with its fix.
    """
    from sdcadm.status import dc_status

    report = dc_status(gather(state))
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        for name, section in report["sections"].items():
            click.echo(f"{TITLES[name]:<14} {section['status']:<8} {summary(name, section)}")
        problems = [p for s in report["sections"].values() for p in s["problems"]]
        if problems:
            click.echo("\nproblems:")
            for p in problems:
                click.echo(f"  - {p['problem']}\n    fix: {p['fix']}")
    if not report["ok"]:
        raise ReportedFailure("the DC needs attention")

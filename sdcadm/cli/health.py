"""`sdcadm check-health`: is every core-service instance answering?"""

import click

from sdcadm.cli import context
from sdcadm.cli.context import pass_state
from sdcadm.cli.output import output_options, render
from sdcadm.errors import UnhealthyError
from sdcadm.model import SERVER_RUNNING, heartbeat_seen, status_of

HEALTH_FIELDS = ["uuid", "service", "hostname", "alias", "healthy", "error", "state",
                 "server_uuid", "generation", "url"]
DEFAULT_PATH, DEFAULT_TIMEOUT = "/ping", 2.0
MAX_WORKERS = 32


def precheck(inst, server, now, heartbeat_timeout):
    """Why ``inst`` cannot be healthy without probing it, or None."""
    if server is None:
        return f"its server {inst.server_uuid} is not in the DC store"
    if server.fenced:
        return f"its server {server.hostname} is fenced"
    if status_of(server, now, heartbeat_timeout) != SERVER_RUNNING:
        return f"its server {server.hostname} is unreachable ({heartbeat_seen(server, now)})"
    if inst.state != "running":
        return f"its state is {inst.state}, not running"
    return None


def check(instances, servers, specs, now, heartbeat_timeout):
    """Probe every instance concurrently; one row per instance, in input order.

    ``specs``: service name -> ServiceSpec (health_path, health_timeout);
    services missing there are probed at /ping with a 2 s timeout.
    """
    from concurrent.futures import ThreadPoolExecutor

    from sdcadm.health import probe

    rows, probes = [], []
    for inst in instances:
        server = servers.get(inst.server_uuid)
        spec = specs.get(inst.service)
        path = spec.health_path if spec else DEFAULT_PATH
        timeout = spec.health_timeout if spec else DEFAULT_TIMEOUT
        row = {"uuid": inst.uuid, "service": inst.service,
               "hostname": server.hostname if server else None, "alias": inst.alias,
               "healthy": False, "error": precheck(inst, server, now, heartbeat_timeout),
               "state": inst.state, "server_uuid": inst.server_uuid,
               "generation": inst.generation, "url": inst.url + path}
        rows.append(row)
        if row["error"] is None:
            probes.append((row, timeout))
    if probes:
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(probes))) as pool:
            results = pool.map(lambda p: probe(p[0]["url"], p[1]), probes)
            for (row, _), error in zip(probes, results):
                row["healthy"], row["error"] = error is None, error
    return rows


def failure_lines(rows):
    return [f"instance {r['alias']} ({r['uuid']}) on {r['hostname'] or r['server_uuid']}: {r['error']}"
            for r in rows if not r["healthy"]]


@click.command("check-health")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("-q", "--quiet", is_flag=True,
              help="Print only the unhealthy instances (with -j: only their objects).")
@output_options(["uuid", "service", "hostname", "alias", "healthy"], HEALTH_FIELDS,
                headers={"uuid": "INSTANCE"})
@pass_state
def check_health(state, services, quiet, output):
    """Probe every instance (or those of SERVICE...) over HTTP.

    An instance is healthy when its server is running (heartbeat fresh, not
    fenced), its state is running, and GET <url><health path> answers 2xx
    within the catalog's health timeout. After the table, one line per
    unhealthy instance says why. Exit status 1 when any is unhealthy.
    """
    services = state.check_services(services)
    store, catalog = state.store, state.catalog
    servers = {s.uuid: s for s in store.list_servers()}
    instances = [i for i in store.list_instances() if not services or i.service in services]
    rows = check(instances, servers, catalog.services, context.now(),
                 state.config.agent.heartbeat_timeout)
    failed = [r for r in rows if not r["healthy"]]
    if output.json:
        render(failed if quiet else rows, output)
    elif quiet:
        click.echo("".join(line + "\n" for line in failure_lines(rows)), nl=False)
    else:
        render(rows, output)
        if failed and not output.no_header:
            click.echo("\n" + "\n".join(failure_lines(rows)))
    if failed:
        raise UnhealthyError(f"{len(failed)} of {len(rows)} instances are not healthy")

"""Driving the lab DC: up, down, kill, start, status.

``up`` builds (or, when it exists, revives) a DC on this machine: a store, an
admin network on loopback, one agent per server each on its own address and
root, one sshd for the lab, and the catalog's services as real processes.
"""

import base64
import logging
import os
import secrets
import shutil
import socket
import time
from pathlib import Path

import yaml

from sdcadm.catalog import load_catalog
from sdcadm.errors import LabError
from sdcadm.health import probe_many
from sdcadm.lab import procs
from sdcadm.lab.fence import command_for
from sdcadm.lab.images import build_workload_image
from sdcadm.lab.layout import plan_lab
from sdcadm.lab.state import DEFAULT_PORTS, LabState, load_state, save_state
from sdcadm.model import ADMIN_NETWORK, Instance, Network, Server, Service, status_of
from sdcadm.progress import Progress, notify
from sdcadm.uuids import new_uuid

log = logging.getLogger(__name__)

# The heartbeat timeout is also the singletons' instance lease: renewed once
# per heartbeat, SIGTERM a fifth of it before its end (agent.lease_stop_fraction),
# so 3 intervals leave a heartbeat more than one interval of lateness before a
# loaded machine stops its singletons. The dead margin follows from it
# (docs/recovery.md, "Instance leases and the dead margin").
HEARTBEAT_TIMEOUT_FACTOR = 3.0


# -- building ------------------------------------------------------------------
def server_config(state, server):
    root = state.server_root(server["hostname"])
    sshd = _sshd(state)
    return {
        "server_uuid": server["uuid"],
        "hostname": server["hostname"],
        "root": str(root),
        "log_dir": str(root / "var" / "log" / "sdcadm"),
        "restore_data_dir": str(root / "var" / "sdcadm" / "svc-restore-data"),
        "datasets": _datasets_config(state, server),
        "restore_data": {"source_root_template": str(state.path).replace("{", "{{").replace(
            "}", "}}") + "/{hostname}", "key_file": str(state.restore_key_file)},
        "image_source": str(state.images_dir),
        "store": state.store_config(),
        "agent": {
            "listen": server["admin_ip"],
            "port": state.ports["agent"],
            "token_file": str(state.token_file),
            "heartbeat_interval": state.heartbeat_interval,
            "heartbeat_timeout": state.heartbeat_interval * HEARTBEAT_TIMEOUT_FACTOR,
            "reconcile_interval": 0.5,
            "instance_port": state.ports["instance"],
            "cache_file": str(root / "var" / "sdcadm" / "agent-cache.json"),
        },
        # The lab's fence agent (docs/recovery.md "Fencing"): a power-off of the
        # server named, run from whichever headnode restores.
        "fencing": {"command": command_for(state), "timeout": 30.0},
        "ssh": {
            "port": state.ports["ssh"],
            "user": sshd.user,
            "identity": str(sshd.identity),
            "known_hosts": str(sshd.known_hosts),
            "connect_timeout": 5.0,
        },
    }


def _datasets_config(state, server):
    if state.backend != "zfs":
        return {"backend": "dir"}
    from sdcadm.lab.zfs import source_pool_template

    return {"backend": "zfs", "zfs_pool": state.zfs["pools"][server["hostname"]],
            "zfs_source_pool_template": source_pool_template(state.path)}


def _write_private(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _check_free(ip, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the agent's server does: connections of an earlier lab lingering in
        # TIME_WAIT must not count as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as e:
            raise LabError(f"cannot use {ip}:{port} for the lab: {e.strerror}",
                           hint="another lab may be running there: stop it with `sdcadm lab down`"
                                " or pick another network with --net") from None


def _sshd(state):
    from sdcadm.lab.sshd import LabSshd

    ips = [s["admin_ip"] for s in state.servers]
    return LabSshd(state.ssh_dir, ips, state.ports["ssh"])


def create(directory, net, headnodes, computenodes, services=None, ports=None,
           heartbeat_interval=1.0, observer=None, backend="dir", pool_size=None):
    """Write a new lab (store, images, configs, lab.json); start nothing."""
    directory = Path(directory)
    if (directory / "lab.json").exists():
        raise LabError(f"a lab already exists at {directory}")
    catalog = load_catalog()
    plan = plan_lab(net, headnodes, computenodes, catalog, services)
    ports = {**DEFAULT_PORTS, **(ports or {})}
    for server in plan.servers:
        _check_free(server.admin_ip, ports["agent"])
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        raise LabError("sshd is not installed; the lab needs it",
                       hint="install openssh-server (apt-get install openssh-server), "
                            "or run `make drill`, which installs it when run as root")
    directory.mkdir(parents=True, exist_ok=True)
    servers = [{"hostname": s.hostname, "uuid": new_uuid(), "admin_ip": s.admin_ip,
                "headnode": s.headnode} for s in plan.servers]
    if backend not in ("dir", "zfs"):
        raise LabError(f"unknown dataset backend {backend!r}", hint="--backend dir or zfs")
    if backend == "zfs":
        from sdcadm.lab import zfs as labzfs

        labzfs.require_root()
    state = LabState(dir=str(directory), net=plan.net, servers=servers, ports=ports,
                     heartbeat_interval=float(heartbeat_interval), created=time.time(),
                     backend=backend)
    if backend == "zfs":
        state.zfs = {"pools": labzfs.plan_pools(directory, [s["hostname"] for s in servers]),
                     "pool_size": pool_size or labzfs.DEFAULT_POOL_SIZE, "daemon_pid": None}
        notify(observer, Progress("zfs", f"creating {len(servers)} file-backed pools"))
        labzfs.create_pools(state)
    _write_private(state.token_file, secrets.token_hex(32) + "\n")
    # The DC's restore-data key, as `head -c 32 /dev/urandom | base64` makes it.
    _write_private(state.restore_key_file,
                   base64.b64encode(secrets.token_bytes(32)).decode() + "\n")

    wanted = sorted({i.service for i in plan.instances})
    images = {}
    for n, name in enumerate(wanted, 1):
        notify(observer, Progress("images", f"building image for {name}", n, len(wanted)))
        images[name] = build_workload_image(state.images_dir, name)

    store = state.dc_store().initialize()  # the lab creates its DC: the one place it is made
    try:
        store.put_network(Network(ADMIN_NETWORK, plan.net))
        by_host = {}
        for s in servers:
            store.allocate_ip(ADMIN_NETWORK, s["uuid"], s["admin_ip"])
            store.put_server(Server(uuid=s["uuid"], hostname=s["hostname"], admin_ip=s["admin_ip"],
                                    headnode=s["headnode"], boot_platform="lab-1",
                                    current_platform="lab-1", agent_port=ports["agent"]))
            by_host[s["hostname"]] = s
        for name, image in images.items():
            store.put_image(image)
            spec = catalog.get(name)
            store.put_service(Service(name, image.uuid, {"ha": spec.ha,
                                                         "delegate_dataset": spec.delegate_dataset}))
        for n, planned in enumerate(plan.instances, 1):
            uuid = new_uuid()
            ip = store.allocate_ip(ADMIN_NETWORK, uuid)
            store.create_instance(Instance(
                uuid=uuid, alias=planned.alias, service=planned.service,
                server_uuid=by_host[planned.hostname]["uuid"], image=images[planned.service].uuid,
                admin_ip=ip, port=ports["instance"],
                delegate_dataset=catalog.get(planned.service).delegate_dataset))
            notify(observer, Progress("instances", f"placed {planned.alias} on {planned.hostname}",
                                      n, len(plan.instances)))
    finally:
        store.close()

    for s in servers:
        root = state.server_root(s["hostname"])
        for sub in ("etc", "var/log/sdcadm", "var/run", "var/sdcadm", "zones"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        _write_private(state.config_path(s["hostname"]),
                       yaml.safe_dump(server_config(state, s), sort_keys=False))
    _sshd(state).setup()
    save_state(state)
    return state


def up(directory, net, headnodes, computenodes, services=None, ports=None,
       heartbeat_interval=1.0, timeout=120.0, observer=None, backend="dir", pool_size=None):
    """Build the lab if needed, start everything, wait until every instance is healthy."""
    directory = Path(directory)
    if (directory / "lab.json").exists():
        state = load_state(directory)
        sizes = (sum(s["headnode"] for s in state.servers), sum(not s["headnode"] for s in state.servers))
        if sizes != (headnodes, computenodes):
            raise LabError(
                f"the lab at {directory} has {sizes[0]} headnodes and {sizes[1]} compute nodes, "
                f"not {headnodes} and {computenodes}",
                hint="use it as it is, or rebuild it: `sdcadm lab destroy` then `sdcadm lab up`")
        notify(observer, Progress("lab", f"reusing the lab at {directory}"))
    else:
        state = create(directory, net, headnodes, computenodes, services, ports,
                       heartbeat_interval, observer, backend, pool_size)
    start_all(state, observer)
    wait_ready(state, timeout, observer)
    return state


def start_all(state, observer=None):
    if state.backend == "zfs":
        from sdcadm.lab import zfs as labzfs

        labzfs.ensure_pools(state)
        save_state(state)
    sshd = _sshd(state)
    if not sshd.running():
        notify(observer, Progress("sshd", f"starting sshd on port {state.ports['ssh']}"))
        sshd.start()
    for s in state.servers:
        start(state, s["hostname"], observer)


# -- running -------------------------------------------------------------------
def agent_pid(state, hostname):
    return procs.agent_pid(state.config_path(hostname), state.agent_pidfile(hostname))


def start(state, hostname, observer=None):
    """Start the agent of ``hostname`` unless it runs; return its pid."""
    state.server(hostname)
    pid = agent_pid(state, hostname)
    if pid:
        return pid
    notify(observer, Progress("agents", f"starting the agent of {hostname}"))
    proc = procs.start_agent(state.config_path(hostname), state.agent_log(hostname),
                             state.agent_pidfile(hostname))
    return proc.pid


def kill(state, hostname):
    """Abruptly kill a server: SIGKILL its agent and every instance on it."""
    import signal

    server = state.server(hostname)
    pid = agent_pid(state, server["hostname"])
    killed = []
    if pid:
        procs.kill_group(pid, signal.SIGKILL)
        killed.append(pid)
    # Anything else with its working directory under that server's root.
    leftovers = procs.lab_processes(state.server_root(server["hostname"]))
    for p in leftovers:
        procs.send(p, signal.SIGKILL)
    procs.terminate(killed + leftovers, grace=0)
    return killed + leftovers


def down(directory, observer=None):
    """Stop every process of the lab; keep its files. Return how many were stopped."""
    import signal

    directory = Path(directory)
    stopped = []
    if (directory / "lab.json").exists():
        state = load_state(directory)
        for s in state.servers:
            pid = agent_pid(state, s["hostname"])
            if pid:
                notify(observer, Progress("down", f"stopping {s['hostname']}"))
                procs.kill_group(pid, signal.SIGTERM)
                stopped.append(pid)
        try:
            _sshd(state).stop()
        except LabError as e:
            log.warning("stopping the lab sshd: %s", e)
    procs.terminate(stopped, grace=5.0)
    if (directory / "lab.json").exists() and state.backend == "zfs":
        from sdcadm.lab import zfs as labzfs

        labzfs.stop_daemon(state)
        save_state(state)
    leftovers = procs.lab_processes(directory)
    procs.terminate(leftovers, grace=5.0)
    return len(stopped) + len(leftovers)


def destroy(directory, observer=None):
    """Stop the lab and delete its directory."""
    directory = Path(directory)
    down(directory, observer)
    if (directory / "lab.json").exists():
        state = load_state(directory)
        if state.backend == "zfs":
            from sdcadm.lab import zfs as labzfs

            labzfs.destroy_pools(state)
    if (directory / "lab.json").exists() or not directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    else:
        raise LabError(f"{directory} does not look like a lab (no lab.json); not deleting it")


# -- observing -------------------------------------------------------------------
def open_lab_store(state):
    return state.dc_store().open()


def status(state, now=None, store=None):
    """One row per server: what the lab runs and what the store believes."""
    if store is None:
        with open_lab_store(state) as store:
            return status(state, now, store)
    now = store.now() if now is None else now  # heartbeats are in the store's time
    timeout = state.heartbeat_interval * HEARTBEAT_TIMEOUT_FACTOR
    by_uuid = {s.uuid: s for s in store.list_servers()}
    insts = store.list_instances()
    rows = []
    for s in state.servers:
        mine = [i for i in insts if i.server_uuid == s["uuid"]]
        server = by_uuid.get(s["uuid"])
        rows.append({
            "hostname": s["hostname"],
            "role": "headnode" if s["headnode"] else "compute",
            "admin_ip": s["admin_ip"],
            "agent_pid": agent_pid(state, s["hostname"]),
            "status": status_of(server, now, timeout) if server else "missing",
            "instances": len(mine),
            "running": sum(i.state == "running" for i in mine),
        })
    return rows


def wait_ready(state, timeout=120.0, observer=None):
    """Wait until every server heartbeats and every instance runs and answers /ping."""
    deadline = time.monotonic() + timeout
    last = None
    with open_lab_store(state) as store:
        while True:
            rows = status(state, store=store)
            insts = store.list_instances()
            answers = probe_many([i.url + "/ping" for i in insts], timeout=1.0)
            healthy = [i for i in insts
                       if i.state == "running" and answers.get(i.url + "/ping") is None]
            down_servers = [r["hostname"] for r in rows if r["status"] != "running"]
            msg = f"{len(healthy)}/{len(insts)} instances healthy"
            if down_servers:
                msg += f"; waiting for {', '.join(down_servers)}"
            if msg != last:
                notify(observer, Progress("ready", msg, len(healthy), len(insts)))
                last = msg
            if not down_servers and len(healthy) == len(insts):
                return
            if time.monotonic() > deadline:
                bad = [f"{i.alias} ({i.state}: {answers.get(i.url + '/ping') or 'not running'})"
                       for i in insts if i not in healthy][:10]
                raise LabError(f"the lab was not ready after {timeout:.0f}s: {msg}"
                               + (f"; not healthy: {', '.join(bad)}" if bad else ""),
                               hint=f"see the agents' logs under {state.dir}/<server>/var/log/")
            time.sleep(0.25)

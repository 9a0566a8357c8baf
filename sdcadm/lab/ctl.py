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
from sdcadm.lab import build, netns, procs
from sdcadm.lab.fence import command_for, power_off
from sdcadm.lab.images import build_workload_image
from sdcadm.lab.layout import plan_lab
from sdcadm.lab.state import DEFAULT_PORTS, LabState, load_state, save_state
from sdcadm.model import status_of
from sdcadm.progress import Progress, notify
from sdcadm.uuids import new_uuid

log = logging.getLogger(__name__)

# The heartbeat timeout is also the singletons' instance lease: renewed once
# per heartbeat, SIGTERM a fifth of it before its end (agent.lease_stop_fraction).
# 4 intervals leave a heartbeat 2.2 intervals of lateness before a loaded
# machine stops its singletons: with 3 (1.4 intervals, 0.7 s at the tests'
# 0.5 s), five agents and three etcd members starting 32 instances on two
# cores let leases lapse right after `lab up`. The dead margin follows from
# it (docs/recovery.md, "Instance leases and the dead margin").
HEARTBEAT_TIMEOUT_FACTOR = 4.0


# -- building ------------------------------------------------------------------
def server_config(state, server):
    host = server["hostname"]
    root = state.server_root(host)
    sshd = _sshds(state)[0]
    return {
        "server_uuid": server["uuid"],
        "hostname": host,
        "root": str(root),
        "log_dir": str(root / "var" / "log" / "sdcadm"),
        "restore_data_dir": str(root / "var" / "sdcadm" / "svc-restore-data"),
        "datasets": _datasets_config(state, server),
        # Relative: a source server's files as its sshd shows them (the lab sshd
        # runs a login on a server's address in that server's root).
        "restore_data": {"source_root_template": ".",
                         "key_file": str(state.restore_key_path(host))},
        "image_source": str(state.server_images(host)),
        "store": _store_config(state, server),
        "agent": {
            "listen": server["admin_ip"],
            "port": state.ports["agent"],
            "token_file": str(state.token_path(host)),
            "heartbeat_interval": state.heartbeat_interval,
            "heartbeat_timeout": state.heartbeat_interval * HEARTBEAT_TIMEOUT_FACTOR,
            # The safety net under the store watch (a move wakes a pass at once):
            # as often as the heartbeat, no more (each pass is a store read).
            "reconcile_interval": state.heartbeat_interval,
            "instance_port": state.ports["instance"],
            "cache_file": str(root / "var" / "sdcadm" / "agent-cache.json"),
        },
        # The lab's fence agent (docs/recovery.md "Fencing"): a power-off of the
        # server named, run from whichever headnode restores.
        "fencing": {"command": command_for(state), "timeout": 30.0},
        "ssh": {
            "port": state.ports["ssh"],
            "user": sshd.user,
            "identity": str(state.ssh_client_dir(host) / "id_ed25519"),
            "known_hosts": str(state.ssh_client_dir(host) / "known_hosts"),
            "connect_timeout": 5.0,
        },
    }


def _store_config(state, server):
    doc = state.store_config(server["hostname"])
    if state.store == "etcd" and server["headnode"]:
        from sdcadm.lab.etcd import member_config

        doc["member"] = member_config(state, server["hostname"])
    return doc


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


def _sshds(state):
    """The lab's sshd: one on every address of a loopback lab; in a netns lab
    one per server, inside its namespace (the same keys for all)."""
    from sdcadm.lab.sshd import LabSshd

    ips = [s["admin_ip"] for s in state.servers]
    roots = {s["admin_ip"]: state.server_root(s["hostname"]) for s in state.servers}
    clients = [state.ssh_client_dir(s["hostname"]) for s in state.servers]
    if state.isolation != "netns":
        return [LabSshd(state.ssh_dir, ips, state.ports["ssh"], roots=roots, clients=clients)]
    return [LabSshd(state.ssh_dir, [s["admin_ip"]], state.ports["ssh"],
                    roots={s["admin_ip"]: roots[s["admin_ip"]]}, clients=clients,
                    name=s["hostname"], netns=state.namespace(s["hostname"]),
                    known_addresses=ips)
            for s in state.servers]


def start_sshd(state, hostnames=None, observer=None):
    """Start the lab's sshd (netns: of ``hostnames``, default every server) unless it runs."""
    for sshd in _sshds(state):
        if sshd.name is None or hostnames is None or sshd.name in hostnames:
            if not sshd.running():
                notify(observer, Progress("sshd", f"starting sshd{' of ' + sshd.name if sshd.name else ''} "
                                                  f"on port {state.ports['ssh']}"))
                sshd.start()


def stop_sshd(state):
    for sshd in _sshds(state):
        try:
            sshd.stop()
        except LabError as e:
            log.warning("stopping the lab sshd: %s", e)


def choose_store(store, n_servers, observer=None):
    """The lab's store backend: ``store`` as asked, else etcd when installed.

    sqlite is refused for more than one server: its one file would be either
    shared between servers or on one of them (whose loss takes the store)."""
    from sdcadm.lab.etcd import etcd_program

    if store is None:
        if etcd_program() is not None:
            return "etcd"
        if n_servers > 1:
            raise LabError("etcd is not installed, and a lab of more than one server needs it "
                           "for its store (one member per headnode)",
                           hint="apt-get install etcd-server (`make` does it as root), or "
                                "build a one-server lab: --headnodes 1 --computenodes 0")
        notify(observer, Progress("store", "etcd is not installed: the one-server lab keeps "
                                           "its store in sqlite (apt-get install etcd-server "
                                           "for etcd)"))
        return "sqlite"
    if store not in ("etcd", "sqlite"):
        raise LabError(f"unknown store backend {store!r}", hint="--store etcd or sqlite")
    if store == "sqlite" and n_servers > 1:
        raise LabError(f"a DC of {n_servers} servers cannot keep its store in sqlite: every "
                       f"server would reach one file on one server",
                       hint="use --store etcd (one member per headnode), or build a one-server "
                            "lab: --headnodes 1 --computenodes 0")
    if store == "etcd" and etcd_program() is None:
        raise LabError("--store etcd: etcd is not installed",
                       hint="apt-get install etcd-server (`make` does it as root)")
    return store


def _copy_images(state, hostname, images):
    """Put ``images`` (built in the lab's image build directory) into the
    server's own image directory: what it runs never comes from a shared path."""
    dest = state.server_images(hostname)
    dest.mkdir(parents=True, exist_ok=True)
    for image in images:
        for suffix in (".file", ".json"):
            name = f"{image.uuid}{suffix}"
            if not (dest / name).exists():
                shutil.copyfile(state.images_dir / name, dest / f".{name}.tmp")
                os.replace(dest / f".{name}.tmp", dest / name)


def _write_usbkey(state, hostname, images):
    """A headnode's usbkey directory (<root>/usbkey, config usbkey_dir's
    default under its root): what `headnode-setup` bundles and sends to a new
    headnode (sdcadm/usbkey/bundle.py PARTS says why each part is there)."""
    from importlib import resources

    key = state.server_root(hostname) / "usbkey"
    for image in images:
        for suffix in (".file", ".json"):
            dest = key / "images" / f"{image.uuid}{suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(state.images_dir / dest.name, dest)
    (key / "catalog").mkdir(parents=True, exist_ok=True)
    (key / "catalog" / "core-services.yaml").write_bytes(
        resources.files("sdcadm.catalog").joinpath("core-services.yaml").read_bytes())
    _write_private(key / "secrets" / "agent-token", state.token_path(hostname).read_text())
    _write_private(key / "secrets" / "restore-data.key",
                   state.restore_key_path(hostname).read_text())
    # DC-wide settings only: never a server's UUID or hostname
    (key / "config").mkdir(parents=True, exist_ok=True)
    (key / "config" / "dc.yaml").write_text(yaml.safe_dump(
        {"store": state.store_config(), "ssh": {"port": state.ports["ssh"]}}, sort_keys=False))


def add_image(state, service, version="1.0.0"):
    """Build the workload image of ``service`` and import it on the first
    headnode powered on (as an operator imports one); every other server
    fetches it from there over the network when it needs it
    (agent/image_fetch.py). Return the Image (the caller puts it into the store)."""
    image = build_workload_image(state.images_dir, service, version)
    on = [s for s in state.headnodes if not state.powered_off(s["hostname"])]
    if not on:
        raise LabError("no headnode is powered on to import the image on",
                       hint="start one: sdcadm lab start --dir DIR hn0")
    _copy_images(state, on[0]["hostname"], [image])
    return image


def create(directory, net, headnodes, computenodes, services=None, ports=None,
           heartbeat_interval=1.0, observer=None, backend="dir", pool_size=None, store=None,
           unregistered=0, isolation="loopback"):
    """Write a new lab (images, configs, lab.json), start its etcd members and
    agents, and build its DC through the operator's commands (lab/build.py).
    The last ``unregistered`` compute nodes are not set up: their agents
    register them, and they wait for an operator's `server setup`."""
    directory = Path(directory)
    if (directory / "lab.json").exists():
        raise LabError(f"a lab already exists at {directory}")
    if not 0 <= unregistered <= computenodes:
        raise LabError(f"--unregistered {unregistered}: the lab has {computenodes} compute "
                       "node(s)", hint="leave out of the store at most every compute node")
    catalog = load_catalog()
    if isolation not in netns.ISOLATIONS:
        raise LabError(f"unknown isolation {isolation!r}", hint="--isolation loopback or netns")
    if isolation == "netns":
        netns.require_root()
    plan = plan_lab(net, headnodes, computenodes, catalog, services, isolation)
    store = choose_store(store, len(plan.servers), observer)
    ports = {**DEFAULT_PORTS, **(ports or {})}
    for server in plan.servers if isolation == "loopback" else ():  # new namespaces are empty
        _check_free(server.admin_ip, ports["agent"])
        if store == "etcd" and server.headnode:
            _check_free(server.admin_ip, ports["etcd_client"])
            _check_free(server.admin_ip, ports["etcd_peer"])
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
                     backend=backend, store=store, isolation=isolation)
    if isolation == "netns":
        state.netns = {"id": netns.lab_id(state.dir, state.created)}
    if backend == "zfs":
        state.zfs = {"pools": labzfs.plan_pools(directory, [s["hostname"] for s in servers]),
                     "pool_size": pool_size or labzfs.DEFAULT_POOL_SIZE, "daemon_pid": None}
        notify(observer, Progress("zfs", f"creating {len(servers)} file-backed pools"))
        labzfs.create_pools(state)

    wanted = sorted({i.service for i in plan.instances})
    images = {}
    for n, name in enumerate(wanted, 1):
        notify(observer, Progress("images", f"building image for {name}", n, len(wanted)))
        images[name] = build_workload_image(state.images_dir, name)

    # Each server's root holds everything it uses: its copies of the DC's
    # secrets (the agent token; the restore-data key, as `head -c 32
    # /dev/urandom | base64` makes it), its SSH key, its config; the first
    # headnode's usbkey also the images, as an installer ships them (the
    # other headnodes' usbkeys come from it, by headnode-setup).
    token = secrets.token_hex(32) + "\n"
    restore_key = base64.b64encode(secrets.token_bytes(32)).decode() + "\n"
    for s in servers:
        host = s["hostname"]
        root = state.server_root(host)
        for sub in ("etc", "var/log/sdcadm", "var/run", "var/sdcadm", "zones"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        _write_private(state.token_path(host), token)
        _write_private(state.restore_key_path(host), restore_key)
    _write_usbkey(state, servers[0]["hostname"], images.values())
    for sshd in _sshds(state):
        sshd.setup()
    for s in servers:
        _write_private(state.config_path(s["hostname"]),
                       yaml.safe_dump(server_config(state, s), sort_keys=False))

    # From the first process on, lab.json says the lab is being built: a
    # failure leaves it so (its logs kept), and `lab destroy` removes it.
    state.building = True
    save_state(state)
    try:
        ensure_network(state, observer)
        if store == "etcd":
            _start_members(state, [s["hostname"] for s in state.headnodes], observer)
        build.init_dc(state, observer)
        start_all(state, observer)
        cns = [s["hostname"] for s in servers if not s["headnode"]]
        build.populate(state, plan, state.heartbeat_interval * HEARTBEAT_TIMEOUT_FACTOR,
                       observer, left_out=set(cns[len(cns) - unregistered:]))
    except BaseException:
        down(directory)
        raise
    state.building = False
    save_state(state)
    return state


def _start_members(state, hostnames, observer=None, timeout=60.0):
    from sdcadm.lab import etcd

    hostnames = [h for h in hostnames if etcd.runs_member(state, h)]
    if state.store != "etcd" or not hostnames:
        return
    for h in hostnames:
        if etcd.member_pid(state, h) is None:
            notify(observer, Progress("etcd", f"starting the etcd member of {h}"))
            etcd.start_member(state, h)
    etcd.wait_healthy(state, hostnames, timeout)


def _stop_members(state, sig=None):
    import signal

    from sdcadm.lab import etcd

    if state.store != "etcd":
        return []
    stopped = []
    for s in state.servers:   # a compute node made a headnode runs one too
        if etcd.stop_member(state, s["hostname"], sig or signal.SIGTERM):
            stopped.append(s["hostname"])
    return stopped


def up(directory, net, headnodes, computenodes, services=None, ports=None,
       heartbeat_interval=1.0, timeout=120.0, observer=None, backend="dir", pool_size=None,
       store=None, unregistered=0, isolation=None):
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
        if store is not None and store != state.store:
            raise LabError(f"the lab at {directory} keeps its store in {state.store}, not {store}",
                           hint="use it as it is, or rebuild it: `sdcadm lab destroy` then "
                                "`sdcadm lab up`")
        if isolation is not None and isolation != state.isolation:
            raise LabError(f"the lab at {directory} was built with --isolation "
                           f"{state.isolation}, not {isolation}",
                           hint="use it as it is, or rebuild it: `sdcadm lab destroy` then "
                                "`sdcadm lab up`")
        if state.building:
            raise LabError(f"the lab at {directory} was not completely built (its build "
                           "failed or was interrupted)",
                           hint="see its servers' logs under <server>/var/log/, then rebuild "
                                "it: `sdcadm lab destroy` then `sdcadm lab up`")
        notify(observer, Progress("lab", f"reusing the lab at {directory}"))
    else:
        if isolation is None:
            isolation, why = netns.default_isolation(os.geteuid(), os.environ, shutil.which)
            notify(observer, Progress("lab", f"isolation {isolation} ({why}; choose with "
                                             "--isolation)"))
        state = create(directory, net, headnodes, computenodes, services, ports,
                       heartbeat_interval, observer, backend, pool_size, store, unregistered,
                       isolation)
    start_all(state, observer)
    wait_ready(state, timeout, observer)
    return state


def start_store(state, observer=None):
    """Bring the lab's store within reach (etcd: the headnodes' members, their
    roots back in place), without starting any agent."""
    ensure_network(state, observer)
    if state.store != "etcd":
        _power_on(state, state.servers[0]["hostname"])
        return
    from sdcadm.lab.etcd import member_hosts

    for h in member_hosts(state):
        _power_on(state, h)
    _start_members(state, member_hosts(state), observer)


def start_all(state, observer=None):
    if state.backend == "zfs":
        from sdcadm.lab import zfs as labzfs

        labzfs.ensure_pools(state)
        save_state(state)
    for s in state.servers:
        _power_on(state, s["hostname"])
    ensure_network(state, observer)
    start_sshd(state, observer=observer)
    from sdcadm.lab.etcd import member_hosts

    _start_members(state, member_hosts(state), observer)
    for s in state.servers:
        start(state, s["hostname"], observer)


# -- running -------------------------------------------------------------------
def agent_pid(state, hostname):
    return procs.agent_pid(state.config_path(hostname), state.agent_pidfile(hostname))


def _power_on(state, hostname):
    """Put a killed server's root back where it belongs."""
    if state.powered_off(hostname):
        os.rename(state.powered_off_root(hostname), state.server_root(hostname))


def start(state, hostname, observer=None):
    """Start a server (its root back in place, its etcd member, its agent)
    unless its agent runs; return the agent's pid."""
    state.server(hostname)
    _power_on(state, hostname)
    pid = agent_pid(state, hostname)
    if pid:
        return pid
    if state.isolation == "netns":  # its sshd went with its power (lab kill)
        ensure_network(state, observer)
        start_sshd(state, [state.server(hostname)["hostname"]], observer)
    _start_members(state, [hostname], observer)
    notify(observer, Progress("agents", f"starting the agent of {hostname}"))
    proc = procs.start_agent(state.config_path(hostname), state.agent_log(hostname),
                             state.agent_pidfile(hostname), netns=state.namespace(hostname))
    return proc.pid


def kill(state, hostname):
    """Abruptly kill a server, as pulling its power cord: SIGKILL its agent,
    every instance and its etcd member; then move its root out of reach (its
    disk is gone until ``lab start``): anything still reading it fails."""
    host = state.server(hostname)["hostname"]
    # The lab's fence agent: its agent's group, then everything else under its
    # root (its etcd member, instances that left the group) until none is left.
    killed = power_off(state, host)
    if state.server_root(host).exists():
        state.powered_off_root(host).parent.mkdir(exist_ok=True)
        os.rename(state.server_root(host), state.powered_off_root(host))
    return killed


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
    procs.terminate(stopped, grace=5.0)
    if (directory / "lab.json").exists():
        members = _stop_members(state)  # after the agents: they leave through the store
        if members:
            notify(observer, Progress("down", f"stopped the etcd members of {', '.join(members)}"))
        stop_sshd(state)
        if state.backend == "zfs":
            from sdcadm.lab import zfs as labzfs

            labzfs.stop_daemon(state)
            save_state(state)
    leftovers = procs.lab_processes(directory)
    procs.terminate(leftovers, grace=5.0)
    if (directory / "lab.json").exists() and state.isolation == "netns":
        removed = remove_network(state)
        if removed:
            notify(observer, Progress("down", f"removed the lab network ({removed} namespaces "
                                              f"and links)"))
    return len(stopped) + len(leftovers)


# -- the network (netns labs) -------------------------------------------------------
def ensure_network(state, observer=None):
    """Build a netns lab's namespaces, bridge and links unless they exist
    (a loopback lab has nothing to build)."""
    topo = netns.topology_of(state)
    if topo is None or netns.exists(topo):
        return
    notify(observer, Progress("network", f"creating {len(topo.namespaces())} network "
                                         f"namespaces on {topo.net}"))
    netns.create(topo)
    if state.faults:  # a fault outlives nothing that made it: down undid it
        state.faults = {}
        if (state.path / "lab.json").exists():
            save_state(state)


def remove_network(state):
    """Remove every namespace, link and bridge of a netns lab; the faults
    made on them go with them. Returns how many were removed."""
    topo = netns.topology_of(state)
    if topo is None:
        return 0
    removed = netns.destroy(topo)
    if state.faults:
        state.faults = {}
        if (state.path / "lab.json").exists():
            save_state(state)
    return removed


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
            "powered_off": state.powered_off(s["hostname"]),
            "etcd_pid": _member_pid(state, s),
            "status": status_of(server, now, timeout) if server else "missing",
            "instances": len(mine),
            "running": sum(i.state == "running" for i in mine),
            "namespace": state.namespace(s["hostname"]),
            "faults": state.faults.get(s["hostname"], {}),
        })
    return rows


def _member_pid(state, server):
    from sdcadm.lab import etcd

    if state.store != "etcd" or not etcd.runs_member(state, server["hostname"]):
        return None
    return etcd.member_pid(state, server["hostname"])


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

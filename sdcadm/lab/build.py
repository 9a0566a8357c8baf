"""`lab up` builds its DC as an operator builds one: with sdcadm's own commands.

The lab does what an installer and a technician do for a real DC: it writes
each server's configuration and secrets, ships the images on the first
headnode's usbkey, installs the headnodes' etcd members and starts every
server's agent. Everything that enters the DC store then enters it through
the commands of docs/operator-guide.md ("Building a DC", "Setting up
secondary headnodes"), typed on the first headnode as an operator logged in
there types them (in its namespace, its root, its configuration), reaching
the store and the other servers over the network:

1. ``sdcadm dc init --admin-net NET`` (a netns lab also ``--reserve``s the
   host's own leg on the lab network, which no instance may take);
2. (the agents start: each registers its server, not set up)
3. ``sdcadm server setup SERVER... -y``, every server but those left to the
   operator (``lab up --unregistered N``);
4. ``sdcadm image import usbkey/images/*.json``;
5. ``sdcadm create SERVICE... --server SERVER -y``, one per server, in the
   lab's plan (HA peers on the first three headnodes, the rest on hn0);
6. ``sdcadm server headnode-setup hn1 hn2... -y``: the headnode bundle sent
   and seeded, each member found already in the cluster the lab installed,
   flag H, recovery reservations, a first restore-data sync, verified.

A command that fails stops the build with its output (LabError).
"""

import os
import subprocess
import time

from sdcadm import sdcadm_program
from sdcadm.errors import LabError
from sdcadm.lab import netns, procs
from sdcadm.progress import Progress, notify

COMMAND_TIMEOUT = 600.0
REGISTER_TIMEOUT = 60.0

def exec_argv(state, hostname, command):
    """``(argv, env, cwd)`` running ``command`` as if logged in on
    ``hostname``: in its namespace, its root, its config."""
    host = state.server(hostname)["hostname"]
    if state.powered_off(host):
        raise LabError(f"{host} is powered off (`lab kill`): nothing can run on it",
                       hint=f"power it on first: `sdcadm lab start {host}`")
    ns = state.namespace(host)
    if ns is not None and ns not in netns.namespaces():
        raise LabError(f"{host}'s network namespace {ns} does not exist (the lab is down)",
                       hint="bring the lab up first: `sdcadm lab up`")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    env["SDCADM_CONFIG"] = str(state.config_path(host))
    return procs.in_netns(list(command), ns), env, str(state.server_root(host))


def run_sdcadm(state, hostname, args, timeout=COMMAND_TIMEOUT):
    """``sdcadm ARGS`` on ``hostname``, as its operator runs it: the
    CompletedProcess (output captured, no terminal)."""
    argv, env, cwd = exec_argv(state, hostname, [sdcadm_program(), *args])
    return subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def sdcadm_on(state, hostname, *args, observer=None, timeout=COMMAND_TIMEOUT, shown=None):
    """Run ``sdcadm ARGS`` on ``hostname`` (``shown``: the arguments as the
    progress line says them); its output. LabError with what it said when
    it fails."""
    shown = shown or " ".join(args)
    notify(observer, Progress("build", f"{hostname}$ sdcadm {shown}"))
    try:
        done = run_sdcadm(state, hostname, args, timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"building the lab: `sdcadm {shown}` on {hostname} did not finish in "
                       f"{timeout:.0f}s", hint=f"see the logs under {state.dir}/{hostname}/var/log/") \
            from None
    if done.returncode != 0:
        said = "\n".join((done.stderr or done.stdout).strip().splitlines()[-30:])
        raise LabError(f"building the lab: `sdcadm {shown}` on {hostname} exited "
                       f"{done.returncode}:\n{said}",
                       hint=f"see the logs under {state.dir}/{hostname}/var/log/; then "
                            "`sdcadm lab destroy` and `sdcadm lab up` again")
    return done.stdout


def init_dc(state, observer=None):
    """Step 1, before any agent runs: the DC, its admin network, hn0."""
    first = state.servers[0]["hostname"]
    args = ["dc", "init", "--admin-net", state.net]
    topo = netns.topology_of(state)
    if topo is not None:   # the host's leg on the lab network: never an instance's
        args += ["--reserve", topo.host_ip]
    sdcadm_on(state, first, *args, observer=observer)


def wait_registered(state, heartbeat_timeout, timeout=REGISTER_TIMEOUT, observer=None):
    """Step 2: until every server's agent has registered it and heartbeats
    (read from the store: what `server setup` checks)."""
    from sdcadm.model import SERVER_RUNNING, status_of

    want = {s["uuid"]: s["hostname"] for s in state.servers}
    deadline = time.monotonic() + timeout
    with state.dc_store().open() as store:
        while True:
            now = store.now()
            missing = set(want) - {s.uuid for s in store.list_servers()
                                   if status_of(s, now, heartbeat_timeout) == SERVER_RUNNING}
            if not missing:
                notify(observer, Progress("build", f"{len(want)} server(s) registered, "
                                                   "heartbeating"))
                return
            if time.monotonic() > deadline:
                names = ", ".join(sorted(want[u] for u in missing))
                raise LabError(f"building the lab: {names} did not register and heartbeat in "
                               f"{timeout:.0f}s",
                               hint=f"see their agents' logs under {state.dir}/<server>/var/log/")
            time.sleep(0.1)


def populate(state, plan, heartbeat_timeout, observer=None, left_out=frozenset()):
    """Steps 3 to 6, every agent running. Servers in ``left_out`` stay
    registered and not set up."""
    first = state.servers[0]["hostname"]
    wait_registered(state, heartbeat_timeout, observer=observer)
    to_set_up = [s["hostname"] for s in state.servers[1:] if s["hostname"] not in left_out]
    if to_set_up:
        sdcadm_on(state, first, "server", "setup", *to_set_up, "-y", observer=observer)
    images = sorted(p.name for p in (state.server_root(first) / "usbkey" / "images").glob("*.json"))
    if images:
        sdcadm_on(state, first, "image", "import", *(f"usbkey/images/{n}" for n in images),
                  observer=observer,
                  shown=f"image import usbkey/images/*.json   # {len(images)} image(s)")
    on = {}
    for planned in plan.instances:
        on.setdefault(planned.hostname, []).append(planned.service)
    for hostname, services in on.items():
        sdcadm_on(state, first, "create", *services, "--server", hostname, "-y",
                  observer=observer)
    others = [s["hostname"] for s in state.headnodes[1:]]
    if others:
        sdcadm_on(state, first, "server", "headnode-setup", *others, "-y", observer=observer)

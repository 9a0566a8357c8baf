"""Network namespaces of a lab built with ``--isolation netns`` (root only).

Every server lives in a network namespace of its own, ``sdc-<id>-<host>``
(``<id>``: six hex digits unique to the lab, so two labs never collide),
with one interface ``eth0`` carrying its admin address. The ``eth0`` of every
server is one end of a veth pair whose other end (named after the server) is
a port of the bridge ``br0``, which lives in a namespace the lab owns,
``sdc-<id>-net``: the lab's network never touches the host's own bridges or
firewall, and removing that namespace removes the whole network.

The host keeps one leg on the bridge, the veth ``sdc<id>`` with the last
address of the lab network, so the operator's CLI on the host (``lab env``,
``sdcadm ...``, the lab's own probes) reaches every server and instance as an
operator's workstation on the admin network would. ``lab exec`` runs a
command inside a server's namespace instead, as if logged in there.

Instances keep their own addresses: a workload that cannot bind its address
adds it to ``lo`` in its server's namespace (the kernel answers ARP for it
on ``eth0``) and announces it (gratuitous ARP); see the workload.

Planning (names, addresses, exact command lines) is pure; ``create`` and
``destroy`` run the plan through ``run`` (an argv runner).
"""

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from sdcadm.errors import LabError, UsageError

BRIDGE = "br0"
HOST_PORT = "host"   # the host leg's port on the bridge
SERVER_IF = "eth0"   # a server's interface, in its namespace
NETNS_DIR = "/run/netns"
ISOLATIONS = ("loopback", "netns")
ENV_ISOLATION = "SDCADM_LAB_ISOLATION"
NETNS_TOOLS = ("ip", "nsenter", "nft")


def default_isolation(euid, environ, which):
    """How a new lab keeps its servers apart when ``--isolation`` is not
    given: ``$SDCADM_LAB_ISOLATION`` when set; else netns as root with the
    tools it needs (a lab whose network can be cut, as a DC's can); else
    loopback. Pure: the caller hands in the facts.

    Returns (isolation, why): ``why`` says, for people, why it was chosen."""
    chosen = environ.get(ENV_ISOLATION)
    if chosen:
        if chosen not in ISOLATIONS:
            raise UsageError(f"${ENV_ISOLATION}={chosen!r} is not an isolation",
                             hint=f"set it to {' or '.join(ISOLATIONS)}, or unset it")
        return chosen, f"${ENV_ISOLATION}"
    if euid != 0:
        return "loopback", "not root: network namespaces need root"
    missing = [t for t in NETNS_TOOLS if which(t) is None]
    if missing:
        return "loopback", (f"root, but {', '.join(missing)} not installed "
                            "(`make deps` installs them)")
    return "netns", "root"


def lab_id(directory, created):
    """Six hex digits naming the lab's namespaces and links."""
    return hashlib.sha256(f"{directory}:{created}".encode()).hexdigest()[:6]


def server_ns(lid, hostname):
    return f"sdc-{lid}-{hostname}"


def net_ns(lid):
    return f"sdc-{lid}-net"


def host_link(lid):
    return f"sdc{lid}"


def ns_prefix(lid):
    return f"sdc-{lid}-"


def lab_network(net):
    """The private network of a netns lab for ``--net``: a loopback
    127.A.B.0/N becomes 10.A.B.0/N (so a random --net gives a random private
    network); a private (RFC 1918) network is used as it is."""
    network = ipaddress.ip_network(net, strict=True)
    if network.subnet_of(ipaddress.ip_network("127.0.0.0/8")):
        mapped = int(network.network_address) - int(ipaddress.ip_address("127.0.0.0")) \
            + int(ipaddress.ip_address("10.0.0.0"))
        return ipaddress.ip_network(f"{ipaddress.ip_address(mapped)}/{network.prefixlen}")
    if not network.is_private or network.version != 4:
        raise LabError(f"--net {net} is neither loopback nor a private IPv4 network",
                       hint="a netns lab's network never leaves the machine: use 10.x.y.0/24, "
                            "172.16-31.x.0/24, 192.168.x.0/24, or a 127.x.y.0/24 (mapped to "
                            "10.x.y.0/24)")
    return network


def host_address(network):
    """The host leg's address: the last address of the lab network."""
    return str(network.broadcast_address - 1)


@dataclass(frozen=True)
class Topology:
    lid: str
    net: str                 # the lab network, e.g. 10.123.45.0/24
    servers: tuple           # ((hostname, admin_ip), ...)

    @property
    def prefixlen(self):
        return ipaddress.ip_network(self.net).prefixlen

    @property
    def host_ip(self):
        return host_address(ipaddress.ip_network(self.net))

    def namespaces(self):
        return [net_ns(self.lid)] + [server_ns(self.lid, h) for h, _ in self.servers]


def topology_of(state):
    """The Topology of a netns lab (None for a loopback lab)."""
    if getattr(state, "isolation", "loopback") != "netns":
        return None
    return Topology(state.netns["id"], state.net,
                    tuple((s["hostname"], s["admin_ip"]) for s in state.servers))


def create_commands(topo):
    """The command lines that build ``topo``, in order."""
    net = net_ns(topo.lid)
    cmds = [["ip", "netns", "add", net],
            ["ip", "-n", net, "link", "set", "lo", "up"],
            ["ip", "-n", net, "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "-n", net, "link", "set", BRIDGE, "up"],
            ["ip", "link", "add", host_link(topo.lid), "type", "veth", "peer", "name", HOST_PORT,
             "netns", net],
            ["ip", "-n", net, "link", "set", HOST_PORT, "master", BRIDGE, "up"],
            ["ip", "addr", "add", f"{topo.host_ip}/{topo.prefixlen}", "dev", host_link(topo.lid)],
            ["ip", "link", "set", host_link(topo.lid), "up"],
            ["sysctl", "-qw", *neighbour_settings(host_link(topo.lid))]]
    for hostname, ip in topo.servers:
        ns = server_ns(topo.lid, hostname)
        cmds += [["ip", "netns", "add", ns],
                 ["ip", "-n", ns, "link", "set", "lo", "up"],
                 ["ip", "-n", net, "link", "add", hostname, "type", "veth", "peer", "name",
                  SERVER_IF, "netns", ns],
                 ["ip", "-n", net, "link", "set", hostname, "master", BRIDGE, "up"],
                 ["ip", "-n", ns, "addr", "add", f"{ip}/{topo.prefixlen}", "dev", SERVER_IF],
                 ["ip", "-n", ns, "link", "set", SERVER_IF, "up"],
                 ["ip", "netns", "exec", ns, "sysctl", "-qw", *neighbour_settings(SERVER_IF)]]
    return cmds


# An address nobody holds (an instance not started yet, or stopped) must fail
# fast, as a refused connection does on loopback: with the kernel's defaults
# (3 ARP requests 1 s apart) every connection to it hangs 3 s, and an agent
# probing its instances misses its lease renewals. 3 requests 100 ms apart:
# a bridge between namespaces answers in well under that.
NEIGHBOUR = {"retrans_time_ms": 100, "mcast_solicit": 3, "ucast_solicit": 3,
             "delay_first_probe_time": 1}


def neighbour_settings(dev):
    return [f"net.ipv4.neigh.{dev}.{k}={v}" for k, v in NEIGHBOUR.items()]


def destroy_commands(topo, existing_namespaces, host_links):
    """The command lines that remove whatever of ``topo`` exists: deleting a
    namespace deletes its links and their veth peers."""
    cmds = [["ip", "netns", "del", ns] for ns in topo.namespaces()[1:] + topo.namespaces()[:1]
            if ns in existing_namespaces]
    if host_link(topo.lid) in host_links:
        cmds.append(["ip", "link", "del", host_link(topo.lid)])
    return cmds


# -- side effects ----------------------------------------------------------------------

def require_root(what="--isolation netns"):
    if os.geteuid() != 0:
        raise LabError(f"{what} needs root (network namespaces, veth links, a bridge)",
                       hint="run as root, or use --isolation loopback (every server on its "
                            "own loopback address)")
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            raise LabError(f"{what} needs `{tool}`, which is not installed",
                           hint="apt-get install iproute2 util-linux")


def run(argv, *, check=True, input_text=None):
    """Run one command line; LabError with its stderr when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, input=input_text,
                          stdin=None if input_text is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def namespaces():
    """Names of the network namespaces of this machine (``ip netns list``)."""
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def links():
    """Names of the host's network links."""
    return set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else set()


def check_unused(network):
    """Refuse a lab network that overlaps an address or route of the host
    (another lab's host leg included): the lab's must be private to it."""
    network = ipaddress.ip_network(network)
    out = run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"
    for route in json.loads(out):
        dst = route.get("dst", "")
        if dst in ("", "default"):
            continue
        try:
            other = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if other.version == 4 and other.overlaps(network):
            raise LabError(f"the lab network {network} overlaps {dst} (a route on "
                           f"{route.get('dev', '?')} of this machine)",
                           hint="pick another network with --net (a 127.x.y.0/24 is "
                                "mapped to 10.x.y.0/24)")


def create(topo):
    """Build ``topo``; on failure remove what was built and raise."""
    require_root()
    taken = [ns for ns in namespaces() if ns.startswith(ns_prefix(topo.lid))]
    if taken or host_link(topo.lid) in links():
        raise LabError(f"namespaces or links of a lab with id {topo.lid} already exist "
                       f"({', '.join(sorted(taken)) or host_link(topo.lid)})",
                       hint="remove that lab first (`sdcadm lab destroy --dir ...`)")
    check_unused(topo.net)
    try:
        for argv in create_commands(topo):
            run(argv)
    except BaseException:
        destroy(topo)
        raise


def destroy(topo):
    """Remove every namespace and link of ``topo`` that exists; return how many."""
    cmds = destroy_commands(topo, namespaces(), links())
    for argv in cmds:
        run(argv, check=False)
    left = [ns for ns in namespaces() if ns.startswith(ns_prefix(topo.lid))]
    if left:
        raise LabError(f"could not remove the namespaces {', '.join(sorted(left))}",
                       hint=f"see `ip netns pids {left[0]}` and stop what runs there")
    return len(cmds)


def exists(topo):
    return net_ns(topo.lid) in namespaces()


def enter_argv(ns):
    """The prefix that runs a command line inside namespace ``ns`` (the
    network namespace only: files and mounts stay the host's, as a lab
    server's are)."""
    return ["nsenter", f"--net={NETNS_DIR}/{ns}"]


def flush_instance_addresses(ns):
    """Remove every address a workload added to ``lo`` in ``ns`` (all but
    127.0.0.0/8): a powered-off server answers for none of its instances."""
    out = run(["ip", "-n", ns, "-j", "-4", "addr", "show", "dev", "lo"], check=False).stdout
    removed = []
    for link in json.loads(out or "[]"):
        for addr in link.get("addr_info", []):
            ip = addr.get("local", "")
            if ip and not ip.startswith("127."):
                run(["ip", "-n", ns, "addr", "del", f"{ip}/{addr.get('prefixlen', 32)}",
                     "dev", "lo"], check=False)
                removed.append(ip)
    return removed


def pids_in(ns):
    """Pids of the processes living in namespace ``ns`` (as `ip netns pids`)."""
    try:
        target = os.stat(f"{NETNS_DIR}/{ns}")
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
                found.append(int(entry))
    return sorted(found)

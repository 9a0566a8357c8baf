"""``<lab dir>/lab.json``: what the lab is made of, written by ``lab up``.

Every other lab command reads it; a damaged file is a clear error, never a
guess. Also the lab directory resolution: ``--dir``, else ``$SDCADM_LAB``,
else ``./.sdcadm-lab``.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from sdcadm.errors import LabError, NotFound
from sdcadm.schemas import validate

STATE_FILE = "lab.json"
DEFAULT_DIR = ".sdcadm-lab"
ENV_DIR = "SDCADM_LAB"
DEFAULT_NET = "127.99.99.0/24"
DEFAULT_PORTS = {"agent": 5309, "ssh": 2222, "instance": 4380, "etcd_client": 2379,
                 "etcd_peer": 2380}
POWERED_OFF = ".powered-off"  # <lab>/.powered-off/<host>: the root of a killed server


def lab_dir(option=None, environ=None):
    environ = os.environ if environ is None else environ
    return Path(option or environ.get(ENV_DIR) or DEFAULT_DIR).resolve()


@dataclass
class LabState:
    dir: str
    net: str
    servers: list  # dicts: hostname, uuid, admin_ip, headnode
    ports: dict = field(default_factory=lambda: dict(DEFAULT_PORTS))
    store: str = "sqlite"
    backend: str = "dir"
    heartbeat_interval: float = 1.0
    created: float = 0.0
    version: int = 1
    zfs: dict | None = None    # backend zfs: {"pools": {hostname: pool}, "pool_size", "daemon_pid"}
    isolation: str = "loopback"  # or "netns": each server in its own network namespace
    netns: dict | None = None  # isolation netns: {"id": six hex digits naming its namespaces}
    # Faults made by `lab partition` / `lab degrade`, undone by `heal` and `down`:
    # {hostname: {"partition": {"from": [hostname, ...] | null}, "degrade": {...}}}
    faults: dict = field(default_factory=dict)
    # True while `lab up` builds the DC through the operator's commands (and
    # for good when that failed: such a lab can only be destroyed).
    building: bool = False

    # -- paths ---------------------------------------------------------------
    # Everything a server uses lies under its root: nothing of the lab is
    # shared between servers but the network (docs/lab.md "Share nothing").
    @property
    def path(self):
        return Path(self.dir)

    def port(self, name):
        """A port of the lab's plan (labs made before a port was planned get its default)."""
        return self.ports.get(name, DEFAULT_PORTS[name])

    def server_root(self, hostname):
        return self.path / hostname

    def powered_off_root(self, hostname):
        """Where ``lab kill`` moves a server's root until ``lab start``: out of
        reach of anything that names the server's paths."""
        return self.path / POWERED_OFF / hostname

    def powered_off(self, hostname):
        return self.powered_off_root(hostname).exists() and not self.server_root(hostname).exists()

    def config_path(self, hostname):
        return self.server_root(hostname) / "etc" / "sdcadm.yaml"

    def agent_pidfile(self, hostname):
        return self.server_root(hostname) / "var" / "run" / "sdcadm-agent.pid"

    def agent_log(self, hostname):
        return self.server_root(hostname) / "var" / "log" / "sdcadm-agent.log"

    def token_path(self, hostname):
        """The server's copy of the agent token (the same token on every server)."""
        return self.server_root(hostname) / "etc" / "sdcadm" / "agent-token"

    def restore_key_path(self, hostname):
        """The server's copy of the DC key restore-data manifests are signed
        with (as on real headnodes, the same key everywhere)."""
        return self.server_root(hostname) / "etc" / "sdcadm" / "restore-data.key"

    def ssh_client_dir(self, hostname):
        """The server's own SSH client key and known_hosts."""
        return self.server_root(hostname) / "etc" / "ssh"

    def server_images(self, hostname):
        """The server's image directory (its image source and its agent's cache)."""
        return self.server_root(hostname) / "var" / "sdcadm" / "images"

    def etcd_dir(self, hostname):
        """The data directory of a headnode's etcd member."""
        return self.server_root(hostname) / "var" / "etcd"

    def etcd_pidfile(self, hostname):
        return self.server_root(hostname) / "var" / "run" / "etcd.pid"

    def etcd_log(self, hostname):
        return self.server_root(hostname) / "var" / "log" / "etcd.log"

    def namespace(self, hostname):
        """The network namespace ``hostname`` lives in (None: the host's, in a
        loopback lab)."""
        if self.isolation != "netns":
            return None
        from sdcadm.lab.netns import server_ns

        return server_ns(self.netns["id"], self.server(hostname)["hostname"])

    @property
    def headnodes(self):
        return [s for s in self.servers if s["headnode"]]

    @property
    def store_path(self):
        """sqlite (a one-server lab only): the store file, inside that server's root."""
        return self.server_root(self.servers[0]["hostname"]) / "var" / "sdcadm" / "dc.sqlite"

    def etcd_endpoint(self, hostname):
        return f"{self.server(hostname)['admin_ip']}:{self.port('etcd_client')}"

    # -- the DC store --------------------------------------------------------
    def store_config(self, hostname=None):
        """The ``store`` section of a lab server's configuration (of the lab's
        own tools with no ``hostname``): etcd lists every headnode's member,
        the server's own first."""
        if self.store == "sqlite":
            return {"backend": "sqlite", "path": str(self.store_path)}
        ends = [self.etcd_endpoint(s["hostname"]) for s in self.headnodes]
        if hostname is not None and self.server(hostname)["headnode"]:
            mine = self.etcd_endpoint(hostname)
            ends = [mine] + [e for e in ends if e != mine]
        return {"backend": "etcd", "etcd_endpoints": ends, "etcd_prefix": "/sdcadm/"}

    def dc_store(self):
        """The lab's DC store, reached as its servers reach it (etcd: over the
        network); not yet opened: call ``open()`` (or ``initialize()``, which
        ``lab up`` does)."""
        from sdcadm.config import config_from
        from sdcadm.store import store_for

        return store_for(config_from({"store": self.store_config()}, f"the lab at {self.dir}"))

    @property
    def images_dir(self):
        """Where the lab builds its images (the operator's side, as images
        downloaded from an image server): copied into each server's own
        image directory at ``up``, never read by a server."""
        return self.path / "images"

    @property
    def ssh_dir(self):
        """The lab sshd's own files (host key, authorized_keys, config). One
        sshd stands in for every server's sshd: ``Match LocalAddress`` makes a
        login on a server's address run in that server's root."""
        return self.path / "ssh"

    def server(self, hostname):
        for s in self.servers:
            if s["hostname"] == hostname or s["uuid"] == hostname:
                return s
        known = ", ".join(s["hostname"] for s in self.servers)
        raise NotFound(f"the lab has no server {hostname!r}", hint=f"lab servers: {known}")

    def to_dict(self):
        doc = {"version": self.version, "dir": self.dir, "net": self.net, "ports": self.ports,
               "store": self.store, "backend": self.backend,
               "heartbeat_interval": self.heartbeat_interval, "created": self.created,
               "servers": self.servers}
        if self.zfs is not None:
            doc["zfs"] = self.zfs
        if self.isolation != "loopback":
            doc["isolation"] = self.isolation
            doc["netns"] = self.netns
        if self.faults:
            doc["faults"] = self.faults
        if self.building:
            doc["building"] = True
        return doc


def save_state(state):
    doc = state.to_dict()
    validate("lab", doc, state.path / STATE_FILE)
    path = state.path / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(directory, schema=True):
    """The lab at ``directory``; LabError when there is none or its file is
    bad. ``schema=False`` (the fence agent, whose run time a restore's RTO
    counts) skips the JSON Schema check and its ~0.2 s of jsonschema import
    and compile, and checks only what building the state needs."""
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise LabError(f"there is no lab at {directory} ({STATE_FILE} is missing)",
                       hint="run `sdcadm lab up` (or pass --dir / set SDCADM_LAB)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LabError(f"{path} is unreadable: {e}",
                       hint="run `sdcadm lab destroy` and `sdcadm lab up` to rebuild the lab") from None
    if schema:
        validate("lab", doc, path)
    try:
        state = LabState(**doc)
        moved = Path(state.dir) != Path(directory).resolve()
        if not all(isinstance(s.get("hostname"), str) and isinstance(s.get("uuid"), str)
                   for s in state.servers):
            raise ValueError("every server needs a hostname and a uuid")
    except (TypeError, ValueError, AttributeError) as e:  # schema=False: what the schema would say
        raise LabError(f"{path} is not a lab state: {e}",
                       hint="run `sdcadm lab destroy` and `sdcadm lab up` to rebuild the lab") from None
    if moved:
        raise LabError(f"{path} describes a lab at {state.dir}, not {directory}",
                       hint="labs cannot be moved; rebuild it with `sdcadm lab destroy` and `lab up`")
    return state

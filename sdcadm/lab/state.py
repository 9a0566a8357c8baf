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
DEFAULT_PORTS = {"agent": 5309, "ssh": 2222, "instance": 4380}


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

    # -- paths -------------------------------------------------------------
    @property
    def path(self):
        return Path(self.dir)

    def server_root(self, hostname):
        return self.path / hostname

    def config_path(self, hostname):
        return self.server_root(hostname) / "etc" / "sdcadm.yaml"

    def agent_pidfile(self, hostname):
        return self.server_root(hostname) / "var" / "run" / "sdcadm-agent.pid"

    def agent_log(self, hostname):
        return self.server_root(hostname) / "var" / "log" / "sdcadm-agent.log"

    @property
    def store_path(self):
        return self.path / "dc.sqlite"

    # -- the DC store --------------------------------------------------------
    def store_config(self):
        """The ``store`` section of every lab server's configuration."""
        return {"backend": self.store, "path": str(self.store_path)}

    def dc_store(self):
        """The lab's DC store, as its servers' configuration names it; not yet
        opened: call ``open()`` (or ``initialize()``, which ``lab up`` does)."""
        from sdcadm.config import config_from
        from sdcadm.store import store_for

        return store_for(config_from({"store": self.store_config()}, f"the lab at {self.dir}"))

    @property
    def images_dir(self):
        return self.path / "images"

    @property
    def token_file(self):
        return self.path / "token"

    @property
    def restore_key_file(self):
        """The DC key restore-data manifests are signed with: one file for the
        lab DC, named by every server's configuration (as on real headnodes,
        the same key everywhere)."""
        return self.path / "restore-data.key"

    @property
    def ssh_dir(self):
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


def load_state(directory):
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise LabError(f"there is no lab at {directory} ({STATE_FILE} is missing)",
                       hint="run `sdcadm lab up` (or pass --dir / set SDCADM_LAB)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LabError(f"{path} is unreadable: {e}",
                       hint="run `sdcadm lab destroy` and `sdcadm lab up` to rebuild the lab") from None
    validate("lab", doc, path)
    if Path(doc["dir"]) != Path(directory).resolve():
        raise LabError(f"{path} describes a lab at {doc['dir']}, not {directory}",
                       hint="labs cannot be moved; rebuild it with `sdcadm lab destroy` and `lab up`")
    return LabState(**doc)

"""A big DC on a one-member etcd, and a headnode agent serving its listings,
for bench/server_ls.py --backend etcd.

The records are written in the etcd store's own layout (``Keys``, ``encode``)
100 to a transaction: through the store's API one record at a time, 60,000
records take many minutes (each write is a read, a check and a transaction),
which measures the filling, not the listing. Heartbeat keys are bound to one
lease of a day, as a live agent's key is bound to its own.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sdcadm.catalog import load_catalog  # noqa: E402
from sdcadm.config import config_from  # noqa: E402
from sdcadm.model import Service  # noqa: E402
from sdcadm.store import store_for  # noqa: E402
from sdcadm.store.etcd_client import put  # noqa: E402
from sdcadm.store.etcd_keys import encode  # noqa: E402
from tests.etcd_server import ETCD, EtcdServer  # noqa: E402

from benchdata import HEADNODES, IMAGE_KIND, SERVER_KIND, dc_instances, dc_servers, uuid_of  # noqa: E402,E501

PREFIX = "/bench/"


def start_etcd(directory, address, client_port, peer_port):
    if ETCD is None:
        raise SystemExit("etcd is not installed: apt-get install etcd-server (make deps does it)")
    server = EtcdServer(Path(directory), address, client_port, peer_port)
    server.start()
    return server


def store_doc(endpoint):
    return {"backend": "etcd", "etcd_endpoints": [endpoint], "etcd_prefix": PREFIX}


def fill(endpoint, n_servers, n_instances):
    """n_servers (3 headnodes; one server in ten without a heartbeat) and
    n_instances on the compute nodes, every one with non-empty params."""
    config = config_from({"store": store_doc(endpoint)}, "bench")
    store = store_for(config).initialize()
    services = list(load_catalog().names())
    for name in services:
        store.put_service(Service(name=name, image=uuid_of(IMAGE_KIND, 1)))
    lease = store.client.grant(86400)
    ops = []

    def flush():
        if ops:
            store.client.txn([], ops)
            ops.clear()

    for server, beats in dc_servers(n_servers):
        value = server.to_dict()
        value.pop("last_heartbeat")
        value["generation"] = 1
        ops.append(put(store.keys.server(server.uuid), encode(value)))
        if beats:
            ops.append(put(store.keys.heartbeat(server.uuid), encode({"at": time.time()}), lease))
        if len(ops) >= 100:
            flush()
    # the headnodes run none: hn0's agent, which the bench starts, supervises nothing
    for inst in dc_instances(n_instances, services, range(HEADNODES, n_servers)):
        ops += [put(store.keys.instance(inst.uuid), encode(inst.to_dict())),
                put(store.keys.placed(inst.server_uuid, inst.uuid), encode(inst.to_dict())),
                put(store.keys.alias(inst.alias), encode(inst.uuid))]
        if len(ops) >= 99:
            flush()
    flush()
    # meta/revision moves with every model write; a bulk fill is one
    store.client.txn([], [put(store.keys.revision, encode(n_servers + n_instances))])


def headnode_config(directory, endpoint, address, port):
    """hn0's configuration: the etcd store, its agent on ``address:port``, no
    restore data (the bench measures listings)."""
    directory = Path(directory)
    (directory / "root").mkdir(parents=True, exist_ok=True)
    token, key = directory / "token", directory / "restore.key"
    for path, make in ((token, lambda: secrets.token_hex(32)),
                       (key, lambda: secrets.token_urlsafe(32))):
        if not path.exists():
            path.write_text(make() + "\n")
            path.chmod(0o600)
    doc = {"server_uuid": uuid_of(SERVER_KIND, 0), "hostname": "hn0", "root": str(directory / "root"),
           "log_dir": str(directory / "log"), "store": store_doc(endpoint),
           "restore_data": {"enabled": False, "key_file": str(key)},
           "agent": {"listen": address, "port": port, "token_file": str(token),
                     "heartbeat_timeout": 86400}}
    path = directory / "hn0.yaml"
    path.write_text(json.dumps(doc, indent=1))   # JSON is YAML
    return path


class Agent:
    """hn0's sdcadm-agent, running for the bench's length."""

    def __init__(self, config, log):
        program = Path(sys.executable).with_name("sdcadm-agent")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
        self.proc = subprocess.Popen([str(program), "--config", str(config)], env=env,
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def rss_mib(self):
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return None

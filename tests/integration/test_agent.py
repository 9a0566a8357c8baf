"""The agent as a real process: a real sqlite store, real images, real workloads.

Every test runs ``sdcadm-agent`` in its own session on a random loopback
/24 (127.<a>.<b>.0 with a, b in 100..250) and kills that session, plus any
process still carrying one of its instance UUIDs, when it ends.
"""

import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid as uuidlib
from pathlib import Path

import pytest
import requests
import yaml

from sdcadm.agent import agent_command
from sdcadm.fsutil import sha256_file
from sdcadm.lab.images import build_workload_image
from sdcadm.model import Image, Instance, Network, Server
from sdcadm.schemas import validate
from tests.conftest import store_at, store_config, store_outage, wait_for

pytestmark = pytest.mark.integration

TOKEN = "integration-test-token-" + uuidlib.uuid4().hex
INSTANCE_PORT = 8080


def agent_env():
    # The agent must read only its --config: no stray SDCADM_* overrides.
    return {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}


def agent_argv(config):
    script = Path(sys.executable).with_name("sdcadm-agent")
    if script.exists():
        return [str(script), "--config", str(config)]
    return agent_command(config)


# -- processes ---------------------------------------------------------------------------


def proc_state(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def alive(pid):
    state = proc_state(pid)
    return state is not None and state[0] not in ("Z", "X")


def zombie_children(pid):
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = proc_state(entry.name)
            if state and state[1] == str(pid) and state[0] == "Z":
                out.append(int(entry.name))
    return out


def instance_pids(uuid):
    """Live processes started for instance ``uuid`` (by any agent)."""
    needle = f"SDC_INSTANCE_UUID={uuid}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and alive(entry.name):
            pids.append(int(entry.name))
    return pids


# -- the DC under test ---------------------------------------------------------------------


class AgentProc:
    def __init__(self, popen, log_path):
        self.popen, self.log_path = popen, log_path
        self.pid = popen.pid

    def log_records(self):
        records = []
        for line in self.log_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
        return records


class DC:
    def __init__(self, tmp, request):
        self.tmp = tmp
        self.net = f"127.{random.randint(100, 250)}.{random.randint(100, 250)}"
        self.ip = f"{self.net}.1"
        self.server_uuid = str(uuidlib.uuid4())
        self.other_uuid = str(uuidlib.uuid4())
        self.root = tmp / "hn0"
        self.store_path = tmp / "dc.sqlite"
        self.store = store_at(self.store_path, create=True)
        self.port = self._free_port()
        self.store.put_server(Server(uuid=self.server_uuid, hostname="hn0", admin_ip=self.ip,
                                     headnode=True, agent_port=self.port))
        self.store.put_server(Server(uuid=self.other_uuid, hostname="hn1",
                                     admin_ip=f"{self.net}.2", headnode=True))
        self.store.put_network(Network(name="admin", cidr=f"{self.net}.0/24",
                                       allocations={self.ip: self.server_uuid,
                                                    f"{self.net}.2": self.other_uuid}))
        self.images = tmp / "images"
        self.image = build_workload_image(self.images, "sapi")
        self.store.put_image(self.image)
        self.token_file = tmp / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.key_file = tmp / "restore-data.key"
        self.key_file.write_text("dGVzdCBrZXkgb2YgdGhlIGFnZW50IHRlc3RzLCBub3Qgc2VjcmV0\n")
        self.agents, self.instance_uuids = [], []
        request.addfinalizer(self.cleanup)

    def _free_port(self):
        with socket.socket() as s:
            s.bind((self.ip, 0))
            return s.getsockname()[1]

    # -- records
    def add_instance(self, alias, service="sapi", image=None, delegate=True):
        uuid = str(uuidlib.uuid4())
        ip = self.store.allocate_ip("admin", uuid)
        inst = Instance(uuid=uuid, alias=alias, service=service, server_uuid=self.server_uuid,
                        image=(image or self.image).uuid, admin_ip=ip, port=INSTANCE_PORT,
                        delegate_dataset=delegate)
        self.store.create_instance(inst)
        self.instance_uuids.append(uuid)
        return inst

    def config(self, name="sdcadm.yaml", **sections):
        doc = {
            "server_uuid": self.server_uuid,
            "hostname": "hn0",
            "root": str(self.root),
            "image_source": str(self.images),
            "store": {"backend": "sqlite", "path": str(self.store_path), "timeout": 2},
            "agent": {"listen": self.ip, "port": self.port, "token_file": str(self.token_file),
                      "heartbeat_interval": 0.2, "reconcile_interval": 0.2,
                      "heartbeat_timeout": 5, "instance_port": INSTANCE_PORT},
            "restore_data": {"key_file": str(self.key_file)},
        }
        for key, value in sections.items():
            if isinstance(value, dict):
                doc.setdefault(key, {}).update(value)
            elif value is None:
                doc.pop(key, None)
            else:
                doc[key] = value
        path = self.tmp / name
        path.write_text(yaml.safe_dump(doc))
        return path

    # -- the agent
    def start_agent(self, config=None, wait=True):
        config = config or self.config()
        log_path = self.tmp / f"agent{len(self.agents)}.log"
        with open(log_path, "wb") as err:
            popen = subprocess.Popen(agent_argv(config), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=err,
                                     start_new_session=True, env=agent_env())
        agent = AgentProc(popen, log_path)
        self.agents.append(agent)
        if wait:
            wait_for(lambda: self.api("/v1/ping").status_code == 200, 20, "the agent API")
        return agent

    def api(self, path, method="GET", token=TOKEN):
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.request(method, f"http://{self.ip}:{self.port}{path}", headers=headers,
                                timeout=5)

    def reconcile_passes(self, more, what):
        """Wait until the agent has made ``more`` supervisor passes from now:
        whatever it was going to do about the DC as it stands, it has done."""
        passes = lambda: self.api("/v1/status").json()["reconcile_passes"]  # noqa: E731
        start = passes()
        wait_for(lambda: passes() >= start + more, 20, f"{more} reconcile passes ({what})")

    def listing(self):
        return {row["uuid"]: row for row in self.api("/v1/instances").json()}

    def wait_running(self, inst, timeout=20):
        def ready():
            row = self.listing().get(inst.uuid)
            if not row or row["state"] != "running" or self.store.get_instance(inst.uuid).state != "running":
                return None
            ping = requests.get(f"http://{inst.admin_ip}:{INSTANCE_PORT}/ping", timeout=2).json()
            return row if ping["uuid"] == inst.uuid and ping["pid"] == row["pid"] else None

        return wait_for(ready, timeout, f"instance {inst.alias} running and answering /ping")

    def zone(self, uuid):
        return self.root / "zones" / uuid

    def cleanup(self):
        for agent in self.agents:
            try:
                os.killpg(agent.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                agent.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Instances of a stopped agent live on in its old group; and a safety net.
        for uuid in self.instance_uuids:
            for pid in instance_pids(uuid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.store.close()


@pytest.fixture
def dc(tmp_path, request):
    return DC(tmp_path, request)


# -- tests -------------------------------------------------------------------------------


def test_provisions_and_runs_an_instance(dc):
    sapi = dc.add_instance("sapi0", delegate=True)
    plain = dc.add_instance("plain0", service="plain", delegate=False)
    agent = dc.start_agent()
    row = dc.wait_running(sapi)
    dc.wait_running(plain)
    assert row["url"] == f"http://{sapi.admin_ip}:{INSTANCE_PORT}"
    assert row["generation"] == 1 and row["alias"] == "sapi0" and row["service"] == "sapi"

    # Layout, payload and process group.
    zone = dc.zone(sapi.uuid)
    payload = validate("payload", json.loads((zone / "instance.json").read_text()))
    assert payload["instance"]["uuid"] == sapi.uuid
    assert payload["image"]["sha256"] == dc.image.sha256
    assert (zone / "root" / "workload.py").is_file()
    assert (dc.root / "var/sdcadm/images" / f"{dc.image.uuid}.file").is_file()
    assert int((zone / "pid").read_text()) == row["pid"]
    assert os.getpgid(row["pid"]) == agent.pid  # stays in the agent's process group
    assert not (dc.zone(plain.uuid) / "data").exists()

    # The delegate dataset works; the stateless instance refuses /data.
    base = f"http://{sapi.admin_ip}:{INSTANCE_PORT}"
    assert requests.put(f"{base}/data/canary", data=b"tweet", timeout=5).status_code == 201
    assert requests.get(f"{base}/data/canary", timeout=5).content == b"tweet"
    assert (zone / "data" / "canary").read_bytes() == b"tweet"
    assert requests.put(f"http://{plain.admin_ip}:{INSTANCE_PORT}/data/x", data=b"1",
                        timeout=5).status_code == 501

    # Heartbeat, status, metrics, cache.
    wait_for(lambda: time.time() - dc.store.get_server(dc.server_uuid).last_heartbeat < 5,
             10, "a heartbeat")
    assert dc.api("/v1/ping").json() == {"ok": True, "server_uuid": dc.server_uuid,
                                         "hostname": "hn0"}
    status = dc.api("/v1/status").json()
    assert status["store_reachable"] is True and status["instances"] == {"running": 2}
    metrics = requests.get(f"http://{dc.ip}:{dc.port}/metrics", timeout=5).text
    assert "sdcadm_agent_heartbeats_total" in metrics
    assert 'sdcadm_agent_instances{state="running"} 2.0' in metrics
    cache = json.loads((dc.root / "var/sdcadm/agent-cache.json").read_text())
    assert {i["uuid"] for i in cache["instances"]} == {sapi.uuid, plain.uuid}

    # Logs are JSON lines naming the server.
    records = agent.log_records()
    assert records and all(r["server_uuid"] == dc.server_uuid for r in records)
    assert any(r.get("event") == "instance-started" and r.get("instance") == sapi.uuid
               for r in records)


def test_restarts_a_killed_instance_and_reaps_it(dc):
    sapi = dc.add_instance("sapi0")
    agent = dc.start_agent()
    first = dc.wait_running(sapi)
    os.kill(first["pid"], signal.SIGKILL)
    row = wait_for(lambda: (r := dc.listing()[sapi.uuid])["restarts"] >= 1
                   and r["state"] == "running" and r["pid"] != first["pid"] and r,
                   20, "a restart after kill -9")
    dc.wait_running(sapi)
    assert not alive(first["pid"])
    wait_for(lambda: not zombie_children(agent.pid), 10, "no zombie children of the agent")
    metrics = requests.get(f"http://{dc.ip}:{dc.port}/metrics", timeout=5).text
    assert 'sdcadm_agent_instance_restarts_total{alias="sapi0"} 1.0' in metrics

    # Restart on request (authorized) replaces the process too.
    assert dc.api(f"/v1/instances/{sapi.uuid}/restart", "POST").status_code == 202
    wait_for(lambda: dc.listing()[sapi.uuid]["pid"] not in (None, row["pid"]), 20,
             "a requested restart")
    dc.wait_running(sapi)
    wait_for(lambda: not zombie_children(agent.pid), 10, "no zombie children of the agent")
    assert dc.api(f"/v1/instances/{uuidlib.uuid4()}/restart", "POST").status_code == 404


def test_api_refuses_missing_and_wrong_tokens(dc):
    sapi = dc.add_instance("sapi0")
    dc.start_agent()
    before = dc.wait_running(sapi)
    restart = f"/v1/instances/{sapi.uuid}/restart"
    for token in (None, "", "wrong", TOKEN + "x", TOKEN[:-1]):
        for path, method in (("/v1/ping", "GET"), ("/v1/instances", "GET"), (restart, "POST"),
                             ("/v1/nonexistent", "GET")):
            r = dc.api(path, method, token=token)
            assert r.status_code == 401, (token, path)
            assert r.json()["error"] == "unauthorized"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = requests.get(f"http://{dc.ip}:{dc.port}/v1/ping", timeout=5,
                     headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401
    dc.reconcile_passes(3, "a refused restart must not happen later")
    after = dc.listing()[sapi.uuid]
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])

    # An image's file, for a server that lacks it: the token first, then only
    # an image this server has, byte for byte.
    image = f"/v1/images/{sapi.image}/file"
    assert dc.api(image, token=None).status_code == 401
    assert dc.api(image, token="wrong").status_code == 401
    r = dc.api(image)
    assert r.status_code == 200 and r.content == (dc.images / f"{sapi.image}.file").read_bytes()
    r = dc.api("/v1/images/00000000-0000-4000-8000-000000000000/file")
    assert r.status_code == 404 and r.json()["error"] == "not-found"

    # Unknown routes and methods answer JSON errors.
    assert dc.api("/v1/nonexistent").status_code == 404
    r = dc.api("/v1/instances", "DELETE")
    assert r.status_code == 405 and r.json()["error"] == "method-not-allowed"
    assert r.headers["Allow"] == "GET"
    r = requests.get(f"http://{dc.ip}:{dc.port}/nope", timeout=5)
    assert r.status_code == 404 and r.json()["error"] == "not-found"


def test_destroys_deleted_and_deposes_moved_instances(dc):
    gone = dc.add_instance("gone0")
    moved = dc.add_instance("moved0")
    dc.start_agent()
    gone_pid = dc.wait_running(gone)["pid"]
    moved_pid = dc.wait_running(moved)["pid"]
    url = f"http://{moved.admin_ip}:{INSTANCE_PORT}/data/keep"
    assert requests.put(url, data=b"forensics", timeout=5).status_code == 201

    dc.store.delete_instance(gone.uuid)
    wait_for(lambda: not dc.zone(gone.uuid).exists(), 20, "the deleted instance's zone removed")
    assert not alive(gone_pid) and not instance_pids(gone.uuid)

    dc.store.move_instance(moved.uuid, 1, server_uuid=dc.other_uuid)
    deposed = dc.root / "zones" / ".deposed" / moved.uuid
    wait_for(deposed.exists, 20, "the moved instance's zone deposed")
    assert not dc.zone(moved.uuid).exists()
    assert (deposed / "data" / "keep").read_bytes() == b"forensics"
    assert (deposed / "instance.json").is_file()
    dc.reconcile_passes(3, "a deposed instance is never restarted")
    assert not alive(moved_pid) and not instance_pids(moved.uuid)
    assert dc.listing() == {}
    assert dc.store.get_instance(moved.uuid).server_uuid == dc.other_uuid


def test_sigterm_leaves_instances_and_restart_uses_the_cache(dc):
    sapi = dc.add_instance("sapi0")
    agent = dc.start_agent()
    old_pid = dc.wait_running(sapi)["pid"]

    agent.popen.send_signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=20) == 0
    ping = requests.get(f"http://{sapi.admin_ip}:{INSTANCE_PORT}/ping", timeout=5).json()
    assert ping["pid"] == old_pid  # still running without its agent

    # The store is gone while the agent starts: it serves what it knows from the
    # cache and the disk, kills nothing, and keeps retrying.
    dc.store.close()
    with store_outage(store_config(dc.tmp)):
        second = dc.start_agent()
        status = wait_for(lambda: (s := dc.api("/v1/status").json())["reconcile_passes"] >= 3
                          and s, 20, "reconcile passes")
        assert status["store_reachable"] is False and status["ownership_confirmed"] is False
        assert dc.listing()[sapi.uuid]["pid"] == old_pid
        assert alive(old_pid)
        assert second.popen.poll() is None
        assert any(r.get("event") == "store-unreachable" for r in second.log_records())
    # Once the store confirms ownership the old process is replaced by one in
    # the new agent's process group.
    row = wait_for(lambda: (r := dc.listing()[sapi.uuid])["pid"] not in (None, old_pid)
                   and r["state"] == "running" and r, 20, "the instance restarted by the new agent")
    dc.wait_running(sapi)
    assert os.getpgid(row["pid"]) == second.pid
    assert not alive(old_pid)
    assert dc.api("/v1/status").json()["store_reachable"] is True


# -- bad images -----------------------------------------------------------------------------

MANIFEST = {"name": "bad", "version": "1", "command": ["python3", "workload.py"]}


def _tar(path, entries):
    """entries: (name, bytes) for files, (name, '->target') for symlinks,
    (name, None) for directories."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content[2:]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


def _bad_images(tmp):
    m = json.dumps(MANIFEST).encode()
    escape = tmp / "escaped-absolute"
    return {
        # alias: (entries or raw bytes, expected reason, sha256 override)
        "absolute": ([("manifest.json", m), (str(escape), b"x")], "absolute path", None),
        "dotdot": ([("manifest.json", m), ("../../escaped-dotdot", b"x")], "contains '..'", None),
        "symlink": ([("manifest.json", m), ("evil", "->../../../../../etc")],
                    "links outside the image", None),
        "sha": ([("manifest.json", m), ("workload.py", b"pass\n")], "sha256", "0" * 64),
        "nomanifest": ([("workload.py", b"pass\n")], "has no manifest.json", None),
        "badmanifest": ([("manifest.json", json.dumps({"name": "bad", "version": "1"}).encode())],
                        "'command' is a required property", None),
        "notjson": ([("manifest.json", b"{nope")], "is not JSON", None),
        "notatar": (b"this is not a tarball at all", "not a readable tarball", None),
        # Each of these once raised past ImageError and crashed every reconcile pass.
        "manifestdir": ([("manifest.json", None)], "is not a regular file", None),
        "deepmanifest": ([("manifest.json", b"[" * 30_000 + b"]" * 30_000)],
                         "nested too deeply", None),
        "corrupt": (_garbled_gzip(m), "not a readable tarball", None),
    }


def _garbled_gzip(manifest):
    """A gzip header in front of a deflate stream that is not one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        info = tarfile.TarInfo("payload")
        data = bytes(range(256)) * 64
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    for i in range(12, len(raw) - 8):
        raw[i] ^= 0xA5
    return bytes(raw)


def test_bad_images_fail_cleanly(dc):
    good = dc.add_instance("good0")
    bad = {}
    for name, (entries, reason, sha) in _bad_images(dc.tmp).items():
        image_uuid = str(uuidlib.uuid4())
        path = dc.images / f"{image_uuid}.file"
        if isinstance(entries, bytes):
            path.write_bytes(entries)
        else:
            _tar(path, entries)
        image = Image(uuid=image_uuid, name=f"bad-{name}", version="1",
                      sha256=sha or sha256_file(path), size=path.stat().st_size)
        dc.store.put_image(image)
        bad[name] = (dc.add_instance(f"bad-{name}", service=f"bad-{name}", image=image), reason)
    missing = dc.add_instance("bad-missing", service="bad-missing",
                              image=Image(uuid=str(uuidlib.uuid4()), name="x", version="1",
                                          sha256="0" * 64))
    bad["missing"] = (missing, "is not in the DC store")
    agent = dc.start_agent()
    dc.wait_running(good)  # bad neighbours do not stop a good instance

    for name, (inst, reason) in bad.items():
        wait_for(lambda: dc.store.get_instance(inst.uuid).state == "failed", 20,
                 f"instance bad-{name} failed in the store")
        row = dc.listing()[inst.uuid]
        assert row["state"] == "failed" and reason in row["error"], (name, row)
        assert row["pid"] is None
        assert not dc.zone(inst.uuid).exists(), name
        logged = [r for r in agent.log_records()
                  if r.get("event") == "provision-failed" and r.get("instance") == inst.uuid]
        assert logged and reason in logged[0]["reason"], (name, logged)
    # Nothing escaped, nothing half-extracted.
    assert not (dc.tmp / "escaped-absolute").exists()
    assert not list(dc.tmp.rglob("escaped-dotdot"))
    assert sorted(p.name for p in (dc.root / "zones").iterdir()) == [good.uuid]
    assert not (dc.root / "var/sdcadm/images" / f"{bad['sha'][0].image}.file").exists()
    # Supervision goes on beside the bad ones: a killed good instance comes back.
    first = dc.wait_running(good)
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: (r := dc.listing()[good.uuid])["pid"] not in (None, first["pid"])
             and r["state"] == "running", 20, "the good instance restarted after kill -9")
    assert not [r for r in agent.log_records() if r.get("event") == "reconcile-crash"]


# -- bad configuration -----------------------------------------------------------------------

BAD_CONFIGS = {
    "wrong type": ({"agent": {"port": "many"}}, "agent.port"),
    "unknown key": ({"agent": {"colour": "blue"}}, "agent.colour"),
    "no server uuid": ({"server_uuid": None}, "server_uuid"),
    "bad server uuid": ({"server_uuid": "hn0"}, "server_uuid"),
    "zero interval": ({"agent": {"heartbeat_interval": 0}}, "agent.heartbeat_interval"),
    "no token file": ({"agent": {"token_file": "/nonexistent/agent-token"}},
                      "/nonexistent/agent-token does not exist"),
    "no restore-data key": ({"restore_data": {"key_file": "/nonexistent/restore-data.key"}},
                            "restore_data.key_file: /nonexistent/restore-data.key does not "
                            "exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configuration_exits_1_naming_the_key(dc, case):
    overrides, expected = BAD_CONFIGS[case]
    config = dc.config(**overrides)
    result = subprocess.run(agent_argv(config), capture_output=True, text=True, timeout=30, env=agent_env(),
                            start_new_session=True)
    assert result.returncode == 1, result.stderr
    assert expected in result.stderr
    assert result.stderr.startswith("sdcadm-agent: ")


def test_sqlite_store_another_servers_agent_uses_is_refused(dc):
    """A DC of more than one server cannot share one sqlite file: once hn1's
    agent has heartbeated on it, hn0's agent refuses to start, saying to use
    etcd, and changes nothing (hn0 never heartbeats)."""
    dc.store.heartbeat(dc.other_uuid)
    result = subprocess.run(agent_argv(dc.config()), capture_output=True, text=True, timeout=30,
                            env=agent_env(), start_new_session=True)
    assert result.returncode == 1, result.stderr
    assert "hn1 already uses it" in result.stderr and "cannot share one sqlite file" in result.stderr
    assert "store.backend: etcd" in result.stderr
    assert not dc.store.get_server(dc.server_uuid).last_heartbeat


def test_empty_token_file_and_bad_yaml_and_busy_port(dc):
    (dc.tmp / "empty").write_text("  \n")
    config = dc.config(agent={"token_file": str(dc.tmp / "empty")})
    result = subprocess.run(agent_argv(config), capture_output=True, text=True, timeout=30, env=agent_env())
    assert result.returncode == 1 and "is empty" in result.stderr
    assert "agent.token_file" in result.stderr and "openssl rand" in result.stderr

    bad = dc.tmp / "bad.yaml"
    bad.write_text("agent: [unclosed\n")
    result = subprocess.run(agent_argv(bad), capture_output=True, text=True, timeout=30, env=agent_env())
    assert result.returncode == 1 and "not valid YAML" in result.stderr

    with socket.socket() as s:
        s.bind((dc.ip, dc.port))
        s.listen()
        result = subprocess.run(agent_argv(dc.config()), capture_output=True, text=True,
                                timeout=30, env=agent_env())
    assert result.returncode == 1 and "cannot listen" in result.stderr

    result = subprocess.run(agent_argv(dc.config()) + ["--help"], capture_output=True,
                            text=True, timeout=30, env=agent_env())
    assert result.returncode == 0 and "--config" in result.stdout

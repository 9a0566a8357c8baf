"""The lab shares nothing but the network (issue 9): no server's config, and
no process of a server (its agent, its instances, its etcd member, what its
agent runs to pull restore data), refers to a path under another server's
root or to a path of the lab itself (its build area, its sshd's files,
lab.json, the files earlier labs shared: dc.sqlite, token, restore-data.key).

Processes are judged from outside, through /proc: the command line, the
working directory, the environment and every open file."""

import hashlib
import json
import os
import re
import subprocess

import pytest
import yaml

from sdcadm.lab.state import load_state
from tests.conftest import BIN, clean_env, env_of, needs_sshd, run, running_lab, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_sshd]

# What the lab keeps for itself: no server may name any of it.
LAB_PATHS = ("dc.sqlite", "token", "restore-data.key", "images", "ssh", "lab.json",
             ".powered-off", "zfs")


def forbidden_for(state, hostname):
    """Paths ``hostname`` must never refer to."""
    others = [state.server_root(s["hostname"]) for s in state.servers
              if s["hostname"] != hostname]
    return [str(p) for p in others] + [str(state.path / name) for name in LAB_PATHS]


def references(text, forbidden):
    """The forbidden paths ``text`` names (a path itself or anything below it)."""
    return [f for f in forbidden if re.search(re.escape(f) + r"(?=/|$|[^\w.-])", text)]


def config_strings(doc):
    if isinstance(doc, dict):
        for v in doc.values():
            yield from config_strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from config_strings(v)
    elif isinstance(doc, str):
        yield doc


def config_violations(state):
    found = []
    for s in state.servers:
        doc = yaml.safe_load(state.config_path(s["hostname"]).read_text())
        for value in config_strings(doc):
            found += [(s["hostname"], "config", value, f)
                      for f in references(value, forbidden_for(state, s["hostname"]))]
    return found


def server_pids(state, hostname):
    """The processes of a server: its agent's process group (the agent, its
    instances, what it runs) and its etcd member."""
    from sdcadm.lab import ctl, etcd

    pids = set()
    agent = ctl.agent_pid(state, hostname)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and agent:
            try:
                if os.getpgid(int(entry)) == agent:
                    pids.add(int(entry))
            except ProcessLookupError:
                pass
    if state.store == "etcd" and state.server(hostname)["headnode"]:
        member = etcd.member_pid(state, hostname)
        assert member, f"{hostname}'s etcd member does not run"
        pids.add(member)
    return pids


def what_a_process_names(pid):
    """(what, text) pairs: its argv, cwd, environment and open files."""
    base = f"/proc/{pid}"
    try:
        argv = open(f"{base}/cmdline", "rb").read().split(b"\0")
        named = [("argv", a.decode(errors="replace")) for a in argv if a]
        named.append(("cwd", os.readlink(f"{base}/cwd")))
        env = open(f"{base}/environ", "rb").read().split(b"\0")
        named += [("environ", e.decode(errors="replace")) for e in env if e]
        for fd in os.listdir(f"{base}/fd"):
            try:
                named.append((f"fd {fd}", os.readlink(f"{base}/fd/{fd}")))
            except OSError:
                pass
    except (FileNotFoundError, ProcessLookupError):
        return []  # ended while looked at
    return named


def process_violations(state):
    found = []
    for s in state.servers:
        forbidden = forbidden_for(state, s["hostname"])
        for pid in server_pids(state, s["hostname"]):
            for what, text in what_a_process_names(pid):
                found += [(s["hostname"], f"pid {pid} {what}", text, f)
                          for f in references(text, forbidden)]
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sharenothing") / "dc"
    with running_lab(directory, "--headnodes", "3", "--computenodes", "1",
                     "--services", "manatee,sapi,napi", "--heartbeat-interval", "0.5"):
        yield load_state(directory)


def test_the_check_finds_a_shared_path(tmp_path):
    """The checks can fail: a path of another server or of the lab is found
    wherever it appears, and a neighbour with a longer name is not."""
    from sdcadm.lab.state import LabState

    state = LabState(dir=str(tmp_path), net="127.1.2.0/24", servers=[
        {"hostname": h, "uuid": "x", "admin_ip": "127.1.2.1", "headnode": True}
        for h in ("hn1", "hn10")])
    forbidden = forbidden_for(state, "hn10")
    assert references(f"{tmp_path}/hn1/var/etcd", forbidden) == [f"{tmp_path}/hn1"]
    assert references(f"--data-dir={tmp_path}/hn1", forbidden) == [f"{tmp_path}/hn1"]
    assert references(f"127.1.2.1:{tmp_path}/hn1/zones/u/data", forbidden)
    assert references(f"{tmp_path}/token", forbidden) == [f"{tmp_path}/token"]
    assert references(f"{tmp_path}/hn10/etc/sdcadm.yaml", forbidden) == []
    assert references(f"{tmp_path}/hn1x", forbidden) == []


def test_no_config_names_another_server_or_the_lab(lab):
    assert config_violations(lab) == []
    # The store is reached over the network: every server lists the members.
    for s in lab.servers:
        doc = yaml.safe_load(lab.config_path(s["hostname"]).read_text())
        assert doc["store"]["backend"] == "etcd"
        assert sorted(doc["store"]["etcd_endpoints"]) == sorted(
            lab.etcd_endpoint(h["hostname"]) for h in lab.headnodes)
        assert "path" not in doc["store"]
    assert not (lab.path / "dc.sqlite").exists() and not (lab.path / "token").exists()


def test_no_process_of_a_server_names_another_server_or_the_lab(lab):
    """Sampled while every headnode pulls restore data (its rsync and ssh run
    in its agent's process group) and after."""
    env = clean_env(SDCADM_CONFIG=str(lab.config_path("hn1")))
    sync = subprocess.Popen([str(BIN / "sdcadm"), "service", "sync-restore-data"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        samples = 0
        while sync.poll() is None:
            seen += process_violations(lab)
            samples += 1
        out, err = sync.communicate()
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.wait()
    assert sync.returncode == 0, err
    assert "synced on 3 of 3" in out + err
    seen += process_violations(lab)
    print(f"{samples} samples of every server's processes while syncing")
    assert seen == [], seen[:10]


def ssh_from(state, source, target, argv):
    """Run ``argv`` on ``target`` as ``source`` reaches it (its own key and known_hosts)."""
    from sdcadm.transport.ssh import SSHTransport

    config = yaml.safe_load(state.config_path(source).read_text())["ssh"]
    with SSHTransport(state.server(target)["admin_ip"], config["port"], user=config["user"],
                      identity=config["identity"], known_hosts=config["known_hosts"]) as t:
        return t.run(argv, check=False)


def test_a_killed_server_is_out_of_reach_until_started(lab):
    """`lab kill` takes the member down and moves the root away: a command on
    the server's address (as a restore-data pull runs) meets no disk and fails
    loudly; `lab start` brings it all back."""
    from sdcadm.lab import etcd

    directory = str(lab.path)
    env = env_of(directory, "hn1")
    before = ssh_from(lab, "hn1", "hn2", ["cat", "etc/sdcadm.yaml"])
    assert before.returncode == 0 and "hostname: hn2" in before.stdout
    run("sdcadm", "lab", "kill", "--dir", directory, "hn2")
    try:
        assert not lab.server_root("hn2").exists()
        assert (lab.path / ".powered-off" / "hn2" / "etc" / "sdcadm.yaml").exists()
        assert etcd.member_pid(lab, "hn2") is None and not etcd.healthy(lab, "hn2")
        rows = {r["hostname"]: r for r in json.loads(
            run("sdcadm", "lab", "status", "-j", "--dir", directory).stdout)}
        assert rows["hn2"]["powered_off"] is True and rows["hn2"]["etcd_pid"] is None
        assert rows["hn1"]["powered_off"] is False and rows["hn1"]["etcd_pid"]
        assert rows["cn0"]["etcd_pid"] is None  # compute nodes run no member
        after = ssh_from(lab, "hn1", "hn2", ["cat", "etc/sdcadm.yaml"])
        assert after.returncode != 0 and "hostname" not in after.stdout
        assert str(lab.server_root("hn2")) in after.stderr  # says which disk is missing
        # The store answers with two members of three, and sees hn2 go.
        wait_for(lambda: "unreachable" in run("sdcadm", "server", "ls", env=env,
                                              check=False).stdout,
                 30, "hn2 unreachable in the store")
    finally:
        run("sdcadm", "lab", "start", "--dir", directory, "hn2")
    assert lab.server_root("hn2").exists()
    wait_for(lambda: etcd.healthy(lab, "hn2"), 30, "hn2's member back in the cluster")
    wait_for(lambda: run("sdcadm", "check-health", "-q", env=env, check=False).returncode == 0,
             60, "hn2's instances back")
    assert config_violations(lab) == [] and process_violations(lab) == []


def test_images_reach_the_other_servers_over_the_network(lab):
    """The images enter the DC on the headnodes (the first one's image source,
    every headnode's usbkey); any other image a server holds is one its agent
    fetched from another agent, of the sha256 the store names (a compute node
    fetching: tests/integration/test_create.py)."""
    for host in ("hn0", "hn1", "hn2", "cn0"):
        root = lab.server_root(host)
        log = root / "var" / "log" / "sdcadm-agent.log"
        fetched = {json.loads(line)["image"] for line in log.read_text().splitlines()
                   if '"image-fetched"' in line}
        local = {p.name[:-len(".file")] for d in (root / "usbkey" / "images",)
                 if d.exists() for p in d.glob("*.file")}
        images = lab.server_images(host)
        have = {p.name[:-len(".file")] for p in images.glob("*.file")} if images.exists() else set()
        if host != "hn0":  # hn0's image source is where the lab imported them
            assert have <= fetched | local, f"{host} has images from elsewhere: {have - fetched - local}"
        if host == "cn0":
            assert not local and have == fetched
        for image in fetched:
            body = (images / f"{image}.file").read_bytes()
            record = json.loads((images / f"{image}.json").read_text())
            assert hashlib.sha256(body).hexdigest() == record["sha256"]


GHOST = "9b9b9b9b-0000-4000-8000-000000000001"
GHOST_INST = "9c9c9c9c-0000-4000-8000-000000000001"


def test_listings_come_from_the_agents_cache_and_show_a_write_at_once(lab):
    """On etcd, `server ls` and `insts` read their headnode agent's cache (kept
    current by a watch): the same rows as the store itself, and a record written
    through the store's network API is in the very next listing."""
    from sdcadm.config import load_config
    from sdcadm.model import Instance, Server
    from sdcadm.store import open_store

    env = env_of(str(lab.path), "hn1")

    def listed(command, where):
        out = run("sdcadm", *command, "-j", env=dict(env, SDCADM_LISTING=where)).stdout
        return [{k: v for k, v in row.items() if k not in ("heartbeat_age", "last_heartbeat")}
                for row in json.loads(out)]

    for command in (["server", "ls"], ["insts"], ["svcs"]):
        assert listed(command, "agent") == listed(command, "store"), command
    store = open_store(load_config(env["SDCADM_CONFIG"]))
    store.register_server(Server(GHOST, "ghost", "10.99.0.1"))
    try:
        assert "ghost" in {r["hostname"] for r in listed(["server", "ls"], "agent")}
        store.create_instance(Instance(uuid=GHOST_INST, alias="listed0", service="listed",
                                       server_uuid=GHOST, image=GHOST, admin_ip="10.99.0.2"))
        rows = listed(["insts", "alias=listed0"], "agent")
        assert [(r["alias"], r["hostname"]) for r in rows] == [("listed0", "ghost")]
        store.delete_instance(GHOST_INST)
        assert listed(["insts", "alias=listed0"], "agent") == []
    finally:
        store.delete_instance(GHOST_INST)
        store.delete_server(GHOST, store.get_server(GHOST).generation)
    assert "ghost" not in {r["hostname"] for r in listed(["server", "ls"], "agent")}

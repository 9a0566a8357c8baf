"""Restore data end to end on a real lab: 3 headnodes, real agents, real sshd
and rsync, the installed `sdcadm` command; faults by SIGKILL and `lab kill`.

imgapi, sapi and vmapi live on hn0 (non-HA), binder on all three (HA): hn1 and
hn2 must hold copies of imgapi, sapi and vmapi; hn0 holds nothing of its own.
"""

import hashlib
import json
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import requests
import yaml

from sdcadm.config import load_config
from sdcadm.lab import procs
from sdcadm.restore_data.access import RestoreData
from sdcadm.restore_data.client import sync_one
from sdcadm.transport import rsync
from sdcadm.lab.state import load_state
from tests.conftest import clean_env, needs_sshd, random_net, run, wait_for

pytestmark = [pytest.mark.integration, needs_sshd,
              pytest.mark.skipif(shutil.which("rsync") is None,
                                 reason="rsync not installed (apt-get install rsync)")]

HEARTBEAT = 0.5
PRUNE_GRACE = 2.0
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Lab:
    def __init__(self, directory):
        self.dir = Path(directory)
        self.token = (self.dir / "hn1" / "etc" / "sdcadm" / "agent-token").read_text().strip()

    def cfg(self, hn):
        return self.dir / hn / "etc" / "sdcadm.yaml"

    def env(self, hn="hn0"):
        return clean_env(SDCADM_CONFIG=str(self.cfg(hn)))

    def sdcadm(self, *args, hn="hn0", check=True):
        return run("sdcadm", *args, env=self.env(hn), check=check)

    def lab(self, *args):
        return run("sdcadm", "lab", *args, "--dir", str(self.dir))

    def store(self):
        return load_state(self.dir).dc_store().open()

    def server(self, hn):
        with self.store() as store:
            return store.find_server(hn)

    def instance(self, alias):
        with self.store() as store:
            return next(i for i in store.list_instances() if i.alias == alias)

    def data(self, alias):
        inst = self.instance(alias)
        host = self.server(inst.server_uuid).hostname
        return self.dir / host / "zones" / inst.uuid / "data"

    def restore_data(self, hn):
        return RestoreData(load_config(self.cfg(hn), environ={}))

    def current(self, hn, alias):
        """The directory of ``hn``'s current (manifest) copy of ``alias``'s dataset."""
        data = self.restore_data(hn)
        copy = data.instance_copy(self.instance(alias).uuid)
        return Path(data.backend.copy_path(str(copy.replica_dir), copy.snapshot))

    def sync(self, hn, *services, reseed=False):
        events = []
        result = sync_one(self.server(hn), self.token, list(services) or None, reseed,
                          lambda host, e: events.append(e))
        assert result.reachable, result.error
        return result, events

    def statuses(self, hn=None):
        # Asked on ``hn`` itself when given: another headnode may be off (its disk gone).
        rows = json.loads(self.sdcadm("restore-data", "ls", "-j", hn=hn or "hn0").stdout)
        return {(r["headnode"], r["instance"]): r for r in rows if hn in (None, r["headnode"])}

    def verify(self, hn, *services):
        return self.sdcadm("restore-data", "verify", *services, hn=hn, check=False)

    def wait_agent(self, hn, timeout=15.0):
        """Until ``hn``'s agent answers its API."""
        url = f"{self.server(hn).agent_url}/v1/ping"
        wait_for(lambda: requests.get(url, headers={"Authorization": f"Bearer {self.token}"},
                                      timeout=2, proxies={"http": None}).ok,
                 timeout, f"{hn}'s agent coming back", interval=0.1)

    def wait_status(self, hn, want, timeout=15.0):
        from sdcadm.model import status_of

        def status():
            with self.store() as store:
                return status_of(store.find_server(hn), time.time(), HEARTBEAT * 2.5)

        wait_for(lambda: status() == want, timeout, f"{hn} becoming {want}", interval=0.1)


def put(url, key, data, timeout=20.0):
    """PUT into a workload's dataset, retrying while it starts."""
    deadline = time.monotonic() + timeout
    while True:
        req = urllib.request.Request(f"{url}/data/{key}", data=data, method="PUT")
        try:
            assert _no_proxy.open(req, timeout=5).status == 201
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rd") / "dc"
    try:
        run("sdcadm", "lab", "up", "--dir", str(directory), "--net", random_net(),
            "--headnodes", "3", "--computenodes", "0", "--services", "imgapi,sapi,binder,vmapi",
            "--heartbeat-interval", str(HEARTBEAT))
        # A short prune grace on every headnode, and no periodic sync while the
        # tests run (they sync on demand): agents read these at start.
        for hn in ("hn0", "hn1", "hn2"):
            path = directory / hn / "etc" / "sdcadm.yaml"
            doc = yaml.safe_load(path.read_text())
            doc["restore_data"].update(prune_grace=PRUNE_GRACE, sync_interval=3600, jitter=0)
            path.write_text(yaml.safe_dump(doc))
        run("sdcadm", "lab", "down", "--dir", str(directory))
        run("sdcadm", "lab", "up", "--dir", str(directory), "--headnodes", "3",
            "--computenodes", "0")
        yield Lab(directory)
    finally:
        run("sdcadm", "lab", "down", "--dir", str(directory), check=False)
        assert procs.lab_processes(directory) == [], "lab down left processes behind"


# -- the normal path -------------------------------------------------------------------------

def test_sync_copies_every_non_ha_instance_to_the_other_headnodes(lab):
    imgapi, sapi = lab.instance("imgapi0"), lab.instance("sapi0")
    payloads = {"imgapi0": os.urandom(300_000), "sapi0": b"sapi canary\n"}
    put(imgapi.url, "image-blob", payloads["imgapi0"])
    put(sapi.url, "canary", payloads["sapi0"])
    started = time.monotonic()
    result = lab.sdcadm("service", "sync-restore-data")
    print(f"sync-restore-data on 3 headnodes: {time.monotonic() - started:.2f}s")
    assert "restore data synced on 3 of 3 headnode(s)" in result.stderr
    for hn in ("hn1", "hn2"):
        assert (lab.current(hn, "imgapi0") / "image-blob").read_bytes() == payloads["imgapi0"]
        assert (lab.current(hn, "sapi0") / "canary").read_bytes() == payloads["sapi0"]
        held = lab.restore_data(hn)
        assert held.services() == ["imgapi", "sapi", "vmapi"]      # binder is HA: nothing
        vm = held.instance_copy(lab.instance("vmapi0").uuid)
        assert vm.dataset is None and vm.payload["instance"]["alias"] == "vmapi0"
        assert all(path.is_file() for _, path in vm.images)
        assert not held.layout.datasets_dir("vmapi").exists()
    # hn0 runs them all: it keeps no copy of its own instances.
    assert lab.restore_data("hn0").services() == []
    assert (lab.dir / "hn0" / "var" / "sdcadm" / "svc-restore-data" / "dc.json").is_file()


def test_verify_passes_on_every_headnode(lab):
    for hn in ("hn0", "hn1", "hn2"):
        result = lab.verify(hn)
        assert result.returncode == 0, (hn, result.stdout, result.stderr)
    out = lab.verify("hn1").stdout
    for service in ("imgapi", "sapi", "vmapi"):
        assert f"{service}: restorable as of 20" in out
    assert "no restore data of any service" in lab.verify("hn0").stdout
    report = json.loads(lab.sdcadm("restore-data", "verify", "-j", hn="hn2").stdout)
    assert report["ok"] and {s["service"] for s in report["services"]} == {"imgapi", "sapi", "vmapi"}


def test_ls_shows_every_copy_ok(lab):
    rows = lab.statuses()
    assert set(rows) == {(hn, a) for hn in ("hn1", "hn2") for a in ("imgapi0", "sapi0", "vmapi0")}
    assert all(r["status"] == "ok" and r["source"] == "hn0" for r in rows.values())
    assert rows[("hn1", "vmapi0")]["snapshot"] is None
    assert rows[("hn1", "sapi0")]["snapshot"] and rows[("hn1", "imgapi0")]["size"] >= 300_000
    table = lab.sdcadm("restore-data", "ls").stdout.splitlines()
    assert table[0].split() == ["HEADNODE", "SERVICE", "INSTANCE", "SOURCE", "SNAPSHOT", "AGE",
                                "SIZE", "STATUS"]
    assert len(table) == 7


def test_agent_reports_what_it_holds(lab):
    server = lab.server("hn1")
    resp = requests.get(f"{server.agent_url}/v1/restore-data", timeout=5,
                        headers={"Authorization": f"Bearer {lab.token}"},
                        proxies={"http": None})
    doc = resp.json()
    assert resp.status_code == 200 and doc["headnode"] is True
    assert {(h["service"], h["alias"], h["source"], h["status"]) for h in doc["holdings"]} == {
        ("imgapi", "imgapi0", "hn0", "ok"), ("sapi", "sapi0", "hn0", "ok"),
        ("vmapi", "vmapi0", "hn0", "ok")}
    metrics = requests.get(f"{server.agent_url}/metrics", timeout=5, proxies={"http": None}).text
    assert 'sdcadm_restore_data_last_success_timestamp_seconds{service="sapi",source="hn0"}' in metrics


def test_a_cycle_with_nothing_new_keeps_the_copy_and_a_write_is_copied(lab):
    """Nothing written to sapi0 since the last cycle: the cycle succeeds and
    keeps the copy the manifest names (no new copy; verify still passes);
    a write is copied by the next cycle. (The first sync here may still copy:
    a fingerprint taken within 2 s of a write is not trusted.)"""
    # The first sync's fingerprint must be trusted for the second to keep the
    # copy: wait until nothing in sapi0's data changed within the gate's
    # margin (its `find -newerct`, on whole seconds of `date +%s`).
    data = lab.data("sapi0")

    def newest_change():
        return max(os.lstat(p).st_ctime for p in [data, *data.rglob("*")])

    wait_for(lambda: time.time() - newest_change() > rsync.GATE_MARGIN + 1.1, 30,
             f"sapi0's data quiet for {rsync.GATE_MARGIN + 1.1:g}s")
    lab.sync("hn1", "sapi")
    kept = lab.statuses("hn1")[("hn1", "sapi0")]
    lab.sync("hn1", "sapi")
    again = lab.statuses("hn1")[("hn1", "sapi0")]
    assert again["status"] == "ok" and again["snapshot"] == kept["snapshot"]
    assert again["last_attempt"] > kept["last_attempt"]
    assert lab.verify("hn1", "sapi").returncode == 0
    put(lab.instance("sapi0").url, "after-a-quiet-cycle", b"new\n")
    lab.sync("hn1", "sapi")
    assert lab.statuses("hn1")[("hn1", "sapi0")]["snapshot"] != kept["snapshot"]
    assert (lab.current("hn1", "sapi0") / "after-a-quiet-cycle").read_bytes() == b"new\n"


# -- bad input -----------------------------------------------------------------------------

def test_bad_requests_are_refused_and_start_no_sync(lab):
    server = lab.server("hn1")
    url = f"{server.agent_url}/v1/restore-data/sync"
    auth = {"Authorization": f"Bearer {lab.token}"}
    before = {k: r["last_attempt"] for k, r in lab.statuses("hn1").items()}
    cycles = requests.get(f"{server.agent_url}/v1/restore-data", headers=auth, timeout=5,
                          proxies={"http": None}).json()["cycles"]

    def post(data, headers):
        return requests.post(url, data=data, headers=headers, timeout=10, proxies={"http": None})

    bad_json = post(b"{nope", {**auth, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "bad-request"
    bad_field = post(json.dumps({"services": "sapi"}), auth)
    assert bad_field.status_code == 400 and "services" in bad_field.json()["message"]
    unknown = post(json.dumps({"services": ["nosuch"]}), auth)
    assert unknown.status_code == 400 and unknown.json()["error"] == "unknown-service"
    assert "known services: binder, imgapi, sapi, vmapi" in unknown.json()["message"]
    wrong = post(b"{}", {"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    none = post(b"{}", {})
    assert none.status_code == 401
    after = {k: r["last_attempt"] for k, r in lab.statuses("hn1").items()}
    assert after == before
    assert requests.get(f"{server.agent_url}/v1/restore-data", headers=auth, timeout=5,
                        proxies={"http": None}).json()["cycles"] == cycles
    cli = lab.sdcadm("service", "sync-restore-data", "nosuch", check=False)
    assert cli.returncode == 1 and "unknown service 'nosuch'" in cli.stderr


# -- damaged copies --------------------------------------------------------------------------

def test_tampered_file_in_a_copy_is_named_then_repaired(lab):
    current = lab.current("hn2", "sapi0")
    uuid = lab.instance("sapi0").uuid
    (current / "canary").write_bytes(b"tampered!!")     # in place: every hard link sees it
    result = lab.verify("hn2", "sapi")
    assert result.returncode == 1
    problems = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("!")]
    assert len(problems) == 1, result.stdout
    assert problems[0].startswith(f"! datasets/{uuid}@{current.name}: changed: canary ")
    assert "restore data is broken for: sapi" in result.stderr
    assert lab.verify("hn2", "imgapi").returncode == 0
    lab.sync("hn2", "sapi")                    # the source is intact: a new, good copy
    assert lab.verify("hn2", "sapi").returncode == 0
    assert (lab.current("hn2", "sapi0") / "canary").read_bytes() == b"sapi canary\n"


def test_truncated_or_edited_manifest_is_named(lab):
    path = lab.dir / "hn2" / "var" / "sdcadm" / "svc-restore-data" / "svc-imgapi" / "manifest.json"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    result = lab.verify("hn2", "imgapi")
    assert result.returncode == 1 and "! manifest.json: is truncated" in result.stdout
    doc = json.loads(good)
    doc["instances"][lab.instance("imgapi0").uuid]["last_success"] += 3600
    path.write_text(json.dumps(doc))
    result = lab.verify("hn2", "imgapi")
    assert result.returncode == 1
    assert "! manifest.json: was modified after it was written" in result.stdout
    lab.sync("hn2", "imgapi")
    assert lab.verify("hn2", "imgapi").returncode == 0


def test_link_escaping_the_dataset_is_refused(lab):
    source = lab.data("sapi0")
    (source / "escape").symlink_to("/etc/passwd")
    try:
        result, _ = lab.sync("hn1", "sapi")
        assert result.services["sapi"].status == "failed"
        assert "escape: link escaping the copy -> /etc/passwd" in result.services["sapi"].error
        assert lab.statuses("hn1")[("hn1", "sapi0")]["status"] == "failed"
        assert lab.verify("hn1", "sapi").returncode == 0      # the last good copy is kept
        assert not (lab.current("hn1", "sapi0") / "escape").is_symlink()
    finally:
        (source / "escape").unlink()
    result, _ = lab.sync("hn1", "sapi")
    assert result.ok, result.problems


def test_image_with_an_entry_escaping_its_root_is_refused(lab):
    import gzip
    import io
    import tarfile

    from sdcadm.model import Image
    from sdcadm.uuids import new_uuid

    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in (("manifest.json", b'{"name": "vmapi", "version": "2", '
                                             b'"command": ["true"]}'), ("../escape", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    bad = Image(new_uuid(), "vmapi", "2", hashlib.sha256(data).hexdigest(), len(data))
    (lab.dir / "hn1" / "var" / "sdcadm" / "images" / f"{bad.uuid}.file").write_bytes(data)
    vmapi = lab.instance("vmapi0")
    with lab.store() as store:
        store.put_image(bad)
        store.move_instance(vmapi.uuid, vmapi.generation, image=bad.uuid)
    try:
        result, _ = lab.sync("hn1", "vmapi")
        assert result.services["vmapi"].status == "failed"
        assert "'../escape' contains '..'" in result.services["vmapi"].error
        held = lab.restore_data("hn1")
        assert not (held.layout.images_dir("vmapi") / f"{bad.uuid}.file").exists()
        assert held.instance_copy(vmapi.uuid).payload["image"]["uuid"] == vmapi.image
        assert lab.verify("hn1", "vmapi").returncode == 0
    finally:
        with lab.store() as store:
            now = lab.instance("vmapi0")
            store.move_instance(vmapi.uuid, now.generation, image=vmapi.image)
    result, _ = lab.sync("hn1", "vmapi")
    assert result.ok, result.problems


# -- faults ----------------------------------------------------------------------------------

def test_agent_killed_mid_sync_keeps_the_last_copy_and_recovers(lab):
    source = lab.data("imgapi0")
    big = source / "big"
    big.mkdir()
    digests = {}
    for n in range(24):                          # 120 MiB straight into the dataset
        data = os.urandom(5 << 20)
        (big / f"f{n:02d}").write_bytes(data)
        digests[f"big/f{n:02d}"] = hashlib.sha256(data).hexdigest()
    before = lab.current("hn1", "imgapi0").name
    server = lab.server("hn1")
    snaps = lab.restore_data("hn1").layout.dataset_dir("imgapi", lab.instance("imgapi0").uuid) \
        / "snapshots"
    # hn1's process groups (its agent's, which its rsync joins, and its
    # instances'), looked up now so that they can be frozen the moment the
    # copy is seen under way: under load, starting `sdcadm lab kill` took
    # long enough for the whole copy to finish first.
    groups = {os.getpgid(pid) for pid in procs.lab_processes(lab.dir / "hn1")} - {os.getpgrp()}
    session = requests.Session()
    session.trust_env = False
    resp = session.post(f"{server.agent_url}/v1/restore-data/sync",
                        json={"services": ["imgapi"]}, stream=True, timeout=(5, 60),
                        headers={"Authorization": f"Bearer {lab.token}"})
    deadline = time.monotonic() + 30
    while not any(p.name.startswith(".tmp-") and any(p.rglob("f*")) for p in snaps.iterdir()):
        assert time.monotonic() < deadline, "the sync never started copying"
        time.sleep(0.005)
    for group in groups:
        os.killpg(group, signal.SIGSTOP)         # mid-copy, held there...
    lab.lab("kill", "hn1")                       # ...until the power goes (SIGKILL)
    killed_at = time.monotonic()
    resp.close()
    session.close()
    # hn1's disk is out of reach while it is off: look at it where `lab kill` put it.
    off = lab.dir / ".powered-off" / "hn1"
    assert not (lab.dir / "hn1").exists()
    partial = [p for p in (off / snaps.relative_to(lab.dir / "hn1")).iterdir()
               if p.name.startswith(".tmp-")]
    copied = len(list(partial[0].rglob("f*"))) if partial else 0
    print(f"killed with {copied} of 24 files copied")
    assert partial and copied < 24, "the kill did not land mid-sync"
    # Nothing of hn1's sync survives it (rsync dies with the agent).
    wait_for(lambda: procs.lab_processes(lab.dir / "hn1") == [] and
             procs.lab_processes(off) == [], 10,
             "every process of hn1's sync ending with its agent")
    print(f"hn1's sync processes gone {time.monotonic() - killed_at:.2f}s after the kill")
    lab.lab("start", "hn1")
    assert lab.current("hn1", "imgapi0").name == before
    result = lab.verify("hn1", "imgapi")
    assert result.returncode == 0, result.stdout
    lab.wait_agent("hn1")
    started = time.monotonic()
    result, _ = lab.sync("hn1", "imgapi")
    print(f"sync of 120 MiB after the kill: {time.monotonic() - started:.2f}s")
    assert result.ok, result.problems
    current = lab.current("hn1", "imgapi0")
    assert current.name != before
    for rel, digest in digests.items():
        assert hashlib.sha256((current / rel).read_bytes()).hexdigest() == digest
    started = time.monotonic()
    assert lab.verify("hn1", "imgapi").returncode == 0
    print(f"verify of 120 MiB: {time.monotonic() - started:.2f}s")
    started = time.monotonic()
    result, _ = lab.sync("hn1", "imgapi")        # nothing changed: incremental, hard links
    moved = result.services["imgapi"].instances[0]["bytes_moved"]
    print(f"unchanged 120 MiB re-synced in {time.monotonic() - started:.2f}s, {moved} bytes moved")
    assert result.ok and moved < (1 << 20)


def test_unreachable_source_keeps_the_copy(lab):
    lab.lab("kill", "hn0")
    try:
        lab.wait_status("hn0", "unreachable")
        result = lab.sdcadm("service", "sync-restore-data", check=False, hn="hn1")
        assert result.returncode == 3, (result.stdout, result.stderr)
        assert "hn0: agent unreachable" in result.stderr
        rows = lab.statuses("hn1")
        for alias in ("imgapi0", "sapi0", "vmapi0"):
            assert rows[("hn1", alias)]["status"] == "unreachable"
            assert "source server hn0 is unreachable" in rows[("hn1", alias)]["error"]
        assert lab.verify("hn1").returncode == 0
        assert (lab.current("hn1", "sapi0") / "canary").read_bytes() == b"sapi canary\n"
    finally:
        lab.lab("start", "hn0")
        lab.wait_agent("hn0")
        lab.wait_status("hn0", "running")


# -- pruning ---------------------------------------------------------------------------------

def test_copy_of_a_deleted_instance_is_pruned_after_grace(lab):
    from sdcadm.model import Instance
    from sdcadm.uuids import new_uuid

    sapi0, hn2 = lab.instance("sapi0"), lab.server("hn2")
    uuid = new_uuid()
    with lab.store() as store:
        ip = store.allocate_ip("admin", uuid)
        store.create_instance(Instance(uuid, "sapi1", "sapi", hn2.uuid, sapi0.image, ip,
                                       port=sapi0.port, delegate_dataset=True))
    wait_for((lab.dir / "hn2" / "zones" / uuid / "data").is_dir, 20, "hn2 provisioning sapi1")
    put(lab.instance("sapi1").url, "k", b"v")
    result, _ = lab.sync("hn1", "sapi")
    assert result.ok, result.problems
    layout = lab.restore_data("hn1").layout
    assert uuid in layout.dataset_uuids("sapi")
    with lab.store() as store:
        store.delete_instance(uuid)
    lab.sync("hn1", "sapi")                      # seen gone: kept for prune_grace
    assert uuid in layout.dataset_uuids("sapi")
    # Synced again until the grace has run out and the copy goes.
    wait_for(lambda: f"sapi/{uuid}" in lab.sync("hn1", "sapi")[0].summary.pruned,
             PRUNE_GRACE + 30, "the copy of the deleted sapi1 pruned", interval=0.2)
    assert uuid not in layout.dataset_uuids("sapi") and uuid not in layout.vm_uuids("sapi")
    assert ("hn1", "sapi1") not in lab.statuses("hn1")
    assert lab.verify("hn1", "sapi").returncode == 0
    assert (lab.current("hn1", "sapi0") / "canary").read_bytes() == b"sapi canary\n"

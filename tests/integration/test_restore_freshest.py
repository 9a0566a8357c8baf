"""`sdcadm service restore` seeds from the freshest copy among the headnodes and
refuses data older than `restore.max_data_age`, on real labs (sapi with its
delegate dataset and napi, a stateless singleton, on hn0), through the
installed `sdcadm` command.

hn1's copy is made old honestly: its puller is switched off in its own
configuration (`restore_data.enabled: false`, the agent restarted), so only
hn2 pulls the write made after that. The promise is checked from outside: the
restored sapi serves the key only hn2's copy had.
"""

import json
import signal

import pytest
import requests
import yaml

from sdcadm.lab import procs
from tests.conftest import lab_factory, needs_sshd, wait_for
from tests.integration.test_restore_migrate import Invariants, Lab, get, put

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_sshd]

SERVICES = "sapi,napi"


@pytest.fixture
def lab_of(tmp_path):
    """lab_of(headnodes) -> a fresh running Lab; stopped afterwards, leaving nothing."""
    with lab_factory(tmp_path) as up:
        yield lambda headnodes: Lab(up(
            "--headnodes", str(headnodes), "--computenodes", "0", "--services", SERVICES,
            "--heartbeat-interval", "0.5", "--timeout", "90"))


def edit_config(lab, host, change):
    path = lab.dir / host / "etc" / "sdcadm.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc))


def stop_puller(lab, host):
    """Switch ``host``'s periodic pull off in its config and restart its agent
    (SIGTERM leaves its instances running, as a real agent restart does)."""
    edit_config(lab, host, lambda doc: doc.setdefault("restore_data", {}).update(enabled=False))
    status = {r["hostname"]: r for r in json.loads(lab.lab("status", "-j").stdout)}
    pid = status[host]["agent_pid"]
    procs.send(pid, signal.SIGTERM)
    # Gone, not merely silent: `lab start` leaves a live agent alone.
    wait_for(lambda: procs.gone(pid), 60, f"{host}'s agent (pid {pid}) to exit")
    lab.lab("start", host)
    wait_for(lambda: (lab.agent(host, "restore-data") or {}).get("enabled") is False, 90,
             f"{host}'s agent back with its puller off")


def sync_one(lab, host):
    """An on-demand sync of ``host`` only, through its agent's API."""
    doc = json.loads((lab.dir / "lab.json").read_text())
    server = next(s for s in doc["servers"] if s["hostname"] == host)
    url = f"http://{server['admin_ip']}:{doc['ports']['agent']}/v1/restore-data/sync"
    with requests.post(url, json={}, headers={"Authorization": f"Bearer {lab.token}"},
                       timeout=120) as resp:
        lines = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    assert resp.status_code == 200 and lines and lines[-1].get("ok"), lines[-1:]


def copy_holds(lab, host, key):
    """True when ``host``'s committed copy of sapi0's dataset lists ``key``
    (read from its disk, not from anything restore reports)."""
    manifest = lab.dir / host / "var" / "sdcadm" / "svc-restore-data" / "svc-sapi" / "manifest.json"
    ((_uuid, inst),) = json.loads(manifest.read_text())["instances"].items()
    return key in inst["dataset"]["files"]


def test_restore_seeds_from_the_headnode_with_the_newest_copy(lab_of):
    lab = lab_of(3)
    sapi = lab.insts()["sapi0"]
    put(sapi["url"], "before", b"both copies have this")
    lab.sdcadm("service", "sync-restore-data")
    stop_puller(lab, "hn1")
    put(sapi["url"], "fresh", b"only hn2's copy has this")
    sync_one(lab, "hn2")
    assert copy_holds(lab, "hn2", "fresh") and not copy_holds(lab, "hn1", "fresh")
    lab.lab("kill", "hn0")

    # Probed from outside every 50 ms throughout (scenario 7 of issue 8): no
    # singleton answers from two servers, and sapi's acknowledged writes are
    # all read back from the copy restore chose.
    urls = [i["url"] for i in lab.insts().values() if i["service"] in ("sapi", "napi")]
    with Invariants(lab, urls, stateful=("sapi", "napi")) as watch:
        done = lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y")
        lab.wait_healthy(("sapi", "napi"))
        watch.sample()
    assert watch.violations == [], watch.violations
    for url in urls:
        assert watch.answers.get(url, set()) <= {"hn1"}, (url, watch.answers)
    after = lab.insts()
    assert (after["sapi0"]["hostname"], after["sapi0"]["uuid"]) == ("hn1", sapi["uuid"])
    assert get(after["sapi0"]["url"], "fresh") == b"only hn2's copy has this"
    assert get(after["sapi0"]["url"], "before") == b"both copies have this"
    out = done.stdout + done.stderr
    assert "data of sapi0 (sapi):" in out and "from hn2: pulled here first" in out, out
    assert "pulling sapi0's copy from hn2" in out, out
    assert "seeded from hn2's copy" in out, out
    # hn1's restore data now holds that copy, and it verifies.
    assert copy_holds(lab, "hn1", "fresh")
    assert lab.sdcadm("restore-data", "verify", "sapi", check=False).returncode == 0


def test_restore_refuses_copies_older_than_the_limit_unless_accepted(lab_of):
    lab = lab_of(3)  # hn0 is killed: etcd keeps its quorum with 2 of 3
    sapi = lab.insts()["sapi0"]
    put(sapi["url"], "canary", b"written before the last sync")
    lab.sdcadm("service", "sync-restore-data")
    edit_config(lab, "hn1", lambda doc: doc.setdefault("restore", {}).update(max_data_age=1))

    def sapi_age():
        rows = (lab.agent("hn1", "restore-data") or {}).get("holdings", [])
        return next(r["age"] for r in rows if r["alias"] == "sapi0") > 2

    wait_for(sapi_age, 30, "hn1's copy of sapi0 to be older than the limit")
    lab.lab("kill", "hn0")

    refused = lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y", check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0, out
    assert "older than restore.max_data_age" in out and "sapi0 (sapi)" in out, out
    assert "napi0 (napi)" in out and "--accept-data-age" in out, out
    # Nothing moved: not fenced, not reassigned, nothing started on hn1.
    after = lab.insts()
    assert after["sapi0"]["hostname"] == "hn0" and after["napi0"]["hostname"] == "hn0"
    assert "F" not in lab.servers()["hn0"]["flags"]
    assert sapi["uuid"] not in lab.running_on("hn1")

    lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y", "--accept-data-age")
    lab.wait_healthy(("sapi", "napi"))
    assert get(lab.insts()["sapi0"]["url"], "canary") == b"written before the last sync"


def test_a_newer_copy_that_fails_its_checks_is_not_used(lab_of):
    """hn2's newer copy is changed in place after its sync (its agent still
    offers it, its signed manifest does not match it): restore pulls it, finds
    the difference, drops it, and seeds from hn1's own older copy."""
    lab = lab_of(3)
    sapi = lab.insts()["sapi0"]
    put(sapi["url"], "before", b"both copies have this")
    lab.sdcadm("service", "sync-restore-data")
    stop_puller(lab, "hn1")
    put(sapi["url"], "fresh", b"the real value")
    sync_one(lab, "hn2")
    rd = lab.dir / "hn2" / "var" / "sdcadm" / "svc-restore-data" / "svc-sapi"
    ((uuid, inst),) = json.loads((rd / "manifest.json").read_text())["instances"].items()
    with open(rd / "datasets" / uuid / "snapshots" / inst["dataset"]["snapshot"] / "fresh",
              "r+b") as f:
        f.write(b"THE FAKE VALUE")
    lab.lab("kill", "hn0")

    done = lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y")
    lab.wait_healthy(("sapi", "napi"))
    url = lab.insts()["sapi0"]["url"]
    assert get(url, "before") == b"both copies have this"
    assert get(url, "fresh") is None            # never the fake value, nor a half-checked copy
    out = done.stdout + done.stderr
    assert "hn2's copy of sapi0 not used" in out and "does not match its signed manifest" in out
    assert not copy_holds(lab, "hn1", "fresh")
    assert lab.sdcadm("restore-data", "verify", "sapi", check=False).returncode == 0

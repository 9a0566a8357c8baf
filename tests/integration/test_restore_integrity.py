"""`sdcadm service restore` never restores a copy that does not match its
signed manifest, on a real lab (2 headnodes; sapi, imgapi, vmapi, napi on
hn0), through the installed `sdcadm` command.

A file of sapi's dataset copy on hn1 is changed in place after the sync (the
manifest and its signature untouched): the restore must name sapi and the
file, exit non-zero, never serve the changed value, and still restore every
service whose copy is intact.
"""

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import clean_env, needs_sshd, run, running_lab
from tests.integration.test_restore_migrate import Lab, get, new_lab, put  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_sshd]

INTACT = ("imgapi", "vmapi", "napi")


def sapi_copy_of(lab, key, host="hn1"):
    """The file holding ``key`` in the dataset copy ``host`` would restore sapi from."""
    rd = lab.dir / host / "var" / "sdcadm" / "svc-restore-data" / "svc-sapi"
    manifest = json.loads((rd / "manifest.json").read_text())
    ((uuid, inst),) = manifest["instances"].items()
    assert key in inst["dataset"]["files"], inst["dataset"]["files"]
    return rd / "datasets" / uuid / "snapshots" / inst["dataset"]["snapshot"] / key


def test_restore_refuses_a_tampered_copy_and_restores_the_others(new_lab):
    lab = new_lab(headnodes=3)  # hn0 is killed: etcd keeps its quorum with 2 of 3
    before = lab.insts()
    sapi = next(i for i in before.values() if i["service"] == "sapi")
    put(sapi["url"], "canary", b"the real value")
    lab.sdcadm("service", "sync-restore-data")
    # Changed in place, same size: inode, size and manifest all as they were.
    # On every surviving headnode: restore would take another headnode's good
    # copy rather than refuse (test_restore_freshest.py).
    copy = sapi_copy_of(lab, "canary")
    for host in ("hn1", "hn2"):
        with open(sapi_copy_of(lab, "canary", host), "r+b") as f:
            f.write(b"THE FAKE VALUE")
    assert lab.sdcadm("restore-data", "verify", "sapi", check=False).returncode == 1
    lab.lab("kill", "hn0")

    done = lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y", check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "sapi0 (sapi)" in out and "changed: canary" in out, out
    assert "sync-restore-data sapi" in out, out

    after = lab.insts()
    for alias, inst in before.items():
        if inst["service"] in INTACT:
            assert (after[alias]["hostname"], after[alias]["uuid"]) == ("hn1", inst["uuid"])
    lab.wait_healthy(INTACT)
    # sapi was left where it was (on the fenced hn0): restorable from elsewhere.
    assert after["sapi0"]["hostname"] == "hn0"
    assert "F" in lab.servers()["hn0"]["flags"]
    assert get(after["sapi0"]["url"], "canary") != b"THE FAKE VALUE"
    assert sapi["uuid"] not in lab.running_on("hn1")
    # Nothing of the refused copy was cloned anywhere on hn1.
    assert not (lab.dir / "hn1" / "zones" / sapi["uuid"]).exists()
    scratch = lab.dir / "hn1" / "var" / "sdcadm" / "svc-restore-data" / ".verify"
    assert not scratch.exists() or list(scratch.iterdir()) == []

    # Once the copy is whole again, the same command finishes the job.
    with open(copy, "r+b") as f:
        f.write(b"the real value")
    lab.sdcadm("service", "restore", "--all", "--dead", "hn0", "-y")
    lab.wait_healthy(("sapi",))
    assert get(lab.insts()["sapi0"]["url"], "canary") == b"the real value"


def test_a_lab_signs_with_one_key_and_an_agent_without_it_refuses_to_start(tmp_path):
    """Every server of a lab has its own copy of the one DC key, in its own
    root; a configuration whose key file is gone is refused at the agent's
    start, saying how to make one."""
    with running_lab(tmp_path / "lab", "--headnodes", "2", "--computenodes", "0",
                     "--services", "sapi,binder") as directory:
        keys = {h: yaml.safe_load((directory / h / "etc" / "sdcadm.yaml").read_text())
                ["restore_data"]["key_file"] for h in ("hn0", "hn1")}
        assert keys == {h: str(directory / h / "etc" / "sdcadm" / "restore-data.key")
                        for h in ("hn0", "hn1")}
        assert len({Path(k).read_text() for k in keys.values()}) == 1
        assert all(oct(Path(k).stat().st_mode & 0o777) == "0o600" for k in keys.values())
        doc = yaml.safe_load((directory / "hn1" / "etc" / "sdcadm.yaml").read_text())
        doc["restore_data"]["key_file"] = str(tmp_path / "nope.key")
        doc["agent"]["port"] = 1   # never reached: the key is checked first
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(doc))
        started = run("sdcadm-agent", "--config", str(bad), check=False, timeout=30)
        assert started.returncode == 1, started
        assert "restore_data.key_file" in started.stderr and "nope.key" in started.stderr
        assert "head -c 32 /dev/urandom | base64" in started.stderr
        verify = run("sdcadm", "restore-data", "verify", check=False,
                     env=clean_env(SDCADM_CONFIG=str(bad)))
        assert verify.returncode == 1 and "restore_data.key_file" in verify.stderr, verify

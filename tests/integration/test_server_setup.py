"""A new server on a real lab: its agent registers it (not set up), it runs
nothing, `sdcadm server setup` takes it into the DC; refusals change nothing."""

import json

import pytest

from sdcadm.lab.state import load_state
from sdcadm.procedures.agent_client import AgentClient
from tests.conftest import env_of, lab_factory, needs_sshd, run, wait_for

pytestmark = [pytest.mark.integration, needs_sshd]


def sdcadm(directory, *argv):
    return run("sdcadm", *argv, env=env_of(directory, "hn0"), check=False)


def servers(directory):
    out = run("sdcadm", "server", "ls", "-j", env=env_of(directory, "hn0")).stdout
    return {s["hostname"]: s for s in json.loads(out)}


def agent_status(directory, hostname):
    state = load_state(directory)
    server = state.server(hostname)
    token = state.token_path("hn0").read_text().strip()
    url = f"http://{server['admin_ip']}:{state.ports['agent']}"
    return AgentClient(url, token).status()


def test_a_registered_server_runs_nothing_until_set_up(tmp_path):
    with lab_factory(tmp_path) as up:
        check_setup(up("--headnodes", "1", "--computenodes", "2", "--unregistered", "1",
                       "--services", "sapi", "--heartbeat-interval", "0.5"))


def check_setup(directory):
    lab = load_state(directory)
    cn1 = lab.server("cn1")
    # `lab up` waited for cn1 to heartbeat: its agent registered it
    listed = servers(directory)
    assert listed["cn1"]["uuid"] == cn1["uuid"] and listed["cn1"]["admin_ip"] == cn1["admin_ip"]
    assert listed["cn1"]["flags"] == "-----" and listed["cn1"]["status"] == "running"
    assert listed["cn0"]["flags"].startswith("S")
    status = agent_status(directory, "cn1")
    assert status["registration"] == "registered" and status["setup"] is False
    assert status["ownership_confirmed"] is False  # starts no instance

    # nothing may be placed on it before it is set up
    refused = sdcadm(directory, "create", "sapi", "--server", "cn1", "--alias", "sapi9", "-y")
    assert refused.returncode == 1 and "not set up" in refused.stderr, refused.stderr

    # bad input: refused with the reason, nothing changed
    unknown = sdcadm(directory, "server", "setup", "cn1", "nosuch", "-y")
    assert unknown.returncode == 1 and "no server named 'nosuch'" in unknown.stderr
    assert "cn1" in unknown.stderr  # the known servers are named
    assert servers(directory)["cn1"]["setup"] is False  # one refused: none set up
    run("sdcadm", "lab", "kill", "--dir", str(directory), "cn1")
    wait_for(lambda: servers(directory)["cn1"]["status"] == "unreachable", 30,
             "cn1 to be unreachable")
    down = sdcadm(directory, "server", "setup", "cn0", "cn1", "-y")
    assert down.returncode == 1 and "cn1 is unreachable" in down.stderr, down.stderr
    assert "cn0" not in down.stderr.split("hint:")[0]  # set up already: not a problem
    assert "sdcadm server setup cn1" in down.stderr  # how to go on
    assert servers(directory)["cn1"]["setup"] is False
    dry = sdcadm(directory, "server", "setup", "cn1", "-n")
    assert dry.returncode == 1  # a dry run checks as much as a real one

    run("sdcadm", "lab", "start", "--dir", str(directory), "cn1")
    wait_for(lambda: servers(directory)["cn1"]["status"] == "running", 30, "cn1 to run again")
    assert servers(directory)["cn1"]["setup"] is False  # restarting did not set it up

    dry = sdcadm(directory, "server", "setup", "cn1", "-n")
    assert dry.returncode == 0 and "set up cn1" in dry.stdout, dry.stderr
    assert servers(directory)["cn1"]["setup"] is False

    done = sdcadm(directory, "server", "setup", "cn0", "cn1", "-y", "-j")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "succeeded"
    (proc,) = result["procedures"]
    assert [s["name"] for s in proc["steps"]] == ["set up cn1", "wait for cn1's agent"]
    assert servers(directory)["cn1"]["flags"] == "S----"
    status = agent_status(directory, "cn1")
    assert status["setup"] is True and status["ownership_confirmed"] is True

    again = sdcadm(directory, "server", "setup", "cn1", "-y")
    assert again.returncode == 0 and "already set up" in again.stdout, again.stderr
    made = sdcadm(directory, "create", "sapi", "--server", "cn1", "--alias", "sapi9", "-y")
    # sapi runs once: refused for that reason now, no longer because cn1 is not set up
    assert made.returncode == 1 and "not set up" not in made.stderr, made.stderr

"""Procedures end to end on a real lab, through the installed `sdcadm` command:
`instance restart` restarts the real process, `task ls/get` show the run,
`lab watch` measures what a killed server costs each service."""

import json
import signal
import subprocess
import urllib.request

import pytest

from tests.conftest import (
    BIN,
    clean_env,
    env_of,
    needs_sshd,
    pinged_by_others,
    run,
    running_lab,
    wait_for,
)

pytestmark = [pytest.mark.integration, needs_sshd]

HEARTBEAT = 0.5


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """3 headnodes (a killed one leaves the store's etcd its quorum); sapi
    (sapi0 on hn0) and binder (HA: binder0, binder1 on hn1, binder2 on hn2)."""
    directory = tmp_path_factory.mktemp("lab") / "dc"
    with running_lab(directory, "--headnodes", "3", "--computenodes", "0", "--services",
                     "sapi,binder", "--heartbeat-interval", str(HEARTBEAT), "--timeout", "90"):
        yield directory, env_of(directory, "hn0")


def instance(env, alias):
    found = json.loads(run("sdcadm", "insts", "-j", f"alias={alias}", env=env).stdout)
    return found[0]


def ping(url, timeout=2.0):
    with urllib.request.urlopen(url + "/ping", timeout=timeout) as resp:
        return json.loads(resp.read())


def tasks(env):
    return json.loads(run("sdcadm", "task", "ls", "-j", env=env).stdout)


def wait_healthy(env, timeout=60):
    wait_for(lambda: run("sdcadm", "check-health", "-q", env=env, check=False).returncode == 0,
             timeout, "the lab becoming healthy again", interval=0.3)


def test_dry_run_changes_nothing(lab):
    directory, env = lab
    sapi0 = instance(env, "sapi0")
    before, count = ping(sapi0["url"])["pid"], len(tasks(env))
    result = run("sdcadm", "instance", "restart", "sapi0", "-n", env=env)
    assert "This will make the following changes:" in result.stdout
    assert "restart instance sapi0" in result.stdout and "Dry run" in result.stdout
    assert ping(sapi0["url"])["pid"] == before and len(tasks(env)) == count


def test_restart_replaces_the_process_and_records_the_task(lab):
    directory, env = lab
    sapi0 = instance(env, "sapi0")
    before = ping(sapi0["url"])["pid"]
    result = run("sdcadm", "instance", "restart", "sapi0", "-y", "-j", env=env)
    doc = json.loads(result.stdout)
    assert doc["state"] == "succeeded", result.stderr
    step = doc["procedures"][0]["steps"][0]
    assert step["name"] == "restart sapi0" and step["state"] == "succeeded"
    after = ping(sapi0["url"])["pid"]
    assert after != before and step["result"]["old_pid"] == before
    assert step["result"]["new_pid"] == after and step["result"]["downtime_s"] >= 0
    assert "(1/1) restart sapi0" in result.stderr and "This will make" in result.stderr
    # the agent agrees: it supervises the new process
    hn0 = next(s for s in json.loads(run("sdcadm", "server", "ls", "-j", env=env).stdout)
               if s["hostname"] == "hn0")
    token = (directory / "hn0" / "etc" / "sdcadm" / "agent-token").read_text().strip()
    req = urllib.request.Request(hn0["agent_url"] + "/v1/instances",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        supervised = {i["alias"]: i for i in json.loads(resp.read())}
    assert supervised["sapi0"]["pid"] == after and supervised["sapi0"]["restarts"] >= 1
    listed = [t for t in tasks(env) if t["uuid"] == doc["task"]]
    assert listed and listed[0]["state"] == "succeeded"
    assert listed[0]["name"] == "instance-restart sapi0" and listed[0]["progress"] == "1/1"
    shown = json.loads(run("sdcadm", "task", "get", doc["task"][:8], "-j", env=env).stdout)
    assert shown["uuid"] == doc["task"] and shown["steps"][0]["result"]["new_pid"] == after
    log = doc["log"]
    assert log.startswith(str(directory / "hn0" / "var" / "log" / "sdcadm" / "instance-restart-"))
    events = [json.loads(line)["event"] for line in open(log)]
    assert "step-start" in events and "step-end" in events and events[-1] == "run-end"
    human = run("sdcadm", "task", "get", doc["task"], env=env).stdout
    assert "state:    succeeded" in human and "restart sapi0" in human


def test_unknown_alias_is_refused_with_known_list(lab):
    _, env = lab
    count = len(tasks(env))
    result = run("sdcadm", "instance", "restart", "sapi0", "nope", "-y", env=env, check=False)
    assert result.returncode == 1
    assert "unknown instance 'nope'" in result.stderr
    assert "known instances: binder0, binder1, binder2, sapi0" in result.stderr
    assert len(tasks(env)) == count


def test_without_terminal_and_without_yes_is_refused(lab):
    _, env = lab
    result = run("sdcadm", "instance", "restart", "sapi0", env=env, check=False)
    assert result.returncode == 1 and "pass -y" in result.stderr


def test_instance_on_unreachable_server_is_refused(lab):
    directory, env = lab
    run("sdcadm", "lab", "kill", "--dir", str(directory), "hn1")
    try:
        result = wait_for(
            lambda: (r := run("sdcadm", "instance", "restart", "binder1", "-y", env=env,
                              check=False)).returncode != 0 and r,
            20, "a restart on the killed hn1 refused", interval=0.3)
        assert result.returncode == 3, result.stderr
        assert "binder1: its server hn1" in result.stderr
        assert "unreachable" in result.stderr or "does not answer" in result.stderr
    finally:
        run("sdcadm", "lab", "start", "--dir", str(directory), "hn1")
    wait_healthy(env)


def test_watch_sees_the_outage_of_a_killed_server_only_where_it_hurts(lab):
    directory, env = lab
    sapi0, binder1 = instance(env, "sapi0"), instance(env, "binder1")
    # As started at a terminal: a suite run as a background job (`cmd &` in a
    # script) inherits SIGINT ignored, and Ctrl-C would then never reach it.
    watch = subprocess.Popen(
        [str(BIN / "sdcadm"), "lab", "watch", "--dir", str(directory), "-j"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        pinged_by_others(sapi0["url"], 2, "the watch probing sapi0 while it runs")
        run("sdcadm", "lab", "kill", "--dir", str(directory), "hn0")
        # binder1 (hn1) is probed at every tick, with sapi0 (now dead) beside it
        pinged_by_others(binder1["url"], 3, "three ticks of the watch after hn0 died")
        watch.send_signal(signal.SIGINT)  # Ctrl-C: the watch ends and reports
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    summary = json.loads(out)
    sapi, binder = summary["services"]["sapi"], summary["services"]["binder"]
    assert sapi["failed"] > 0 and sapi["downtime_s"] > 0 and sapi["longest_outage_s"] > 0
    assert sapi["outages"] == 1 and sapi["probes"] > sapi["failed"]  # up, then down for good
    assert binder["failed"] == 0 and binder["probes"] > 0  # binder1 on hn1 kept answering
    assert 0 < sapi["downtime_s"] <= summary["duration_s"]
    run("sdcadm", "lab", "start", "--dir", str(directory), "hn0")
    wait_healthy(env)

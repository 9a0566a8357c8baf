"""Instance leases on a real lab (docs/recovery.md, "Instance leases and the
dead margin"): cut off from the DC store, every singleton is gone by its
lease's end plus the margin's notice and kill terms, one that ignores SIGTERM
included; HA and other non-singleton instances keep running; a frozen
singleton that wakes up after its lease never acknowledges a write; a write
acknowledged before the outage is readable after it. Everything is checked
from outside: HTTP probes and /proc, never the agent's own records."""

import http.client
import json
import os
import signal
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sdcadm import instance_lease
from sdcadm.health import probe
from sdcadm.lab import procs
from sdcadm.procedures.planning.common import KILL_GRACE
from tests.conftest import env_of, lab_store_config, needs_sshd, run, running_lab, store_outage, wait_for
from tests.integration.test_restore_migrate import pause_outside_store_tx

pytestmark = [pytest.mark.integration, needs_sshd]

SINGLETONS = ("sapi", "amonredis", "rabbitmq")   # stateful, stateful, stateless
OTHERS = ("binder", "assets")                     # HA; neither HA nor singleton
RECONCILE = 1.0                                   # the lab's agent.reconcile_interval (= its heartbeat interval)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    directory = tmp_path_factory.mktemp("leases") / "dc"
    with running_lab(directory, "--headnodes", "1", "--computenodes", "0",
                     "--services", ",".join(SINGLETONS + OTHERS)):
        yield directory


def insts(directory):
    rows = json.loads(run("sdcadm", "insts", "-j", env=env_of(directory, "hn0")).stdout)
    return {i["service"]: i for i in rows}


def ping(url):
    """The /ping answer of a workload (2xx only), else None."""
    try:
        conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=2)
        conn.request("GET", "/ping")
        resp = conn.getresponse()
        return json.loads(resp.read()) if resp.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None


def put(url, key, body, timeout=30):
    """PUT /data/KEY: the HTTP status, or the error when nothing answered."""
    parts = urlsplit(url)
    try:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        conn.request("PUT", f"/data/{key}", body=body)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return repr(e)


def get(url, key):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", f"/data/{key}")
    resp = conn.getresponse()
    return resp.status, resp.read()


def lease_file(directory, uuid):
    return Path(directory) / "hn0" / "zones" / uuid / "lease"


def all_serving(directory):
    """Every instance answers /ping; {service: (instance, its /ping)}."""
    now = insts(directory)
    pings = {s: ping(now[s]["url"]) for s in SINGLETONS + OTHERS}
    if all(pings.values()):
        return {s: (now[s], pings[s]) for s in pings}
    return None


def healthy(directory):
    return wait_for(lambda: all_serving(directory), 60, "every instance serving")


def agent_pid(directory):
    return int((Path(directory) / "hn0" / "var" / "run" / "sdcadm-agent.pid").read_text())


def test_every_singleton_is_gone_by_its_lease_end_even_one_ignoring_sigterm(lab):
    serving = healthy(lab)
    sapi = serving["sapi"][0]["url"]
    assert put(sapi, "before-outage", b"acknowledged") == 201
    # sapi ignores SIGTERM from now on (the workload's test-only SIGUSR1)
    os.kill(serving["sapi"][1]["pid"], signal.SIGUSR1)
    wait_for(lambda: (ping(sapi) or {}).get("ignores_sigterm"), 20, "sapi ignoring SIGTERM")
    singles = {s: serving[s] for s in SINGLETONS}
    for service, (inst, answer) in singles.items():
        assert answer["leased"], f"{service} (a singleton) runs without a lease"
    for service in OTHERS:
        assert not serving[service][1]["leased"], f"{service} is not a singleton: no lease"
        assert not lease_file(lab, serving[service][0]["uuid"]).exists()

    late = []            # (service, what) seen alive after lease end + notice + kill grace
    ends = {}            # service -> the latest lease end its file ever held

    def all_gone():
        now = instance_lease.now()
        gone = True
        for service, (inst, answer) in singles.items():
            deadline, _ = instance_lease.read(lease_file(lab, inst["uuid"]), inst["uuid"])
            if deadline:
                ends[service] = max(ends.get(service, 0.0), deadline)
            answers = ping(inst["url"]) is not None
            runs = not procs.gone(answer["pid"])
            if answers or runs:
                gone = False
                if service in ends and now > ends[service] + RECONCILE + KILL_GRACE:
                    late.append((service, "answers" if answers else "runs"))
        return gone

    with store_outage(lab_store_config(lab)):
        wait_for(all_gone, 30, "every singleton gone without its lease", interval=0.02)
        assert late == [], f"singletons alive after their lease's end + notice + kill: {late}"
        for service in OTHERS:
            inst, answer = serving[service]
            assert probe(inst["url"] + "/ping") is None, f"{service} must keep running"
            assert ping(inst["url"])["pid"] == answer["pid"], f"{service} was restarted"
    back = healthy(lab)
    assert back["sapi"][1]["pid"] != serving["sapi"][1]["pid"]
    assert get(sapi, "before-outage") == (200, b"acknowledged"), \
        "a write acknowledged before the outage is lost"


def test_a_frozen_singleton_never_acknowledges_after_its_lease(lab):
    """SIGSTOP sapi with a PUT in flight, cut the store: its agent SIGKILLs it
    at its lease's end, frozen as it is; SIGCONT finds nothing to wake, and the
    PUT is never acknowledged."""
    serving = healthy(lab)
    inst, answer = serving["sapi"]
    os.kill(answer["pid"], signal.SIGSTOP)
    try:
        result = []
        writer = threading.Thread(target=lambda: result.append(
            put(inst["url"], "in-flight-frozen", b"never acknowledged")))
        writer.start()
        with store_outage(lab_store_config(lab)):
            wait_for(lambda: procs.gone(answer["pid"]), 30, "the frozen sapi killed at its lease end")
            try:
                os.kill(answer["pid"], signal.SIGCONT)
            except ProcessLookupError:
                pass
            writer.join(60)
            assert not writer.is_alive()
            assert result[0] not in range(200, 300), f"a fenced sapi acknowledged: {result}"
            assert put(inst["url"], "during-outage", b"x", timeout=5) not in range(200, 300)
    finally:
        try:
            os.kill(answer["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    healthy(lab)


def test_a_singleton_of_a_hung_agent_fences_itself(lab):
    """The agent hangs (SIGSTOP: nobody renews, nobody kills) and sapi is
    frozen with a PUT in flight. Thawed after its lease's end, sapi finds its
    lease expired and answers 503 (or nothing, if its lease watch ends it
    first), never 201, and exits: with its agent still hung."""
    serving = healthy(lab)
    inst, answer = serving["sapi"]
    path = lease_file(lab, inst["uuid"])
    agent = agent_pid(lab)
    pause_outside_store_tx(agent, lab)
    try:
        os.kill(answer["pid"], signal.SIGSTOP)
        end, why = instance_lease.read(path, inst["uuid"])
        assert end is not None, why
        result = []
        writer = threading.Thread(target=lambda: result.append(
            put(inst["url"], "in-flight-hung", b"must not be acknowledged")))
        writer.start()
        wait_for(lambda: instance_lease.now() > end, 30, "sapi's lease running out")
        os.kill(answer["pid"], signal.SIGCONT)
        writer.join(60)
        assert not writer.is_alive()
        # 503, or nothing when its lease watch thread ended it first: never 2xx
        assert result[0] == 503 or isinstance(result[0], str), \
            f"a sapi past its lease answered {result}"
        wait_for(lambda: procs.gone(answer["pid"]), 30, "sapi exiting on its own, agent hung")
        assert ping(inst["url"]) is None
    finally:
        for pid in (answer["pid"], agent):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    healthy(lab)

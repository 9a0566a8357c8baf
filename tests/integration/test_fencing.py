"""Lease-based self-fencing, on a real lab: an agent cut off from the DC
store longer than its lease stops its singleton instances (another headnode
may restore them once the margin passes); HA instances keep running; when the
store answers again the singletons come back."""

import json

import pytest

from sdcadm.health import probe
from tests.conftest import env_of, lab_store_config, needs_sshd, run, running_lab, store_outage, wait_for

pytestmark = [pytest.mark.integration, needs_sshd]


@pytest.fixture
def lab(tmp_path):
    directory = tmp_path / "dc"
    with running_lab(directory, "--headnodes", "1", "--computenodes", "0", "--services",
                     "sapi,binder", "--heartbeat-interval", "0.4"):
        insts = json.loads(run("sdcadm", "insts", "-j", env=env_of(directory, "hn0")).stdout)
        yield directory, {i["service"]: i for i in insts}


def wait(predicate, what, timeout=30):
    wait_for(predicate, timeout, what, interval=0.1)


def test_lost_lease_stops_singletons_and_they_return(lab):
    directory, insts = lab
    sapi, binder = insts["sapi"]["url"] + "/ping", insts["binder"]["url"] + "/ping"
    assert probe(sapi) is None and probe(binder) is None
    with store_outage(lab_store_config(directory)):  # the store is gone for every agent
        wait(lambda: probe(sapi) is not None, "sapi (a singleton) kept running without its lease")
        assert probe(binder) is None, "binder (HA) must keep running"
    wait(lambda: probe(sapi) is None, "sapi did not come back with the store")

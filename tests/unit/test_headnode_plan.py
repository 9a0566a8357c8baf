"""headnode-setup's decisions (planning/headnode_plan.py): plain facts in, a plan out."""

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.model import Instance, Network, Server, Service
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.headnode_plan import TooManyHeadnodes, plan_headnode_setup, plan_reservations, \
    reservation_lines, single_instance_services, version_tuple

NOW = 1000.0
HN = "00000000-0000-4000-8000-000000000001"
CN = "00000000-0000-4000-8000-000000000002"
CN2 = "00000000-0000-4000-8000-000000000003"


def server(uuid, host, **kw):
    base = dict(uuid=uuid, hostname=host, admin_ip="127.9.9.1", setup=True, agent_port=5309,
                last_heartbeat=NOW - 1)
    base.update(kw)
    return Server(**base)


def status(uuid, version="0.1.0"):
    return {"server_uuid": uuid, "version": version}


def plan(asked, servers=None, instances=(), answers=None, **kw):
    servers = servers if servers is not None else asked
    answers = answers if answers is not None else {s.uuid: status(s.uuid) for s in asked}
    return plan_headnode_setup(asked, servers, list(instances), answers, {"sapi", "binder"},
                               now=NOW, heartbeat_timeout=15, **kw)


def test_a_live_set_up_compute_node_is_made_a_headnode():
    hn, cn = server(HN, "hn0", headnode=True), server(CN, "cn0")
    p = plan([cn], [hn, cn])
    assert p.servers == (cn,) and p.headnodes_after == 2 and p.warnings == ()


def test_every_problem_of_every_server_is_reported_together():
    hn = server(HN, "hn0", headnode=True)
    unsetup = server(CN, "cn0", setup=False)
    down = server(CN2, "cn1", last_heartbeat=NOW - 100)
    with pytest.raises(NotViable) as exc:
        plan([hn, unsetup, down], [hn, unsetup, down])
    text = str(exc.value)
    assert "hn0 is already a headnode" in text
    assert "cn0 is not set up (sdcadm server setup cn0 first)" in text
    assert "cn1 is unreachable" in text
    assert "nothing was changed" in exc.value.hint


def test_a_headnode_is_finished_not_refused_when_the_same_command_resumes():
    cn = server(CN, "cn0", headnode=True)
    assert plan([cn], resuming=True).servers == (cn,)


@pytest.mark.parametrize("answer, reason", [
    ("the agent at http://127.9.9.1:5309 does not answer", "agent does not answer"),
    (status(CN, "0.0.9"), "needs 0.1.0 or later"),
    (status(CN, "dev"), "needs 0.1.0 or later"),
    (status(HN), "is not cn0's"),
])
def test_the_agent_must_answer_as_that_server_and_be_recent(answer, reason):
    cn = server(CN, "cn0")
    with pytest.raises(NotViable, match=reason):
        plan([cn], answers={CN: answer})


def test_a_server_whose_agent_does_not_pull_restore_data_is_refused():
    cn = server(CN, "cn0")
    with pytest.raises(NotViable, match="restore_data.enabled is false"):
        plan([cn], pullers={CN: {"enabled": False, "headnode": False}})
    assert plan([cn], pullers={CN: {"enabled": True}}).servers == (cn,)


def test_more_than_five_headnodes_needs_the_operators_word():
    hns = [server(f"00000000-0000-4000-8000-0000000001{n:02d}", f"hn{n}", headnode=True)
           for n in range(5)]
    cn = server(CN, "cn0")
    with pytest.raises(TooManyHeadnodes, match="6 headnodes") as exc:  # the CLI asks again
        plan([cn], hns + [cn])
    assert "--many-headnodes" in exc.value.hint
    assert plan([cn], hns + [cn], many=True).headnodes_after == 6


def test_instances_outside_the_core_catalog_are_a_warning():
    cn = server(CN, "cn0")
    mine = Instance(uuid="i1", alias="webshop0", service="webshop", server_uuid=CN, image="x",
                    admin_ip="127.9.9.9")
    (line,) = plan([cn], instances=[mine]).warnings
    assert "webshop0" in line and "outside the core catalog" in line


def test_version_tuple():
    assert version_tuple("0.10.1") > version_tuple("0.9.9")
    assert version_tuple("x") is None and version_tuple(None) is None


def test_single_instance_services_are_the_non_ha_ones():
    catalog = load_catalog()
    services = [Service("sapi"), Service("binder"), Service("custom", params={"ha": True}),
                Service("other")]
    assert single_instance_services(services, catalog.services) == ["other", "sapi"]


def test_recovery_addresses_come_from_the_top_and_are_not_taken_twice():
    net = Network("admin", "10.0.0.0/29", allocations={"10.0.0.6": "x"},
                  quarantine={"10.0.0.5": {"owner": "y", "until": NOW + 10}})
    add, short = plan_reservations(net, ["assets", "sapi"], NOW)
    assert add == {"10.0.0.4": "recovery:assets", "10.0.0.3": "recovery:sapi"} and short == []
    net.reservations = add
    assert plan_reservations(net, ["assets", "sapi"], NOW) == ({}, [])  # idempotent


def test_a_network_without_room_is_said_and_what_fits_is_reserved():
    net = Network("admin", "10.0.0.0/30", allocations={"10.0.0.1": "x"})
    add, short = plan_reservations(net, ["assets", "sapi", "vmapi"], NOW)
    assert add == {"10.0.0.2": "recovery:assets"} and short == ["sapi", "vmapi"]
    lines = reservation_lines(net, ["assets", "sapi", "vmapi"], NOW)
    assert "no room left" in lines[-1] and "sapi, vmapi" in lines[-1]

"""Whether a server may be set up (planning/setup_plan.py): plain facts in, a decision out."""

import pytest

from sdcadm.model import Server
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.setup_plan import alive_problems, plan_server_setup

U = "5e5e5e5e-0000-4000-8000-000000000001"
NOW = 1000.0


def server(**kw):
    base = dict(uuid=U, hostname="cn1", admin_ip="127.9.9.9", setup=False, agent_port=5309,
                last_heartbeat=NOW - 1)
    base.update(kw)
    return Server(**base)


PONG = {"ok": True, "server_uuid": U, "hostname": "cn1"}


def test_a_live_registered_server_is_set_up():
    assert plan_server_setup(server(), PONG, now=NOW, heartbeat_timeout=15) is True


def test_a_set_up_server_is_nothing_to_do_even_when_down():
    assert plan_server_setup(server(setup=True, last_heartbeat=0), "no answer", now=NOW,
                             heartbeat_timeout=15) is False


@pytest.mark.parametrize("changes, answer, reason", [
    ({"last_heartbeat": NOW - 60}, PONG, "cn1 is unreachable (last heartbeat 60s ago)"),
    ({"fenced": True}, PONG, "cn1 is fenced"),
    ({}, "the agent at http://127.9.9.9:5309 does not answer", "agent does not answer"),
    ({}, {"server_uuid": "5e5e5e5e-0000-4000-8000-000000000002"}, "is not cn1's"),
    ({"agent_port": 0}, PONG, "no agent port"),
])
def test_refusals_say_why_and_how_to_go_on(changes, answer, reason):
    with pytest.raises(NotViable, match="cn1 cannot be set up") as exc:
        plan_server_setup(server(**changes), answer, now=NOW, heartbeat_timeout=15)
    assert reason in str(exc.value)
    assert "sdcadm server setup cn1" in exc.value.hint


def test_every_problem_is_reported_together():
    problems = alive_problems(server(last_heartbeat=NOW - 60), "refused", now=NOW,
                              heartbeat_timeout=15)
    assert len(problems) == 2

"""The drill's split of a restore's time (lab/drill.py rto_parts): pure."""

from sdcadm.lab.drill import rto_parts


def test_each_step_its_time_and_the_bookkeeping_between():
    steps = [
        {"name": "fence hn0", "started": 100.2, "finished": 100.6, "elapsed_s": 0.4},
        {"name": "restore level 1: sapi, napi", "started": 100.7, "finished": 101.5,
         "elapsed_s": 0.8, "result": {"instances": {"sapi0": {"level_s": 0.7},
                                                   "napi0": {"level_s": 0.5}},
                                     "parts": {"move_s": 0.03, "agent_s": 0.1,
                                               "answer_s": 0.55, "unknown": 1}}},
        {"name": "restore level 2: vmapi", "started": 101.55, "finished": 102.0,
         "elapsed_s": 0.45, "result": {"instances": {}}},
        {"name": "restore level 3: never run", "state": "pending"},
    ]
    got = rto_parts(steps, 100.0)
    assert got["steps"] == [
        {"step": "fence hn0", "s": 0.4},
        {"step": "restore level 1: sapi, napi", "s": 0.8, "slowest_healthy_s": 0.7,
         "move_s": 0.03, "agent_s": 0.1, "answer_s": 0.55},
        {"step": "restore level 2: vmapi", "s": 0.45},
    ]
    assert got["between_steps_s"] == round(0.2 + 0.1 + 0.05, 3)


def test_a_task_not_started_has_no_parts():
    assert rto_parts([{"name": "x", "state": "pending"}], None) == {"steps": [],
                                                                     "between_steps_s": 0.0}


def test_heal_is_refused_where_it_cannot_follow():
    import pytest

    from sdcadm.errors import LabError
    from sdcadm.lab.heal import check_heal

    check_heal("kill", ["hn0"], 1)
    for args, why in ((("partition", ["hn0"], 2), "--fault kill"),
                      (("kill", ["hn0", "hn1"], 2), "--lose names 2"),
                      (("kill", ["hn0"], 0), "--computenodes 1")):
        with pytest.raises(LabError) as e:
            check_heal(*args)
        assert why in str(e.value)


def test_the_heal_report_lists_each_step_with_its_time():
    from sdcadm.lab.heal import render

    report = {"total_s": 12.5, "deleted": "hn0", "new_headnode": "cn0",
              "steps": [{"step": "sdcadm server delete hn0 --force", "s": 1.25, "ok": True},
                        {"step": "sdcadm server headnode-setup cn0", "s": 11.25, "ok": False}],
              "ha": {"binder": ["cn0", "hn1", "hn2"]}, "members": ["cn0", "hn1", "hn2"],
              "status_ok": False}
    assert render(report) == [
        "", "heal (12.5s): hn0 deleted, cn0 made a headnode",
        "     1.25s  sdcadm server delete hn0 --force",
        "    11.25s  sdcadm server headnode-setup cn0  FAILED",
        "  binder   on cn0, hn1, hn2",
        "  store members: cn0, hn1, hn2",
        "  sdcadm status: NOT OK"]

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

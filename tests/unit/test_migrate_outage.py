"""``Outage.measure``: the downtime migrate reports, from the samples its
prober took (pure folding; no thread is started here)."""

from sdcadm.procedures.migrate import Outage


def measured(samples):
    outage = Outage([])
    outage.samples = [(t, "svc", ok) for t, ok in samples]
    return outage.measure()


def test_downtime_runs_from_the_first_failed_probe_to_the_first_good_one():
    got = measured([(0.0, True), (0.05, True), (0.10, False), (0.15, False), (0.30, False),
                    (0.35, True), (0.40, True)])
    assert got == {"probes": 7, "failed_probes": 3, "downtime_s": 0.25, "resolution_s": 0.15}


def test_make_before_break_is_no_downtime():
    assert measured([(0.0, True), (0.05, True)]) == {
        "probes": 2, "failed_probes": 0, "downtime_s": 0.0, "resolution_s": 0.05}
    assert measured([]) == {"probes": 0, "failed_probes": 0, "downtime_s": 0.0,
                            "resolution_s": 0.0}


def test_the_longest_outage_is_reported():
    got = measured([(0.0, False), (0.1, True), (1.0, False), (1.5, True)])
    assert got["downtime_s"] == 0.5 and got["failed_probes"] == 2


def test_saw_up_closes_an_outage_the_thread_has_not_seen_end():
    outage = Outage([])
    outage.samples = [(0.0, "svc", True), (0.1, "svc", False)]
    outage.saw_up()
    got = outage.measure()
    assert got["failed_probes"] == 1 and got["downtime_s"] > 0

"""The drill's floor: one lab workload, laid out as its image is, started and
answering (a real process on a free loopback port)."""

from sdcadm.lab import floor


def test_a_workload_laid_out_as_its_image_starts_and_answers():
    seconds = floor.start_to_answer()
    assert seconds is not None and 0 < seconds < floor.TIMEOUT


def test_a_workload_that_never_answers_gives_no_floor(monkeypatch):
    monkeypatch.setattr(floor, "image_files", lambda: {"workload.py": b"raise SystemExit(3)\n"})
    assert floor.start_to_answer() is None
    assert floor.floor_s(runs=2) is None

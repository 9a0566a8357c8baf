"""The one event hierarchy: every event survives its JSON form, and what a
peer sends that does not fit is dropped, not raised; the CLI renders events
by type."""

import json

import pytest

from sdcadm.cli.progress import describe
from sdcadm.procedures.events import StepFinished
from sdcadm.progress import Event, Progress
from sdcadm.restore_data.client import HeadnodeSync, _event
from sdcadm.restore_data.events import InstanceResult, ServiceResult, SyncSummary

HN1 = "11111111-1111-4111-8111-111111111111"


def wire(event):
    return json.loads(json.dumps(event.to_dict()))


@pytest.mark.parametrize("event", [
    Progress("restore-data/sapi", "sapi0 from hn0", 1, 3),
    Progress("send", "zones/x", done=4096),
    InstanceResult("u", "sapi0", "hn0", "ok", snapshot="s1", bytes=10, duration=0.5),
    ServiceResult("sapi", "failed", "why", 1.5, ({"uuid": "u", "status": "failed"},)),
    SyncSummary(HN1, "hn1", False, {"sapi": "failed"}, ("imgapi/u",), 1.0, 2.0, None),
    StepFinished("migrate", "done", procedure="migrate", elapsed=1.0, verified=True),
])
def test_every_event_survives_its_json_form(event):
    assert Event.from_dict(wire(event)) == event


def test_a_restore_data_event_is_a_progress_event_kind():
    assert isinstance(ServiceResult("sapi", "ok"), Event)
    assert wire(ServiceResult("sapi", "ok"))["event"] == "ServiceResult"


@pytest.mark.parametrize("doc", [
    {"event": "SomethingNewer", "x": 1},            # a newer agent
    {"event": "ServiceResult", "status": "ok"},     # a required field missing
    {"service": "sapi", "status": "ok"},            # no kind at all
    ["ServiceResult"],
    None,
])
def test_what_does_not_fit_is_dropped(doc):
    assert Event.from_dict(doc) is None


def test_unknown_fields_are_ignored():
    doc = dict(wire(ServiceResult("sapi", "ok")), added_later=True)
    assert Event.from_dict(doc) == ServiceResult("sapi", "ok")


def test_the_client_keeps_results_and_summary_typed():
    seen = []
    result = HeadnodeSync("hn1", HN1, "http://x")
    for line in (json.dumps(wire(Progress("restore-data", "1 service(s) to sync", 0, 1))),
                 "not json", json.dumps({"event": "Unknown"}),
                 json.dumps(wire(ServiceResult("sapi", "ok", duration=0.2))),
                 json.dumps(wire(SyncSummary(HN1, "hn1", True, {"sapi": "ok"})))):
        _event(result, line.encode(), lambda host, event: seen.append((host, event)))
    assert result.services == {"sapi": ServiceResult("sapi", "ok", duration=0.2)}
    assert result.summary == SyncSummary(HN1, "hn1", True, {"sapi": "ok"})
    assert [type(e).__name__ for _, e in seen] == ["Progress", "ServiceResult", "SyncSummary"]
    assert result.ok


@pytest.mark.parametrize("event,text", [
    (Progress("s", "copying", 5, 20), "copying [#####...............] 5/20"),
    (Progress("s", "sent", 1536, None), "sent 1.5K"),
    (Progress("s", "waiting"), "waiting"),
    (ServiceResult("sapi", "diverged", "no common snapshot"), "sapi: diverged: no common snapshot"),
    (SyncSummary(HN1, "hn1", True, {"sapi": "ok", "imgapi": "ok"}), "done: 2 service(s) ok"),
    (SyncSummary(HN1, "hn1", False, {"sapi": "ok", "imgapi": "busy"}), "done: imgapi busy"),
    (SyncSummary(HN1, "hn1", True), "done: nothing to pull"),
    (SyncSummary(HN1, "hn1", False, error="cannot read the DC store"),
     "failed: cannot read the DC store"),
    (InstanceResult("u", "sapi0", "hn0", "ok"), None),     # nested in ServiceResult: not shown
    (StepFinished("migrate", "moved sapi0"), "moved sapi0"),
])
def test_the_cli_describes_events_by_type(event, text):
    assert describe(event) == text

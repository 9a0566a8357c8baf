"""Availability measuring of `sdcadm lab watch`: the pure folding of samples into outages,
and the Watcher against real tiny HTTP servers and a real temporary store."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sdcadm.errors import NotFound
from sdcadm.lab.watch import Watcher, fold_outages, summarize, timeline_rows
from sdcadm.model import Instance, Service
from tests.conftest import store_at, wait_for


def ticks(service, marks, start=0.0, step=0.1):
    """Samples from a timeline string: '.' up, 'x' down, one per ``step`` seconds."""
    return [(start + i * step, service, mark == ".") for i, mark in enumerate(marks)]


def test_all_up_has_no_outage():
    stats = fold_outages(ticks("sapi", "....."))["sapi"]
    assert (stats.probes, stats.failed, stats.outages) == (5, 0, [])
    assert stats.to_dict() == {"probes": 5, "failed": 0, "downtime_s": 0.0,
                               "longest_outage_s": 0.0, "outages": 0}


def test_one_outage_runs_from_first_failure_to_next_success():
    stats = fold_outages(ticks("sapi", "..xxx.."))["sapi"]
    assert stats.failed == 3
    assert stats.outages == [(pytest.approx(0.2), pytest.approx(0.5))]
    assert stats.to_dict()["downtime_s"] == pytest.approx(0.3)


def test_several_outages_total_and_longest():
    stats = fold_outages(ticks("sapi", ".x..xxxx.xx.")).get("sapi").to_dict()
    assert stats["outages"] == 3 and stats["failed"] == 7
    assert stats["longest_outage_s"] == pytest.approx(0.4)
    assert stats["downtime_s"] == pytest.approx(0.1 + 0.4 + 0.2)


def test_outage_still_open_closes_at_end():
    stats = fold_outages(ticks("sapi", "..xx"), end=1.0)["sapi"]
    assert stats.outages == [(pytest.approx(0.2), 1.0)]
    # without an end: the last sample seen
    assert fold_outages(ticks("sapi", "..xx"))["sapi"].outages == [
        (pytest.approx(0.2), pytest.approx(0.3))]


def test_down_from_the_start():
    stats = fold_outages(ticks("sapi", "xx..", start=10.0))["sapi"]
    assert stats.outages == [(10.0, pytest.approx(10.2))]


def test_services_are_independent_and_order_does_not_matter():
    samples = ticks("sapi", "..xx..") + ticks("binder", "......")
    shuffled = samples[::-1]
    for got in (fold_outages(samples), fold_outages(shuffled)):
        assert got["binder"].failed == 0 and got["binder"].outages == []
        assert got["sapi"].failed == 2 and got["sapi"].downtime == pytest.approx(0.2)


def test_named_service_without_samples_is_reported():
    assert fold_outages([], services=["vmapi"])["vmapi"].to_dict()["probes"] == 0


def test_summary_shape():
    doc = summarize(ticks("sapi", ".x."), start=0.0, end=0.3)
    assert doc == {"services": {"sapi": {"probes": 3, "failed": 1, "downtime_s": 0.1,
                                         "longest_outage_s": 0.1, "outages": 1}},
                   "duration_s": 0.3}


def test_timeline_rows_align_and_keep_the_last_ticks():
    assert timeline_rows({"sapi": "..x", "binder": "...."}, width=3) == [
        "binder  ...", "sapi    ..x"]
    assert timeline_rows({}, 10) == []


# -- the Watcher ---------------------------------------------------------------------------------

class _Ping(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def dc(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ping)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    path = tmp_path / "dc.sqlite"
    store = store_at(path, create=True)
    image = "20000000-0000-4000-8000-000000000001"
    store.put_service(Service("sapi", image))
    store.put_service(Service("vmapi", image))
    hn0 = "00000000-0000-4000-8000-000000000001"
    store.create_instance(Instance(uuid="10000000-0000-4000-8000-000000000001", alias="sapi0",
                                   service="sapi", server_uuid=hn0, image=image,
                                   admin_ip="127.0.0.1", port=server.server_address[1]))
    # vmapi0 on a port nothing listens on
    store.create_instance(Instance(uuid="10000000-0000-4000-8000-000000000002", alias="vmapi0",
                                   service="vmapi", server_uuid=hn0, image=image,
                                   admin_ip="127.0.0.1", port=1))
    yield store, server
    store.close()
    server.shutdown()
    server.server_close()


def ticked(watcher, service, count):
    """The watcher has probed ``service`` at least ``count`` times."""
    return lambda: len(watcher.snapshot().get(service, "")) >= count


def test_watcher_measures_up_and_down_services(dc):
    store, _ = dc
    watcher = Watcher(store, interval=0.05).start()
    wait_for(lambda: ticked(watcher, "sapi", 5)() and ticked(watcher, "vmapi", 5)(), 10,
             "five probes of each service")
    summary = watcher.stop()
    sapi, vmapi = summary["services"]["sapi"], summary["services"]["vmapi"]
    assert sapi["probes"] >= 5 and sapi["failed"] == 0
    assert vmapi["failed"] == vmapi["probes"] >= 5 and vmapi["outages"] == 1
    # Down from its first probe until the watch ended, by the watcher's own clock.
    first = min(ts for ts, service, _ in watcher.samples if service == "vmapi")
    assert vmapi["downtime_s"] == round(watcher.ended - first, 3) > 0
    assert summary["duration_s"] == round(watcher.ended - watcher.started, 3)
    assert vmapi["downtime_s"] <= summary["duration_s"]
    assert set(watcher.snapshot()["sapi"]) == {"."} and set(watcher.snapshot()["vmapi"]) == {"x"}


def test_watcher_follows_a_moved_instance(dc):
    store, server = dc
    watcher = Watcher(store, services=["vmapi"], interval=0.05, refresh=0.1).start()
    wait_for(ticked(watcher, "vmapi", 3), 10, "three probes of vmapi where nothing listens")
    store.move_instance("10000000-0000-4000-8000-000000000002", 1, port=server.server_address[1])
    wait_for(lambda: watcher.snapshot()["vmapi"].endswith("..."), 10,
             "vmapi answering three times at its new port")
    summary = watcher.stop()
    marks = watcher.snapshot()["vmapi"]
    assert marks.startswith("x") and marks.endswith("...")
    assert list(summary["services"]) == ["vmapi"] and summary["services"]["vmapi"]["outages"] == 1


def test_watcher_refuses_unknown_service(dc):
    store, _ = dc
    with pytest.raises(NotFound) as e:
        Watcher(store, services=["nope"]).start()
    assert "sapi" in e.value.hint

"""`lab watch` from every side: the on-demand prober (`python -m
sdcadm.lab.probe --stdin`), its refusal of bad requests, and the Watcher
asking a prober in another process (here on the host: a namespace is only
where the process runs; tests/integration/test_lab_netns.py has them in
namespaces) and counting the processes that serve a singleton at once."""

import io
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sdcadm.lab.probe import concurrency, requested_urls, serve
from sdcadm.lab.watch import SideProber, Watcher, side_label, timeline_rows
from sdcadm.model import Instance, Service
from tests.conftest import store_at, wait_for

IMAGE = "20000000-0000-4000-8000-000000000001"
HN0 = "00000000-0000-4000-8000-000000000001"


def ping_server(pid):
    """A tiny HTTP server whose /ping answers 200 ``{"pid": pid}``."""
    body = json.dumps({"pid": pid}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ping" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server


@pytest.fixture
def servers():
    made = [ping_server(101), ping_server(202), ping_server(303)]
    yield made
    for s in made:
        s.shutdown()
        s.server_close()


def url_of(server):
    return f"http://127.0.0.1:{server.server_address[1]}"


# -- the prober on demand -------------------------------------------------------------------------

@pytest.mark.parametrize("line, why", [
    ("not json", "Expecting value"),
    ('{"url": "http://x"}', "JSON list"),
    ('["file:///etc/passwd"]', "http(s) URLs"),
    ('[1, 2]', "http(s) URLs"),
    ("[" + ",".join(['"http://127.0.0.1:1"'] * 5000) + "]", "JSON list"),
    ("[" + " " * (1 << 20) + "]", "too long"),
])
def test_a_bad_request_line_is_answered_with_no_pids_and_the_prober_goes_on(line, why, servers):
    with pytest.raises(ValueError, match=re.escape(why)):
        requested_urls(line)
    out = io.StringIO()
    serve([line + "\n", json.dumps([url_of(servers[0])]) + "\n"], out, timeout=2.0)
    bad, good = [json.loads(x) for x in out.getvalue().splitlines()]
    assert bad["pids"] == {} and why in bad["error"]
    assert good["pids"] == {url_of(servers[0]): 101}


def test_the_prober_answers_one_round_per_line_and_exits_at_end_of_input(servers):
    urls = [url_of(servers[0]), "http://127.0.0.1:1"]     # the second: nothing listens
    proc = subprocess.run([sys.executable, "-m", "sdcadm.lab.probe", "--stdin", "--timeout",
                           "1"], input=json.dumps(urls) + "\n" + json.dumps(urls[:1]) + "\n",
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    first, second = [json.loads(x)["pids"] for x in proc.stdout.splitlines()]
    assert first == {urls[0]: 101, urls[1]: None} and second == {urls[0]: 101}


@pytest.mark.parametrize("argv", [[], ["--stdin", "http://127.0.0.1:1"]])
def test_the_prober_wants_urls_or_stdin_not_both(argv):
    proc = subprocess.run([sys.executable, "-m", "sdcadm.lab.probe", *argv],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "give URLs, or --stdin" in proc.stderr


def test_a_side_whose_prober_died_sees_nothing_until_it_is_spawned_again(servers):
    side = SideProber(None, 1.0)
    urls = [url_of(servers[0])]
    assert side.ask(urls) == {urls[0]: 101}
    side.proc.kill()               # a server powered off takes its prober with it
    side.proc.wait()
    side.spawned = time.monotonic()              # as if just spawned: not again for a second
    assert side.ask(urls) == {urls[0]: None}
    wait_for(lambda: side.ask(urls) == {urls[0]: 101}, 10, "the prober spawned again")
    side.close()
    assert side.proc.returncode is not None


# -- concurrency by service -----------------------------------------------------------------------

def test_two_urls_of_one_singleton_answering_at_once_count_together():
    rounds = [{"t": 1.0, "pids": {"http://a": 1, "http://b": None}},
              {"t": 2.0, "pids": {"http://a": 1, "http://b": 2}},
              {"t": 3.0, "pids": {"http://a": None, "http://b": 2}}]
    assert concurrency(rounds) == {"http://a": 1, "http://b": 1}     # per URL: never two
    assert concurrency(rounds, key=lambda u: "sapi") == {"sapi": 2}   # per service: two


# -- the watcher from two sides -------------------------------------------------------------------

@pytest.fixture
def dc(tmp_path, servers):
    store = store_at(tmp_path / "dc.sqlite", create=True)
    store.put_service(Service("sapi", IMAGE))
    store.put_service(Service("vmapi", IMAGE))
    store.create_instance(Instance(uuid="10000000-0000-4000-8000-000000000001", alias="sapi0",
                                   service="sapi", server_uuid=HN0, image=IMAGE,
                                   admin_ip="127.0.0.1", port=servers[0].server_address[1]))
    store.create_instance(Instance(uuid="10000000-0000-4000-8000-000000000002", alias="vmapi0",
                                   service="vmapi", server_uuid=HN0, image=IMAGE,
                                   admin_ip="127.0.0.1", port=servers[1].server_address[1]))
    yield store
    store.close()


def test_the_watcher_probes_from_every_side_and_counts_a_singleton_served_twice(dc, servers):
    watcher = Watcher(dc, interval=0.05, sides={"hn1": None}, singletons={"sapi"}).start()
    try:
        wait_for(lambda: len(watcher.snapshot().get(side_label("sapi", "hn1"), "")) >= 5, 20,
                 "five rounds from the other side")
        # a second sapi, another process, answers too: a singleton served twice
        dc.create_instance(Instance(uuid="10000000-0000-4000-8000-000000000003", alias="sapi1",
                                    service="sapi", server_uuid=HN0, image=IMAGE,
                                    admin_ip="127.0.0.1", port=servers[2].server_address[1]))
        wait_for(lambda: watcher.summary()["max_concurrent"]["sapi"] == 2, 20,
                 "both sapi processes seen at once")
    finally:
        summary = watcher.stop()
    assert set(summary["sides"]) == {"hn1"}
    for seen in (summary["services"], summary["sides"]["hn1"]["services"]):
        assert seen["sapi"]["failed"] == 0 and seen["vmapi"]["failed"] == 0
    assert summary["max_concurrent"] == {"sapi": 2}      # vmapi is not a singleton
    names = [row.split("  ")[0] for row in timeline_rows(watcher.snapshot(), 20)]
    assert names == ["sapi", "sapi @hn1", "vmapi", "vmapi @hn1"]
    assert watcher._probers == {}                          # closed with the watch


def test_a_side_that_cannot_reach_an_instance_sees_it_down(dc, servers):
    # "nowhere" is a namespace that does not exist: its prober cannot start,
    # that side reaches nothing, while the host sees every service up
    watcher = Watcher(dc, interval=0.05, sides={"nowhere": "sdcadm-test-no-such-netns"},
                      singletons={"sapi"}).start()
    try:
        wait_for(lambda: watcher.snapshot().get(side_label("sapi", "nowhere"), "").endswith(
            "xxx"), 20, "three failed rounds from the cut-off side")
    finally:
        summary = watcher.stop()
    assert summary["services"]["sapi"]["failed"] == 0
    assert summary["sides"]["nowhere"]["services"]["sapi"]["failed"] >= 3
    assert summary["max_concurrent"] == {"sapi": 1}

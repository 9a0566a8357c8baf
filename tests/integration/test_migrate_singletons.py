"""`service migrate` keeps singletons single and busy services copied (issue 8,
items 4 and 6), on one shared lab: 2 headnodes, the ten stateless singletons,
sapi (a stateful singleton), assets (neither singleton nor stateful) and
binder (HA) on hn0, binder also on hn1.

A prober thread of the test, outside every sdcadm process, hits /ping of the
old and the new instance of every service every PROBE_EVERY seconds through
the whole migrate. What is asserted is behaviour, never a duration: no probe
round sees two instances of a singleton answer; a singleton is down between
its old and its new instance and the report says so, consistently with what
the probes saw (to within the probes' own spacing); make-before-break
services never miss a probe; every write acknowledged with 2xx survives.
"""

import http.client
import json
import threading
import time
import urllib.request

import pytest

from sdcadm.health import http_open, probe
from tests.conftest import needs_sshd, random_net, run, wait_for
from tests.integration.test_restore_migrate import Invariants, Lab, get, migrate_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_sshd]

STATELESS_SINGLETONS = ("ufds", "rabbitmq", "napi", "workflow", "cnapi", "dhcpd", "papi",
                        "vmapi", "amon", "sdc")
MAKE_BEFORE_BREAK = ("assets", "binder")   # neither singleton nor stateful; HA
SERVICES = ",".join(STATELESS_SINGLETONS + MAKE_BEFORE_BREAK + ("sapi",))
PROBE_EVERY = 0.05


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from sdcadm.lab import procs

    directory = tmp_path_factory.mktemp("migrate") / "dc"
    try:
        run("sdcadm", "lab", "up", "--dir", str(directory), "--net", random_net(),
            "--headnodes", "2", "--computenodes", "0", "--services", SERVICES,
            "--heartbeat-interval", "0.5", "--timeout", "120", timeout=300)
        yield Lab(directory)
    finally:
        run("sdcadm", "lab", "down", "--dir", str(directory), check=False)
        assert procs.lab_processes(directory) == [], "lab down left processes behind"


# -- the prober ---------------------------------------------------------------------------------

class Prober:
    """Every PROBE_EVERY seconds, one round: /ping of every instance of
    ``services`` the store knows (old and new, as they appear), and of the
    addresses they had when the prober started. ``rounds``: [(service,
    {uuid: when the probe it answered was sent}, when the service's first
    probe of the round was sent)]."""

    def __init__(self, lab, services):
        self.lab, self.services = lab, set(services)
        insts = [i for i in lab.insts().values() if i["service"] in self.services]
        self.first = {i["url"]: i["service"] for i in insts}
        self.rounds, self.error = [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        wait_for(lambda: len(self.rounds) >= len(self.services), 30, "the first probe round")
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the prober did not stop"
        assert self.error is None, f"the prober failed: {self.error!r}"

    def _run(self):
        try:
            self._probe_rounds()
        except Exception as e:  # noqa: BLE001 - reported by __exit__, in the test's thread
            self.error = e

    def _probe_rounds(self):
        from sdcadm.lab.state import load_state

        with load_state(self.lab.dir).dc_store().open() as store:
            while not self._stop.is_set():
                started = time.monotonic()
                urls = {s: set() for s in self.services}
                for url, service in self.first.items():
                    urls[service].add(url)
                for inst in store.list_instances():
                    if inst.service in self.services:
                        urls[inst.service].add(inst.url)
                for service, where in sorted(urls.items()):
                    answered, probed = {}, time.monotonic()
                    for url in sorted(where):
                        sent = time.monotonic()
                        got = _ping(url)
                        # An address may be reused by another service: count
                        # only this service's answers.
                        if got.get("service") == service:
                            answered.setdefault(got["uuid"], sent)
                    self.rounds.append((service, answered, probed))
                self._stop.wait(max(0.0, PROBE_EVERY - (time.monotonic() - started)))

    def of(self, service):
        return [(answered, t) for s, answered, t in self.rounds if s == service]

    def spacing(self, service):
        """The longest time between two probes of ``service``: how coarse they were."""
        times = [t for _, t in self.of(service)]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def _ping(url):
    try:
        with http_open(url + "/ping", 0.3) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError, http.client.HTTPException):
        return {}


def moved(prober, service, old, new):
    """What the probes saw of ``service`` going from uuid ``old`` to ``new``:
    rounds where both answered, where none did, the last answer of the old
    one, its first failed probe after that and the first answer of the new."""
    rounds = prober.of(service)
    both = [t for answered, t in rounds if old in answered and new in answered]
    none = [t for answered, t in rounds if not answered]
    last_old = max(answered[old] for answered, _ in rounds if old in answered)
    first_new = min(answered[new] for answered, _ in rounds if new in answered)
    first_fail = min((t for answered, t in rounds if old not in answered and t > last_old),
                     default=None)
    return both, none, last_old, first_fail, first_new


# -- item 4: singletons stop first, the others make before break ---------------------------------

def test_stateless_singletons_never_answer_twice_and_their_downtime_is_reported(lab):
    before = lab.insts()
    prober = Prober(lab, STATELESS_SINGLETONS)
    with Invariants(lab, stateful=STATELESS_SINGLETONS) as watch, prober:
        done = lab.sdcadm("service", "migrate", "hn0", "hn1", *STATELESS_SINGLETONS, "-y", "-j")
    result = json.loads(done.stdout)
    assert result["state"] == "succeeded", done.stderr
    assert watch.violations == [], watch.violations
    # The operator was told which services would be down.
    (down,) = [line for line in result["procedures"][0]["summary"]
               if line.startswith("downtime: ")]
    named = down.split(": ", 1)[1].split(" will not answer")[0].split(", ")
    assert sorted(named) == sorted(STATELESS_SINGLETONS), down
    figures = migrate_figures(result)
    after = lab.insts()
    for service in STATELESS_SINGLETONS:
        spacing = prober.spacing(service)
        old = before[f"{service}0"]
        (new,) = [i for i in after.values() if i["service"] == service]
        r = figures[old["alias"]]
        both, none, last_old, first_fail, first_new = moved(prober, service, old["uuid"],
                                                            new["uuid"])
        assert both == [], f"{service}: old and new both answered at {both}"
        assert first_fail is not None and first_new > last_old and none, \
            f"{service}: the new one answered before the old one stopped"
        gap = first_new - first_fail
        print(f"{service}: reported downtime {r['downtime_s']:.3f}s (±{r['resolution_s']:.3f}s, "
              f"{r['failed_probes']}/{r['probes']} probes failed); probes from outside: "
              f"{gap:.3f}s from the first failed probe of the old to the first answer of the "
              f"new ({len(none)} round(s) with no answer, rounds every <= {spacing:.3f}s)")
        assert r["stop_first"] and not r["stateful"], r
        assert r["failed_probes"] > 0 and r["downtime_s"] > 0, r
        # The report and the probes measure the same outage, each to within one
        # of its own probe intervals.
        assert r["downtime_s"] >= gap - spacing - r["resolution_s"], (r, gap, spacing)
        assert f"{old['alias']} -> {new['alias']} (" in done.stderr
    # The old addresses were released into quarantine: no instance made since
    # (the later services of this very migrate included) took one, and none answers.
    old_ips = {before[f"{s}0"]["admin_ip"]: before[f"{s}0"]["url"] for s in STATELESS_SINGLETONS}
    reused = {i["alias"]: i["admin_ip"] for i in after.values() if i["admin_ip"] in old_ips}
    assert reused == {}, f"released addresses taken again within the quarantine: {reused}"
    answering = [url for url in old_ips.values() if probe(url + "/ping", 0.5) is None]
    assert answering == [], f"old addresses still answer: {answering}"


def test_ha_and_non_singleton_services_make_before_break(lab):
    # binder is on both headnodes: take hn1's away so that hn0's may move there.
    from sdcadm.lab.state import load_state

    binder1 = lab.insts()["binder1"]
    with load_state(lab.dir).dc_store().open() as store:
        store.delete_instance(binder1["uuid"])
        store.release_ip("admin", binder1["admin_ip"])
    wait_for(lambda: binder1["uuid"] not in lab.running_on("hn1"), 30,
             "hn1's agent stopping binder1")
    prober = Prober(lab, MAKE_BEFORE_BREAK)
    with prober:
        done = lab.sdcadm("service", "migrate", "hn0", "hn1", *MAKE_BEFORE_BREAK, "-y", "-j")
    result = json.loads(done.stdout)
    assert result["state"] == "succeeded", done.stderr
    assert "downtime:" not in "\n".join(result["procedures"][0]["summary"])
    figures = migrate_figures(result)
    after = lab.insts()
    for service in MAKE_BEFORE_BREAK:
        r = figures[f"{service}0"]
        (new,) = [i for i in after.values() if i["service"] == service]
        rounds = prober.of(service)
        missed = [t for answered, t in rounds if not answered]
        print(f"{service}: reported downtime {r['downtime_s']:.3f}s, {r['failed_probes']}/"
              f"{r['probes']} probes failed; from outside {len(missed)}/{len(rounds)} rounds "
              "without an answer")
        assert not r["stop_first"], r
        assert r["failed_probes"] == 0 and r["downtime_s"] == 0, r
        assert missed == [], f"{service} did not answer at {missed}"
        assert any(new["uuid"] in answered for answered, _ in rounds)


# -- item 6: a busy stateful singleton keeps being copied, and migrates ---------------------------

class Writer:
    """Threads rewriting ``keys`` keys each at ``url`` as fast as it answers
    (the data set stays small; every write makes and renames a temporary
    file). ``acked``: {key: the newest sequence number answered 2xx}."""

    def __init__(self, url, threads=2, keys=200, size=4096):
        self.url, self.keys, self.size = url, keys, size
        self.acked, self.writes, self.failed = {}, 0, 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]

    def body(self, key, seq):
        return f"{key}:{seq}:".encode().ljust(self.size, b".")

    def __enter__(self):
        for t in self._threads:
            t.start()
        wait_for(lambda: self.writes >= 10, 30, "the first writes acknowledged")
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, n):
        seq = 0
        while not self._stop.is_set():
            seq += 1
            key = f"w{n}-{seq % self.keys}"
            req = urllib.request.Request(f"{self.url}/data/{key}", data=self.body(key, seq),
                                         method="PUT")
            try:
                with http_open(req, 2.0) as resp:
                    if 200 <= resp.status < 300:
                        self.acked[key], self.writes = seq, self.writes + 1
                        continue
            except (OSError, http.client.HTTPException):
                pass
            self.failed += 1
            self._stop.wait(0.01)   # the instance is down (migrate): do not spin

    def lost(self, url):
        """Keys whose newest acknowledged write is not readable at ``url``: it
        holds neither that write nor a later one (a later write may have been
        made durable but not answered: the instance stopped meanwhile)."""
        lost = []
        for key, seq in sorted(self.acked.items()):
            got = get(url, key) or b""
            head = got.split(b":", 2)
            ok = (len(head) == 3 and head[0].decode() == key and head[1].isdigit()
                  and int(head[1]) >= seq and got == self.body(key, int(head[1])))
            if not ok:
                lost.append((key, seq, got[:40]))
        return lost


def test_busy_stateful_singleton_syncs_with_a_warning_and_migrates_without_loss(lab):
    sapi0 = lab.insts()["sapi0"]
    syncs = []
    with Writer(sapi0["url"]) as writer:
        def a_sync_saw_files_vanish():
            done = lab.sdcadm("service", "sync-restore-data", "sapi", "-j", check=False)
            syncs.append(done)
            if done.returncode != 0:
                return True   # judged below: it must not fail
            (hn1,) = [r for r in json.loads(done.stdout) if r["hostname"] == "hn1"]
            return hn1["services"]["sapi"].get("vanished")

        wait_for(a_sync_saw_files_vanish, 180, "a sync of busy sapi seeing files vanish",
                 interval=0)
        assert [s.returncode for s in syncs] == [0] * len(syncs), syncs[-1].stderr
        (hn1,) = [r for r in json.loads(syncs[-1].stdout) if r["hostname"] == "hn1"]
        result = hn1["services"]["sapi"]
        print(f"{len(syncs)} sync(s) until files vanished: {result['warning']}")
        assert result["status"] == "ok" and result["error"] is None
        assert "vanished while copied" in result["warning"] and "kept" in result["warning"]
        rows = json.loads(lab.sdcadm("restore-data", "ls", "-j").stdout)
        (row,) = [r for r in rows if r["instance"] == "sapi0" and r["headnode"] == "hn1"]
        assert row["status"] == "ok" and row["vanished"] >= 1, row
        verify = lab.sdcadm("restore-data", "verify", "sapi", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr

        with Invariants(lab, stateful=("sapi",)) as watch:
            done = lab.sdcadm("service", "migrate", "hn0", "hn1", "sapi", "-y", "-j")
        acked = writer.writes
    assert watch.violations == [], watch.violations
    migrated = json.loads(done.stdout)
    assert migrated["state"] == "succeeded", done.stderr
    r = migrate_figures(migrated)["sapi0"]
    print(f"sapi: {acked} writes acknowledged, {writer.failed} refused; migrate "
          f"downtime {r['downtime_s']:.3f}s (±{r['resolution_s']:.3f}s), "
          f"{r['failed_probes']}/{r['probes']} probes failed")
    assert r["stop_first"] and r["stateful"] and r["failed_probes"] > 0, r
    (new,) = [i for i in lab.insts().values() if i["service"] == "sapi"]
    assert new["hostname"] == "hn1" and new["uuid"] != sapi0["uuid"]
    lost = writer.lost(new["url"])
    assert lost == [], f"{len(lost)} acknowledged write(s) missing from {new['alias']}: {lost[:5]}"

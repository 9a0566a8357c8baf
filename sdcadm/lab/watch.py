"""Watching service availability: probe every instance ten times a second.

``Watcher(source, services, interval)`` probes, every ``interval`` seconds,
``<instance url>/ping`` of every instance of the watched services, re-reading
the store every ``refresh`` seconds so that an instance moved or restored
elsewhere is followed by service. A service is *up* at a tick when at least
one of its instances answers 2xx (an HA service survives one dead headnode);
a service without instances at that tick is down. ``start()`` runs it in a
thread; ``stop()``; ``summary()`` at any time.

From every side: with ``sides`` ({name: network namespace}, a netns lab's
servers) the same URLs are probed, at the same tick, from inside each of
those namespaces too (a ``python -m sdcadm.lab.probe --stdin`` in each), so
a split brain is seen from both of its sides: a partitioned server's
singletons answer inside it while the restored copies answer outside.
Per side, the availability of each service; for the ``singletons``, over
every side, the most processes seen serving one at once (1 is the promise).

The measuring is the pure ``fold_outages(samples, end)`` over
``(timestamp, service, ok)`` samples: an outage starts at the first failed
sample and ends at the next successful one (or at ``end`` if it never
recovered); downtime is the sum of outages, the longest is reported apart.
"""

import json
import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sdcadm.availability import ServiceAvailability, fold_outages  # noqa: F401 (re-exported)
from sdcadm.errors import NotFound, StoreError
from sdcadm.lab import procs
from sdcadm.lab.probe import add_round, overlapping, probe_round

log = logging.getLogger(__name__)

UP, DOWN = ".", "x"
DEFAULT_INTERVAL = 0.1
DEFAULT_REFRESH = 1.0
DEFAULT_PROBE_TIMEOUT = 1.0
MAX_WORKERS = 32


# -- the pure part -----------------------------------------------------------------------------

def summarize(samples, start, end, services=()):
    """The JSON summary of a watch from ``start`` to ``end``."""
    stats = fold_outages(samples, end, services)
    return {"services": {name: stats[name].to_dict() for name in sorted(stats)},
            "duration_s": round(max(0.0, end - start), 3)}


def side_label(service, side):
    """The timeline name of ``service`` seen from ``side`` (None: the host)."""
    return service if side is None else f"{service} @{side}"


def timeline_rows(timelines, width):
    """Display lines: the service name, then its last ``width`` ticks."""
    if not timelines:
        return []
    pad = max(len(name) for name in timelines)
    return [f"{name:<{pad}}  {marks[-width:]}" for name, marks in sorted(timelines.items())]


# -- the watcher -------------------------------------------------------------------------------

def _open(source):
    """(store, owned): a Store as is, or the store of a LabState."""
    if hasattr(source, "list_instances"):
        return source, False
    return source.dc_store().open(), True


class SideProber:
    """A ``python -m sdcadm.lab.probe --stdin`` inside network namespace
    ``netns``: ``ask(urls)`` is one round probed from there."""

    def __init__(self, netns, timeout):
        self.argv = procs.in_netns([sys.executable, "-m", "sdcadm.lab.probe", "--stdin",
                                    "--timeout", f"{timeout:g}"], netns)
        self.proc = None
        self.spawned = None

    def _spawn(self):
        # A server powered off takes its prober with it: spawn again, at most
        # once a second, so that a server brought back is watched again.
        if self.spawned is not None and time.monotonic() - self.spawned < 1.0:
            return None
        self.spawned = time.monotonic()
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as e:
            log.warning("watch: cannot start a prober (%s): %s", self.argv[0], e)
            self.proc = None
        return self.proc

    def ask(self, urls):
        """{url: pid or None}; None for every URL when this side cannot probe."""
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._spawn()
        if proc is not None:
            try:
                proc.stdin.write(json.dumps(urls) + "\n")
                proc.stdin.flush()
                pids = json.loads(proc.stdout.readline())["pids"]
                return {u: pids.get(u) for u in urls}
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return dict.fromkeys(urls)

    def close(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()     # end of input: it exits
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class Watcher:
    """Probe the instances of ``services`` (None: every service) every ``interval`` s."""

    def __init__(self, source, services=None, interval=DEFAULT_INTERVAL,
                 refresh=DEFAULT_REFRESH, probe_timeout=DEFAULT_PROBE_TIMEOUT,
                 sides=None, singletons=()):
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.source = source
        self.wanted = list(dict.fromkeys(services)) if services else None
        self.interval, self.refresh = float(interval), float(refresh)
        self.probe_timeout = probe_timeout
        self.samples = []            # (monotonic time, service, ok)
        self.timelines = {}          # service -> ".x.." marks
        self.urls = {}               # service -> [instance url], from the last store read
        self.sides = dict(sides or {})                      # name -> network namespace
        self.side_samples = {name: [] for name in self.sides}
        self.side_timelines = {name: {} for name in self.sides}
        self.singletons = frozenset(singletons)
        self.spans = {}              # singleton service -> {pid: [first, last]}, every side
        self._probers = {}
        self._side_pool = None
        self.refresh_errors = 0
        self.started = self.ended = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._store = self._owned = None
        self._pool = None

    # -- life cycle ------------------------------------------------------------------
    def start(self):
        """Read the store (NotFound for an unknown service), then probe in a thread."""
        self._store, self._owned = _open(self.source)
        try:
            self._read_store(strict=True)
        except BaseException:
            if self._owned:
                self._store.close()
            self._store = None
            raise
        self._pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="watch")
        if self.sides:
            self._probers = {name: SideProber(ns, self.probe_timeout)
                             for name, ns in self.sides.items()}
            self._side_pool = ThreadPoolExecutor(max_workers=len(self.sides),
                                                 thread_name_prefix="watch-side")
        self.started = time.monotonic()
        # Two threads: the probes keep their pace while a store read waits
        # (up to store.timeout on a member that was cut off).
        self._threads = [threading.Thread(target=self._loop, name="sdcadm-watch", daemon=True),
                         threading.Thread(target=self._refresh_loop, name="sdcadm-watch-store",
                                          daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.probe_timeout + 10)
        self._threads = []
        if self.ended is None and self.started is not None:
            self.ended = time.monotonic()
        for pool in (self._pool, self._side_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._side_pool = None
        for prober in self._probers.values():
            prober.close()
        self._probers = {}
        if self._owned and self._store is not None:
            self._store.close()
        self._store = None
        return self.summary()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- results ---------------------------------------------------------------------
    def summary(self):
        """``{"services": {name: {probes, failed, downtime_s, longest_outage_s, outages}},
        "duration_s"}`` up to now (or up to stop()), as the host sees it; with
        sides, ``"sides": {side: {"services": ...}}`` too; with singletons,
        ``"max_concurrent": {service: most processes serving it at once}``."""
        with self._lock:
            samples = list(self.samples)
            services = list(self.timelines)
            by_side = {name: (list(self.side_samples[name]), list(self.side_timelines[name]))
                       for name in self.sides}
            spans = {name: dict(by_pid) for name, by_pid in self.spans.items()}
        start = self.started if self.started is not None else time.monotonic()
        end = self.ended if self.ended is not None else time.monotonic()
        out = summarize(samples, start, end, services)
        if self.sides:
            out["sides"] = {name: {"services": summarize(s, start, end, names)["services"]}
                            for name, (s, names) in by_side.items()}
        if self.singletons:
            out["max_concurrent"] = {name: overlapping(spans.get(name, {}))
                                     for name in sorted(self.singletons & set(services))}
        return out

    def snapshot(self):
        """{service (or "service @side"): timeline marks} so far."""
        with self._lock:
            out = dict(self.timelines)
            for side, timelines in self.side_timelines.items():
                out.update({side_label(name, side): marks for name, marks in timelines.items()})
            return out

    # -- work ------------------------------------------------------------------------
    def _read_store(self, strict=False):
        try:
            instances = self._store.list_instances()
        except StoreError as e:
            if strict:
                raise
            self.refresh_errors += 1
            log.warning("watch: cannot read the store (keeping the last instance list): %s", e)
            return
        urls = {}
        for inst in instances:
            urls.setdefault(inst.service, []).append(inst.url)       # probed at /ping
        if self.wanted is None:
            names = sorted(set(urls) | set(self.urls))
        else:
            names = self.wanted
            if strict:
                known = set(urls) | {s.name for s in self._store.list_services()}
                unknown = [n for n in names if n not in known]
                if unknown:
                    raise NotFound(f"unknown service {', '.join(repr(n) for n in unknown)}",
                                   hint="services: " + (", ".join(sorted(known)) or "(none)"))
        self.urls = {name: urls.get(name, []) for name in names}

    def _refresh_loop(self):
        try:
            while not self._stop.wait(self.refresh):
                self._read_store()
        except Exception:  # noqa: BLE001 - a watcher must report, not die silently
            log.exception("watch: reading the store failed")
        finally:
            if self._owned and self._store is not None:
                self._store.close()  # this thread's connection

    def _loop(self):
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                self._tick()
                next_tick += self.interval
                delay = next_tick - time.monotonic()
                if delay < 0:  # probes took longer than a tick: do not try to catch up
                    next_tick, delay = time.monotonic(), 0
                if self._stop.wait(delay):
                    break
        except Exception:  # noqa: BLE001 - a watcher must report, not die silently
            log.exception("watch: probing loop failed")
        finally:
            self.ended = time.monotonic()

    def _tick(self):
        current = self.urls            # replaced whole by the store thread, never changed
        urls = sorted({u for us in current.values() for u in us})
        asked = {name: self._side_pool.submit(p.ask, urls) for name, p in self._probers.items()}
        host = probe_round(self._pool, urls, self.probe_timeout)
        ts = host["t"]
        seen = {None: host["pids"]}
        seen.update((name, future.result()) for name, future in asked.items())
        service_of = {u: name for name, us in current.items() for u in us}
        with self._lock:
            for side, pids in seen.items():
                samples = self.samples if side is None else self.side_samples[side]
                timelines = self.timelines if side is None else self.side_timelines[side]
                for service, service_urls in current.items():
                    ok = any(pids.get(u) is not None for u in service_urls)
                    samples.append((ts, service, ok))
                    timelines[service] = timelines.get(service, "") + (UP if ok else DOWN)
                if self.singletons:
                    add_round(self.spans, {"t": ts, "pids": {
                        u: pid for u, pid in pids.items()
                        if service_of.get(u) in self.singletons}}, key=service_of.get)

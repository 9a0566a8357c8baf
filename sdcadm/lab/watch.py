"""Watching service availability: probe every instance ten times a second.

``Watcher(source, services, interval)`` probes, every ``interval`` seconds,
``<instance url>/ping`` of every instance of the watched services, re-reading
the store every ``refresh`` seconds so that an instance moved or restored
elsewhere is followed by service. A service is *up* at a tick when at least
one of its instances answers 2xx (an HA service survives one dead headnode);
a service without instances at that tick is down. ``start()`` runs it in a
thread; ``stop()``; ``summary()`` at any time.

The measuring is the pure ``fold_outages(samples, end)`` over
``(timestamp, service, ok)`` samples: an outage starts at the first failed
sample and ends at the next successful one (or at ``end`` if it never
recovered); downtime is the sum of outages, the longest is reported apart.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sdcadm.availability import ServiceAvailability, fold_outages  # noqa: F401 (re-exported)
from sdcadm.errors import NotFound, StoreError
from sdcadm.health import probe

log = logging.getLogger(__name__)

UP, DOWN = ".", "x"
PING_PATH = "/ping"
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


class Watcher:
    """Probe the instances of ``services`` (None: every service) every ``interval`` s."""

    def __init__(self, source, services=None, interval=DEFAULT_INTERVAL,
                 refresh=DEFAULT_REFRESH, probe_timeout=DEFAULT_PROBE_TIMEOUT, path=PING_PATH):
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.source = source
        self.wanted = list(dict.fromkeys(services)) if services else None
        self.interval, self.refresh = float(interval), float(refresh)
        self.probe_timeout, self.path = probe_timeout, path
        self.samples = []            # (monotonic time, service, ok)
        self.timelines = {}          # service -> ".x.." marks
        self.urls = {}               # service -> [url], from the last store read
        self.refresh_errors = 0
        self.started = self.ended = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
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
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="sdcadm-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.probe_timeout + 5)
            self._thread = None
        if self.ended is None and self.started is not None:
            self.ended = time.monotonic()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
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
        "duration_s"}`` up to now (or up to stop())."""
        with self._lock:
            samples = list(self.samples)
            services = list(self.timelines)
        start = self.started if self.started is not None else time.monotonic()
        end = self.ended if self.ended is not None else time.monotonic()
        return summarize(samples, start, end, services)

    def snapshot(self):
        """{service: timeline marks} so far."""
        with self._lock:
            return dict(self.timelines)

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
            urls.setdefault(inst.service, []).append(inst.url + self.path)
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

    def _loop(self):
        next_tick = time.monotonic()
        last_read = next_tick
        try:
            while not self._stop.is_set():
                if time.monotonic() - last_read >= self.refresh:
                    self._read_store()
                    last_read = time.monotonic()
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
            if self._owned and self._store is not None:
                self._store.close()  # this thread's connection

    def _tick(self):
        ts = time.monotonic()
        urls = sorted({u for us in self.urls.values() for u in us})
        answers = dict(zip(urls, self._pool.map(lambda u: probe(u, self.probe_timeout), urls)))
        with self._lock:
            for service, service_urls in self.urls.items():
                ok = any(answers.get(u) is None for u in service_urls)
                self.samples.append((ts, service, ok))
                self.timelines[service] = self.timelines.get(service, "") + (UP if ok else DOWN)

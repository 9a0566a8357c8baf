"""Probing singletons from inside every server: who answers, and when.

A partition makes two views of the network: what the cut-off server sees and
what the others see. ``python -m sdcadm.lab.probe URL...`` (run inside a
server's namespace with ``sdcadm lab exec SERVER --``, or on the host) GETs
``URL/ping`` of every URL each ``--interval`` seconds, all at once, and
prints one JSON line per round on stdout: ``{"t": <CLOCK_MONOTONIC, the same
clock for every process of the machine>, "pids": {url: pid or null}}``; a
pid only when the answer was 2xx (the workload's /ping says its pid).

``--stdin`` serves rounds on demand instead, for ``lab watch``, which
follows instances as they move: each line read is a JSON list of URLs, each
line written the round that probed them; it exits at the end of its input.

``concurrency`` turns rounds from every side into the measure that matters:
per URL (or per service, with ``key``), each answering process is seen from
its first to its last 2xx; the most processes whose spans overlap in time is
how many copies of that singleton served at once (1 is the promise). Pure,
unit-tested; ``add_round`` and ``overlapping`` are its two halves, for a
caller that keeps spans instead of every round.
"""

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from sdcadm import health

MAX_URLS = 4096     # --stdin: a request line naming more is refused (answered with no pids)
MAX_LINE = 1 << 20


def ping_pid(url, timeout):
    """Who answered ``url``/ping with 2xx: its pid (0 when the answer names
    none), else None."""
    ok, pid = health.ping_pid(url.rstrip("/") + "/ping", timeout)
    if not ok:
        return None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else 0


def probe_round(pool, urls, timeout):
    """One round: every URL probed at once. {"t", "pids"}."""
    t = time.monotonic()
    return {"t": t, "pids": dict(zip(urls, pool.map(lambda u: ping_pid(u, timeout), urls)))}


def rounds(urls, interval, timeout, stop_after=None):
    """Yield one round after another: {"t", "pids"}."""
    with ThreadPoolExecutor(max(1, len(urls))) as pool:
        started = time.monotonic()
        while stop_after is None or time.monotonic() - started < stop_after:
            obs = probe_round(pool, urls, timeout)
            yield obs
            time.sleep(max(0.0, interval - (time.monotonic() - obs["t"])))


def requested_urls(line):
    """The URLs of one ``--stdin`` request line (a JSON list of http URLs);
    ValueError when it is anything else."""
    if len(line) > MAX_LINE:
        raise ValueError("request line too long")
    urls = json.loads(line)
    if not isinstance(urls, list) or len(urls) > MAX_URLS or not all(
            isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
        raise ValueError("a request is a JSON list of http(s) URLs")
    return list(dict.fromkeys(urls))


def serve(lines, out, timeout, workers=32):
    """``--stdin``: one round per request line, written to ``out`` as it is
    made; a bad line is answered ``{"t", "pids": {}, "error"}``."""
    with ThreadPoolExecutor(workers) as pool:
        for line in lines:
            try:
                urls = requested_urls(line)
            except ValueError as e:
                obs = {"t": time.monotonic(), "pids": {}, "error": str(e)}
            else:
                obs = probe_round(pool, urls, timeout)
            out.write(json.dumps(obs) + "\n")
            out.flush()


def add_round(spans_by_key, obs, key=None):
    """Fold one round into ``spans_by_key`` ({key: {pid: [first_t, last_t]}});
    ``key(url)`` groups URLs (None: each URL its own)."""
    for url, pid in obs["pids"].items():
        if pid is not None:
            k = url if key is None else key(url)
            span = spans_by_key.setdefault(k, {}).setdefault(pid, [obs["t"], obs["t"]])
            span[0], span[1] = min(span[0], obs["t"]), max(span[1], obs["t"])
    return spans_by_key


def spans(observations, key=None):
    """{url (or key(url)): {pid: [first_t, last_t]}} of the 2xx answers in
    ``observations`` (rounds from any number of sides)."""
    out = {}
    for obs in observations:
        add_round(out, obs, key)
    return out


def overlapping(by_pid):
    """The most spans of ``by_pid`` ({pid: [first, last]}) that overlap in time."""
    events = sorted([(first, 1) for first, _ in by_pid.values()]
                    + [(last, -1) for _, last in by_pid.values()],
                    key=lambda e: (e[0], -e[1]))  # a start at t meets an end at t
    most = live = 0
    for _, delta in events:
        live += delta
        most = max(most, live)
    return most


def concurrency(observations, key=None):
    """{url (or key(url)): the most distinct processes seen serving it at
    once}: spans of different pids that overlap in time count together."""
    return {k: overlapping(by_pid) for k, by_pid in spans(observations, key).items()}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sdcadm.lab.probe",
        description="Probe URL/ping every INTERVAL seconds; one JSON line per round.")
    parser.add_argument("urls", nargs="*", metavar="URL")
    parser.add_argument("--stdin", action="store_true",
                        help="probe on demand: each line read is a JSON list of URLs, each "
                             "line written the round that probed them")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=0.3)
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: when killed)")
    args = parser.parse_args(argv)
    if not 0.001 <= args.interval <= 60 or not 0.01 <= args.timeout <= 60:
        parser.error("--interval must be 0.001..60 and --timeout 0.01..60 seconds")
    if args.stdin == bool(args.urls):
        parser.error("give URLs, or --stdin (and no URL)")
    try:
        if args.stdin:
            serve(sys.stdin, sys.stdout, args.timeout)
            return 0
        for obs in rounds(args.urls, args.interval, args.timeout, args.duration):
            print(json.dumps(obs), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

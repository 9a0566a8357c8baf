"""Probing singletons from inside every server: who answers, and when.

A partition makes two views of the network: what the cut-off server sees and
what the others see. ``python -m sdcadm.lab.probe URL...`` (run inside a
server's namespace with ``sdcadm lab exec SERVER --``, or on the host) GETs
``URL/ping`` of every URL each ``--interval`` seconds, all at once, and
prints one JSON line per round on stdout: ``{"t": <CLOCK_MONOTONIC, the same
clock for every process of the machine>, "pids": {url: pid or null}}``; a
pid only when the answer was 2xx (the workload's /ping says its pid).

``concurrency`` turns rounds from every side into the measure that matters:
per URL, each answering process is seen from its first to its last 2xx;
the most processes whose spans overlap in time is how many copies of that
singleton served at once (1 is the promise). Pure, unit-tested.
"""

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from sdcadm.health import http_open


def ping_pid(url, timeout):
    """The pid that answered ``url``/ping with 2xx, else None."""
    try:
        with http_open(url.rstrip("/") + "/ping", timeout) as resp:
            if 200 <= resp.status < 300:
                return json.loads(resp.read()).get("pid")
    except (OSError, ValueError, AttributeError):
        pass
    return None


def rounds(urls, interval, timeout, stop_after=None):
    """Yield one round after another: {"t", "pids"}."""
    with ThreadPoolExecutor(max(1, len(urls))) as pool:
        started = time.monotonic()
        while stop_after is None or time.monotonic() - started < stop_after:
            t = time.monotonic()
            pids = dict(zip(urls, pool.map(lambda u: ping_pid(u, timeout), urls)))
            yield {"t": t, "pids": pids}
            time.sleep(max(0.0, interval - (time.monotonic() - t)))


def spans(observations):
    """{url: {pid: [first_t, last_t]}} of the 2xx answers in ``observations``
    (rounds from any number of sides)."""
    out = {}
    for obs in observations:
        for url, pid in obs["pids"].items():
            if pid is not None:
                span = out.setdefault(url, {}).setdefault(pid, [obs["t"], obs["t"]])
                span[0], span[1] = min(span[0], obs["t"]), max(span[1], obs["t"])
    return out


def concurrency(observations):
    """{url: the most distinct processes seen serving it at once}: spans of
    different pids that overlap in time count together."""
    result = {}
    for url, by_pid in spans(observations).items():
        events = sorted([(first, 1) for first, _ in by_pid.values()]
                        + [(last, -1) for _, last in by_pid.values()],
                        key=lambda e: (e[0], -e[1]))  # a start at t meets an end at t
        most = live = 0
        for _, delta in events:
            live += delta
            most = max(most, live)
        result[url] = most
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sdcadm.lab.probe",
        description="Probe URL/ping every INTERVAL seconds; one JSON line per round.")
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=0.3)
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: when killed)")
    args = parser.parse_args(argv)
    if not 0.001 <= args.interval <= 60 or not 0.01 <= args.timeout <= 60:
        parser.error("--interval must be 0.001..60 and --timeout 0.01..60 seconds")
    try:
        for obs in rounds(args.urls, args.interval, args.timeout, args.duration):
            print(json.dumps(obs), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`sdcadm lab degrade --rate`: what a rate limit does to a transfer, next to
the same link unlimited, in one run.

Builds a netns lab (1 headnode, 1 compute node; root), then for each rate
(and the unlimited link first and last) sends ``--size`` bytes from the host
to a listener inside cn0, ``--runs`` times, timing until the listener has
read them all. Prints one JSON object: per rate the times, the median, the
throughput and its ratio to the configured rate (a token bucket lets its
burst through at once, so a small transfer can beat the rate a little).
Never asserts.

    .venv/bin/python bench/degrade.py [--rates 400,2000,8000] [--size 600K] [--runs 3]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdata import parse_size  # noqa: E402 (bench/ is on sys.path)

BIN = Path(sys.executable).parent


def sdcadm(*argv):
    return subprocess.run([str(BIN / "sdcadm"), *argv], capture_output=True, text=True,
                          check=True).stdout


def send_to(directory, host, address, size):
    """Seconds to send ``size`` bytes from the host to a listener inside
    ``host`` (at ``address``), until it has read them all."""
    code = ("import socket\n"
            f"s = socket.create_server(({address!r}, 0))\n"
            "print(s.getsockname()[1], flush=True)\n"
            "c, _ = s.accept(); n = 0\n"
            "while (b := c.recv(65536)): n += len(b)\n"
            "print(n, flush=True)\n")
    listener = subprocess.Popen([str(BIN / "sdcadm"), "lab", "exec", "--dir", str(directory),
                                 host, "--", sys.executable, "-c", code],
                                stdout=subprocess.PIPE, text=True)
    try:
        port = int(listener.stdout.readline())
        started = time.monotonic()
        with socket.create_connection((address, port), timeout=60) as conn:
            conn.sendall(b"x" * size)
        received = int(listener.stdout.readline())
        if received != size:
            raise RuntimeError(f"the listener read {received} of {size} bytes")
        return time.monotonic() - started
    finally:
        listener.kill()
        listener.wait()


def measure(directory, address, size, runs):
    times = [send_to(directory, "cn0", address, size) for _ in range(runs)]
    median = statistics.median(times)
    return {"runs_s": [round(t, 3) for t in times], "median_s": round(median, 3),
            "kbit_per_s": round(size * 8 / 1000 / median, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="400,2000,8000", help="kbit/s, comma-separated")
    parser.add_argument("--size", default="600K")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--net", default="127.83.0.0/24")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/degrade.py builds a netns lab: run it as root")
    size, rates = parse_size(args.size), [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="degrade-bench-") as tmp:
        directory = Path(tmp) / "lab"
        sdcadm("lab", "up", "--dir", str(directory), "--isolation", "netns", "--net", args.net,
               "--headnodes", "1", "--computenodes", "1", "--services", "binder",
               "--timeout", "120")
        try:
            cn0 = next(s for s in json.loads(sdcadm("lab", "status", "--dir", str(directory),
                                                    "-j")) if s["hostname"] == "cn0")
            address = cn0["admin_ip"]
            out = {"size_bytes": size, "runs": args.runs, "unlimited_before":
                   measure(directory, address, size, args.runs), "rates": {}}
            for rate in rates:
                sdcadm("lab", "degrade", "--dir", str(directory), "cn0", "--rate", str(rate))
                got = measure(directory, address, size, args.runs)
                got["over_rate"] = round(got["kbit_per_s"] / rate, 3)
                out["rates"][str(rate)] = got
                sdcadm("lab", "degrade", "--dir", str(directory), "cn0", "--clear")
            out["unlimited_after"] = measure(directory, address, size, args.runs)
        finally:
            subprocess.run([str(BIN / "sdcadm"), "lab", "destroy", "--dir", str(directory)],
                           capture_output=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

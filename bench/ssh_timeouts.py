#!/usr/bin/env python3
"""Benchmark how fast SSHTransport reports what goes wrong, and how soon a stream yields.

Over a LabSshd on a random loopback address, ``--runs`` times each:

* command timeout: ``run(["sleep", "3"], timeout=0.5)`` until TransportError;
* silent listener: a socket that accepts and never speaks, ``connect_timeout=1``,
  until Unreachable;
* refused port: until Unreachable;
* stream: ``echo one; sleep 1; echo two`` -- when the first line arrives, and
  when the command ends.

Prints ONE JSON line: best and median seconds of each, and for the two
timeouts the overshoot past the configured timeout. Target: each failure
reported within its timeout + 1 s, the first streamed line before the command
ends (reported as met or not, never asserted; the tests check the behaviour,
this measures it).

    .venv/bin/python bench/ssh_timeouts.py [--runs 5]
"""

import argparse
import json
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sdcadm.errors import TransportError, Unreachable  # noqa: E402
from sdcadm.lab.sshd import LabSshd  # noqa: E402
from sdcadm.transport.ssh import SSHTransport  # noqa: E402

COMMAND_TIMEOUT, CONNECT_TIMEOUT, MARGIN = 0.5, 1.0, 1.0


def timed(call, expected):
    started = time.monotonic()
    try:
        call()
    except expected:
        return time.monotonic() - started
    raise RuntimeError(f"{call} did not raise {expected.__name__}")


def figures(values, timeout=None):
    doc = {"best_s": round(min(values), 3), "median_s": round(statistics.median(values), 3)}
    if timeout is not None:
        doc["timeout_s"] = timeout
        doc["worst_overshoot_s"] = round(max(values) - timeout, 3)
        doc["meets_target"] = max(values) <= timeout + MARGIN
    return doc


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # its threads log the failures we cause
    host = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.1"
    work = tempfile.mkdtemp(prefix="sdcadm-bench-ssh-")
    sshd = LabSshd(work, [host], free_port(host))
    sshd.setup()
    sshd.start()
    timeouts, silent, refused, first, whole = [], [], [], [], []
    try:
        with sshd.transport(host, connect_timeout=5) as t:
            for _ in range(args.runs):
                timeouts.append(timed(lambda: t.run(["sleep", "3"], timeout=COMMAND_TIMEOUT),
                                      TransportError))
                started = time.monotonic()
                for n, _line in enumerate(t.stream(["sh", "-c", "echo one; sleep 1; echo two"])):
                    if n == 0:
                        first.append(time.monotonic() - started)
                whole.append(time.monotonic() - started)
        with socket.socket() as listener:
            listener.bind((host, 0))
            listener.listen(64)  # the kernel completes the handshake; nobody ever speaks
            mute = SSHTransport(host, listener.getsockname()[1], user=sshd.user,
                                identity=sshd.identity, known_hosts=sshd.known_hosts,
                                connect_timeout=CONNECT_TIMEOUT)
            for _ in range(args.runs):
                silent.append(timed(lambda: mute.run(["true"]), Unreachable))
        shut = SSHTransport(host, free_port(host), user=sshd.user, identity=sshd.identity,
                            known_hosts=sshd.known_hosts, connect_timeout=CONNECT_TIMEOUT)
        for _ in range(args.runs):
            refused.append(timed(lambda: shut.run(["true"]), Unreachable))
    finally:
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)
    stream = {"first_line": figures(first), "command_end": figures(whole),
              "meets_target": max(first) < min(whole)}
    print(json.dumps({
        "bench": "ssh-timeouts", "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command_timeout": figures(timeouts, COMMAND_TIMEOUT),
        "silent_listener": figures(silent, CONNECT_TIMEOUT),
        "refused_port": figures(refused), "stream": stream}, sort_keys=True))


if __name__ == "__main__":
    main()

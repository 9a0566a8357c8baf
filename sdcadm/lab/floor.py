"""The floor of a restore on this machine: one lab workload process started
and answering its health check, nothing else.

A level of a restore cannot come up faster than its instances' processes
start and first answer; the drill reports this next to each level's time
(``rto_parts``) so that what the restore machinery adds is visible. It lays out
what the lab's images hold (``workload.py`` and ``instance_lease.py``) in a
scratch directory, as a zone root, runs it the way an agent does (``python3
workload.py`` there, no lease, no dataset) on a free loopback port, with the
lab running around it, and times spawn to first ``/ping`` answer.
"""

import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sdcadm.health import probe
from sdcadm.lab import images

TIMEOUT = 30.0


def image_files():
    """{name: bytes} of what every lab image holds (``lab/images.py``)."""
    return {images.WORKLOAD: images.workload_source(),
            images.LEASE_LIBRARY: images.lease_library_source()}


def _free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_to_answer(host="127.0.0.1", timeout=TIMEOUT, poll=0.005):
    """Seconds from spawning one workload to its first 2xx ``/ping``."""
    port = _free_port(host)
    env = {**os.environ, "SDC_INSTANCE_IP": host, "SDC_INSTANCE_PORT": str(port),
           "SDC_INSTANCE_UUID": "00000000-0000-4000-8000-00000000f100",
           "SDC_INSTANCE_ALIAS": "floor0", "SDC_INSTANCE_SERVICE": "floor",
           "SDC_INSTANCE_DATA": "", "SDC_INSTANCE_LEASE": ""}
    url = f"http://{host}:{port}/ping"
    with tempfile.TemporaryDirectory(prefix="sdcadm-floor-") as root:
        for name, content in image_files().items():
            (Path(root) / name).write_bytes(content)
        started = time.monotonic()
        proc = subprocess.Popen(["python3", images.WORKLOAD], cwd=root, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while probe(url, timeout=1.0) is not None:
                if proc.poll() is not None or time.monotonic() - started > timeout:
                    return None
                time.sleep(poll)
            return time.monotonic() - started
        finally:
            proc.kill()
            proc.wait()


def floor_s(runs=3):
    """The median of ``runs`` starts (None when the workload would not answer)."""
    times = [start_to_answer() for _ in range(runs)]
    if any(t is None for t in times):
        return None
    return round(statistics.median(times), 3)

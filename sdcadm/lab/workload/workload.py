"""The lab's workload: a tiny HTTP service standing in for a core service.

Standard library only: it runs inside an instance root, started by the agent
from the image manifest's command. Environment (set by the agent):

  SDC_INSTANCE_IP, SDC_INSTANCE_PORT   where to listen
  SDC_INSTANCE_UUID, SDC_INSTANCE_ALIAS, SDC_INSTANCE_SERVICE
  SDC_INSTANCE_DATA                    the delegate dataset directory ("" if none)
  SDC_INSTANCE_LEASE                   singletons only: the instance lease file
                                       (instance_lease.py, shipped next to this file)

Instance lease: a leased workload checks its lease after a PUT is durable and
before answering, and on every request; once the lease is not valid it answers
503 and exits (so does a watch thread when no request comes), whatever the
request, /ping included: a fenced singleton must not look alive.

Address: in a loopback lab every 127/8 address can be bound. In a netns lab
(docs/lab.md) the instance's address is not on its server yet: the workload
adds it to ``lo`` in its server's network namespace (the kernel then answers
ARP for it on the server's link), announces it with a gratuitous ARP (peers
that knew the old server's MAC for it learn the new one at once), and removes
it when it stops, fenced or not. A process SIGKILLed (by its agent at its
lease's end, say) cannot: a guardian, started when the address is claimed,
waits for the end of this process (EOF on a pipe only it holds) and removes
the address then -- as a zone's NIC goes with the zone -- unless another
process of this instance, on this server, has claimed it since: each claim
holds a lock on ``.address.lock`` in the instance's root for the life of its
process, and the guardian removes only with that lock free (``flock -n``).

For tests only: SIGUSR1 makes the process ignore SIGTERM from then on (a slow
stop, the case the agent's SIGKILL exists for); /ping then shows
``"ignores_sigterm": true``.

GET /ping -> 200 JSON identity, and ``pings``: how many /ping requests this
process has answered (this one included), so that a test can tell that
something else (a watcher, a procedure) has been probing it. PUT /data/KEY stores the body durably (temp
file, fsync, rename, fsync of the directory) before answering 201; GET
/data/KEY returns it; GET /data lists keys. Without a delegate dataset the
/data routes answer 501, so a test cannot mistake a stateless service for a
stateful one.
"""

import errno
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import instance_lease  # shipped next to this file in the image
except ImportError:  # imported as a module of sdcadm (tests, tools)
    from sdcadm import instance_lease

KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_BODY = 16 * 1024 * 1024

PINGS = itertools.count(1)  # next() is atomic: safe across the server's threads

ENV = {k: os.environ.get("SDC_INSTANCE_" + k.upper(), "")
       for k in ("ip", "port", "uuid", "alias", "service", "data")}

LEASE = instance_lease.LeaseGuard.from_env()
FENCED = threading.Event()
IGNORES_SIGTERM = threading.Event()


CLAIMED = []  # the address this process added to its namespace, if it did


def _ip_command():
    return shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or "ip"


LOCK_NAME = ".address.lock"
LOCK_WAIT = 10.0     # seconds a claim waits for the lock (a guardian removing the address)
HELD = []            # the lock's file and the guardian's pipe: open for this process's life


def _lock(path):
    """Hold an exclusive flock on ``path`` for this process's life (a guardian
    of an earlier process may hold it while it removes the address: wait)."""
    f = open(path, "a+")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                print(f"{path}: still locked after {LOCK_WAIT:g}s: claiming without it",
                      flush=True)
                break
            time.sleep(0.01)
    HELD.append(f)


def guard(ip, lock_path):
    """A guardian that removes ``ip`` from ``lo`` once this process is gone,
    unless the lock at ``lock_path`` is held again by then (a later process of
    this instance claimed the address). Its environment names no instance and
    its working directory is /: it is not taken for one."""
    read_end, write_end = os.pipe()
    lock_fd = os.open(lock_path, os.O_RDONLY)      # its own open file: its own flock
    script = 'read _; flock -n "$1" && exec "$2" addr del "$0"/32 dev lo'
    try:
        subprocess.Popen(["sh", "-c", script, ip, str(lock_fd), _ip_command()],
                         stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         pass_fds=(lock_fd,), cwd="/", env={"PATH": os.environ.get("PATH", "")},
                         start_new_session=True)   # a signal to our group does not reach it
    finally:
        os.close(read_end)
        os.close(lock_fd)
    HELD.append(write_end)                         # closed by the kernel when we end


def claim(ip):
    """Add ``ip`` to ``lo`` in this network namespace, guard it and announce it."""
    lock_path = os.path.abspath(LOCK_NAME)         # the instance's root: our working directory
    _lock(lock_path)
    proc = subprocess.run([_ip_command(), "addr", "add", f"{ip}/32", "dev", "lo"],
                          capture_output=True, text=True)
    if proc.returncode != 0 and not any(m in proc.stderr for m in ("File exists",
                                                                    "already assigned")):
        raise OSError(errno.EADDRNOTAVAIL, f"cannot add {ip} to lo: {proc.stderr.strip()}")
    CLAIMED.append(ip)
    guard(ip, lock_path)
    announce(ip)


def release():
    for ip in CLAIMED:
        subprocess.run([_ip_command(), "addr", "del", f"{ip}/32", "dev", "lo"],
                       capture_output=True)
    CLAIMED.clear()


def announce(ip):
    """A gratuitous ARP for ``ip`` on every Ethernet link of this namespace."""
    out = subprocess.run([_ip_command(), "-j", "link", "show"], capture_output=True,
                         text=True).stdout
    for link in json.loads(out or "[]"):
        if link.get("link_type") != "ether" or not link.get("address"):
            continue
        mac = bytes.fromhex(link["address"].replace(":", ""))
        addr = socket.inet_aton(ip)
        frame = (b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
                 + mac + addr + b"\x00" * 6 + addr)
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
                s.bind((link["ifname"], 0))
                s.send(frame)
        except OSError as e:
            print(f"gratuitous ARP for {ip} on {link['ifname']}: {e}", flush=True)


def make_server(ip, port):
    if not ip.startswith("127."):
        # a netns lab: the address is this instance's to hold, even when a
        # process of it killed earlier left it on lo
        claim(ip)
    return ThreadingHTTPServer((ip, port), Handler)


def fence(reason):
    """The lease is gone: never answer 2xx again, and exit (from any thread)."""
    if not FENCED.is_set():
        FENCED.set()
        print(f"instance lease not valid ({reason}): stopping", flush=True)
        release()
        os._exit(75)  # os._exit: no handler, no thread may answer once it runs


class Handler(BaseHTTPRequestHandler):
    server_version = "sdcadm-workload/1"

    def log_message(self, fmt, *args):  # quiet: the agent keeps our stdout as the log
        pass

    def _send(self, code, body, ctype="application/json"):
        if not isinstance(body, bytes):
            body = (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _key(self):
        parts = self.path.split("?", 1)[0].split("/")
        if len(parts) != 3 or parts[1] != "data":
            return None
        return parts[2] if KEY_RE.match(parts[2]) and ".." not in parts[2] else False

    def _leased(self):
        """False (after answering 503 and fencing) once the lease is not valid."""
        if not FENCED.is_set() and LEASE.valid():
            return True
        try:
            self._send(503, {"error": "instance lease expired: this instance is fenced",
                             "reason": LEASE.reason})
        finally:
            fence(LEASE.reason)
        return False

    def do_GET(self):
        if not self._leased():
            return None
        path = self.path.split("?", 1)[0]
        if path == "/ping":
            return self._send(200, {"ok": True, "uuid": ENV["uuid"], "alias": ENV["alias"],
                                    "service": ENV["service"], "pid": os.getpid(),
                                    "pings": next(PINGS), "leased": LEASE.leased,
                                    "ignores_sigterm": IGNORES_SIGTERM.is_set()})
        if not ENV["data"] and path.startswith("/data"):
            return self._send(501, {"error": "this service has no delegate dataset"})
        if path == "/data":
            return self._send(200, sorted(n for n in os.listdir(ENV["data"]) if KEY_RE.match(n)))
        key = self._key()
        if not key:
            return self._send(400 if key is False else 404, {"error": "bad path"})
        try:
            with open(os.path.join(ENV["data"], key), "rb") as f:
                return self._send(200, f.read(), "application/octet-stream")
        except FileNotFoundError:
            return self._send(404, {"error": f"no key {key}"})

    def do_PUT(self):
        if not self._leased():
            return None
        if not ENV["data"]:
            return self._send(501, {"error": "this service has no delegate dataset"})
        key = self._key()
        if not key:
            return self._send(400, {"error": "PUT /data/KEY with KEY of [A-Za-z0-9._-]"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._send(411, {"error": "Content-Length required"})
        if not 0 <= length <= MAX_BODY:
            return self._send(413, {"error": f"body over {MAX_BODY} bytes"})
        body = self.rfile.read(length)
        final = os.path.join(ENV["data"], key)
        tmp = os.path.join(ENV["data"], f".{key}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
        dfd = os.open(ENV["data"], os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        # Durable now; acknowledged only if the lease still holds (a process
        # frozen since the check above must not answer 201 after its lease).
        if not self._leased():
            return None
        return self._send(201, {"key": key, "bytes": len(body)})


def main():
    server = make_server(ENV["ip"] or "127.0.0.1", int(ENV["port"] or 8080))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: None if IGNORES_SIGTERM.is_set() else sys.exit(0))
    signal.signal(signal.SIGUSR1, lambda *_: IGNORES_SIGTERM.set())
    if not LEASE.valid():
        fence(LEASE.reason)
    LEASE.watch(fence)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        release()


if __name__ == "__main__":
    main()

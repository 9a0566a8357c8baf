"""A real one-member etcd cluster on a random loopback address, for tests."""

import os
import shutil
import signal
import subprocess

import requests

ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
NO_ETCD = "etcd not installed (apt-get install etcd-server; `make test` does it as root)"


class EtcdServer:
    def __init__(self, directory, address, client_port, peer_port):
        self.directory = directory
        self.address = address
        self.endpoint = f"{address}:{client_port}"
        self.peer = f"http://{address}:{peer_port}"
        self.proc = None

    def argv(self):
        client = f"http://{self.endpoint}"
        return [ETCD, "--name", "t", "--data-dir", str(self.directory / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
                "--initial-cluster", f"t={self.peer}",
                # A short election: the member leads at once, and leases can be
                # as short as 1 s (etcd's minimum TTL follows the election timeout).
                "--heartbeat-interval", "10", "--election-timeout", "100",
                "--logger", "zap", "--log-outputs", str(self.directory / "etcd.log")]

    def start(self):
        from tests.conftest import wait_for

        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "etcd.out", "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        wait_for(lambda: self.proc.poll() is not None or self.healthy(), 30,
                 f"etcd answering on {self.endpoint}")
        if self.proc.poll() is not None:
            raise AssertionError(f"etcd exited {self.proc.returncode}; see "
                                 f"{self.directory / 'etcd.log'}")

    def healthy(self):
        try:
            return requests.get(f"http://{self.endpoint}/health", timeout=1).json()["health"] \
                == "true"
        except (requests.RequestException, ValueError, KeyError):
            return False

    def pause(self):
        """Freeze the member (SIGSTOP): it holds its sockets and answers nothing."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc is None:
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def revoke_lease_of(self, key):
        """End the lease ``key`` is bound to now, as etcd does when its TTL runs out."""
        import base64

        def b64(text):
            return base64.b64encode(text.encode()).decode()

        base = f"http://{self.endpoint}/v3"
        kvs = requests.post(f"{base}/kv/range", json={"key": b64(key)}, timeout=5).json()
        lease = int((kvs.get("kvs") or [{}])[0].get("lease", 0))
        assert lease, f"{key} is not bound to a lease"
        requests.post(f"{base}/kv/lease/revoke", json={"ID": lease}, timeout=5).raise_for_status()

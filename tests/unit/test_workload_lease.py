"""The lab workload honours its instance lease (a real process, a lease file
this test writes): 201 while the lease holds; once it does not, 503 for
every request, /ping included, and the process exits. Not leased (no
SDC_INSTANCE_LEASE): serves whatever files lie around."""

import http.client
import os
import subprocess
import sys

from sdcadm import instance_lease
from sdcadm.lab.images import lease_library_source, workload_source
from tests.conftest import free_port, random_address, wait_for

UUID = "00000000-0000-0000-0000-0000000000aa"


def start(tmp_path, lease=None):
    ip = random_address()
    port = free_port(ip)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    script = tmp_path / "workload.py"
    script.write_bytes(workload_source())
    (tmp_path / "instance_lease.py").write_bytes(lease_library_source())  # as in the image
    env = {"PATH": os.environ["PATH"], "SDC_INSTANCE_IP": ip, "SDC_INSTANCE_PORT": str(port),
           "SDC_INSTANCE_UUID": UUID, "SDC_INSTANCE_DATA": str(data),
           "SDC_INSTANCE_SERVICE": "sapi", "SDC_INSTANCE_ALIAS": "sapi0"}
    if lease is not None:
        env[instance_lease.ENV] = str(lease)
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
    wait_for(lambda: request(ip, port, "GET", "/ping")[0] or proc.poll() is not None, 20,
             "the workload listening")
    return proc, ip, port


def request(ip, port, method, path, body=None):
    try:
        conn = http.client.HTTPConnection(ip, port, timeout=5)
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError as e:
        return None, repr(e)


def test_expired_lease_means_503_everywhere_and_exit(tmp_path):
    lease = tmp_path / "lease"
    instance_lease.write(lease, instance_lease.now() + 3600, UUID)
    proc, ip, port = start(tmp_path, lease)
    try:
        assert request(ip, port, "PUT", "/data/k", b"v")[0] == 201
        assert request(ip, port, "GET", "/ping")[0] == 200
        instance_lease.write(lease, instance_lease.now() - 1, UUID)
        status, body = request(ip, port, "PUT", "/data/k2", b"v2")
        # 503, or nothing when the lease watch thread got there first
        assert status in (503, None), (status, body)
        assert proc.wait(20) == 75
        assert request(ip, port, "GET", "/ping")[0] is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_garbage_or_missing_lease_file_means_no_service(tmp_path):
    lease = tmp_path / "lease"
    lease.write_text("not a lease")
    proc, _, _ = start(tmp_path, lease)
    assert proc.wait(20) == 75, "a singleton with a garbage lease must not serve"
    lease.unlink()
    proc, _, _ = start(tmp_path, lease)
    assert proc.wait(20) == 75, "a singleton with no lease file must not serve"


def test_not_leased_serves(tmp_path):
    proc, ip, port = start(tmp_path)
    try:
        assert request(ip, port, "PUT", "/data/k", b"v")[0] == 201
        assert b'"leased": false' in request(ip, port, "GET", "/ping")[1]
    finally:
        proc.kill()
        proc.wait()

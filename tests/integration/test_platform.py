"""`sdcadm platform install` on a real lab of two headnodes (etcd store, SSH
between them with host keys checked): installed from a file on hn0, hn1's
copy read from outside (its root directory) matches byte for byte, a second
run changes nothing ("already there"), `usbkey status` sees no drift and
`platform ls` shows both headnodes holding it."""

import hashlib
import io
import json
import tarfile

import pytest

from sdcadm.lab.state import load_state
from tests.conftest import env_of, needs_sshd, run, running_lab

pytestmark = [pytest.mark.integration, needs_sshd]

V = "20240101T000000Z"


def sdcadm(directory, *argv):
    return run("sdcadm", *argv, env=env_of(directory, "hn0"), check=False, timeout=120)


def platform_file(path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in ((f"platform-{V}/i86pc/amd64/boot_archive", b"\x7fboot" * 20000),
                           (f"platform-{V}/root.password", b"secret\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_platform_install_reaches_every_headnode_once(tmp_path):
    directory = tmp_path / "dc"
    src = platform_file(tmp_path / f"platform-{V}.tgz")
    with running_lab(directory, "--headnodes", "2", "--computenodes", "0", "--services",
                     "binder"):
        lab = load_state(directory)
        hn1 = lab.server_root("hn1") / "usbkey" / "platforms" / V

        dry = sdcadm(directory, "platform", "install", V, "--from", str(src), "-n")
        assert dry.returncode == 0, dry.stderr
        assert "hn1: send it over SSH, check its sha256 there, add it to its usbkey" in dry.stdout
        assert not hn1.exists()

        done = sdcadm(directory, "platform", "install", V, "--from", str(src), "-y", "-j")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "succeeded"
        # from outside: the file in hn1's own root, and its manifest
        assert sha256(hn1 / "platform.tgz") == sha256(src)
        assert json.loads((hn1 / "manifest.json").read_text()) == {
            "format": "sdcadm-platform/1", "version": V, "size": src.stat().st_size,
            "sha256": sha256(src)}
        assert not (lab.server_root("hn1") / "var" / "sdcadm" / f"platform-{V}.tgz").exists()
        before = {p.name: p.stat().st_mtime_ns for p in hn1.iterdir()}

        again = sdcadm(directory, "platform", "install", V, "-y")
        assert again.returncode == 0, again.stderr
        assert "already there on every headnode (hn0, hn1)" in again.stdout, again.stdout
        assert {p.name: p.stat().st_mtime_ns for p in hn1.iterdir()} == before

        status = sdcadm(directory, "usbkey", "status", "-j")
        assert status.returncode == 0, status.stdout + status.stderr
        assert [(r["headnode"], r["state"]) for r in json.loads(status.stdout)["headnodes"]] == [
            ("hn1", "ok")]

        listed = sdcadm(directory, "platform", "ls", "-j")
        assert listed.returncode == 0, listed.stderr
        rows = {r["version"]: r for r in json.loads(listed.stdout)}
        assert rows[V]["headnodes"] == ["hn0", "hn1"] and rows[V]["missing"] == []

"""A DC of two headnodes over real files, a real sqlite store and a small
in-process dataset backend (plain copies; the real `dir` and `zfs` backends
are exercised by the integration tests), shared by the restore-data tests."""

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from sdcadm.config import load_config
from sdcadm.datasets.base import Copy, DatasetBackend, SyncResult
from sdcadm.images import build_image
from sdcadm.model import Instance, Server, Service
from sdcadm.restore_data.layout import restore_layout
from sdcadm.restore_data.puller import Puller
from sdcadm.restore_data.verify import verify
from tests.conftest import FakeClock, store_at

HN0, HN1 = "00000000-0000-4000-8000-000000000000", "11111111-1111-4111-8111-111111111111"
SAPI, IMGAPI, VMAPI, BINDER = (f"a0000000-0000-4000-8000-00000000000{i}" for i in range(4))
IMG = "b0000000-0000-4000-8000-000000000001"
MANIFEST = {"name": "sapi", "version": "1", "command": ["true"]}
KEY = "c2RjYWRtIHRlc3Qga2V5OiBub3QgYSBzZWNyZXQgYXQgYWxs"   # the DC's restore-data key


class CopyBackend(DatasetBackend):
    """snapshots/<n>/ full copies of a local source directory, ``current`` a symlink."""

    name = "dir"

    def __init__(self):
        self.fail = None
        self.synced = 0
        self.vanish = ()   # paths of the source that "vanish" while copied (a busy source)

    def sync(self, source, replica_dir, receiver_id, *, reseed=False, observer=None):
        if self.fail:
            raise self.fail
        replica = Path(replica_dir)
        snaps = replica / "snapshots"
        snaps.mkdir(parents=True, exist_ok=True)
        self.synced += 1
        name = f"{time.time():.6f}-{self.synced:04d}"
        tmp = snaps / f".tmp-{name}"
        shutil.copytree(source.path, tmp, symlinks=True)
        for gone in self.vanish:
            (tmp / gone).unlink()
        os.rename(tmp, snaps / name)
        link = replica / ".current.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(f"snapshots/{name}")
        os.replace(link, replica / "current")
        if observer:
            observer(type("E", (), {"message": f"copied {name}", "done": 1, "total": 1})())
        return SyncResult(snapshot=name, guid=None, bytes_moved=1, vanished=tuple(self.vanish))

    def copies(self, replica_dir):
        snaps = Path(replica_dir) / "snapshots"
        names = sorted(p.name for p in snaps.iterdir() if not p.name.startswith(".")) \
            if snaps.is_dir() else []
        return [Copy(n, 0.0) for n in names]

    def current_path(self, replica_dir):
        current = Path(replica_dir) / "current"
        return str(current.resolve()) if current.exists() else None

    def clone(self, replica_dir, target, snapshot=None, name=None):
        snapshot = snapshot or self.copies(replica_dir)[-1].name
        shutil.copytree(Path(replica_dir) / "snapshots" / snapshot, target, symlinks=True)
        return str(target)

    def destroy_clone(self, target, name=None):
        shutil.rmtree(target, ignore_errors=True)

    def prune(self, replica_dir, keep):
        names = [c.name for c in self.copies(replica_dir)]
        gone = names[:-keep] if keep else names
        for n in gone:
            shutil.rmtree(Path(replica_dir) / "snapshots" / n)
        return gone

    def destroy(self, replica_dir):
        shutil.rmtree(replica_dir, ignore_errors=True)


class DC:
    """A DC of two headnodes in a temporary directory; hn1 is the receiver."""

    def __init__(self, tmp, **restore):
        self.tmp = Path(tmp)
        self.images = self.tmp / "images"
        self.image = build_image(self.images, IMG, MANIFEST, {"bin/run": b"#!/bin/sh\n"})
        self.clock = FakeClock(time.time())
        self.store = store_at(self.tmp / "dc.sqlite", clock=self.clock, create=True)
        for uuid, name, ip in ((HN0, "hn0", "127.0.0.2"), (HN1, "hn1", "127.0.0.3")):
            self.store.put_server(Server(uuid, name, ip, headnode=True))
            self.store.heartbeat(uuid)
        self.store.put_image(self.image)
        for name in ("sapi", "imgapi", "vmapi", "binder"):
            self.store.put_service(Service(name, IMG))
        for uuid, name, where, ds in ((SAPI, "sapi", HN0, True), (IMGAPI, "imgapi", HN0, True),
                                      (VMAPI, "vmapi", HN0, False), (BINDER, "binder", HN0, True)):
            self.store.create_instance(Instance(uuid, f"{name}0", name, where, IMG, "127.0.1.1",
                                                delegate_dataset=ds))
            if ds:
                self.data(uuid).mkdir(parents=True)
        self.key_file = self.tmp / "restore-data.key"
        self.key_file.write_text(KEY + "\n")
        cfg = {
            "server_uuid": HN1, "hostname": "hn1", "root": str(self.tmp / "hn1"),
            "restore_data_dir": str(self.tmp / "hn1" / "rd"), "image_source": str(self.images),
            "store": {"path": str(self.tmp / "dc.sqlite")},
            "agent": {"heartbeat_timeout": 3600},
            "restore_data": {"source_root_template": str(self.tmp / "{hostname}"),
                             "key_file": str(self.key_file), **restore},
            "datasets": {"keep": 2},
        }
        path = self.tmp / "hn1.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.config = load_config(path, environ={})
        self.backend = CopyBackend()
        self.layout = restore_layout(self.config)
        self.puller = Puller(self.config, lambda: self.store, self.backend,
                             transport_factory=lambda host: None)

    def data(self, uuid):
        return self.tmp / "hn0" / "zones" / uuid / "data"

    def sync(self, **kw):
        events = []
        summary = self.puller.sync(observer=events.append, **kw)
        return summary, events

    def verify(self, services=None):
        return verify(self.layout, self.backend, services)


@pytest.fixture
def dc(tmp_path):
    d = DC(tmp_path)
    (d.data(SAPI) / "canary").write_bytes(b"hello")
    (d.data(SAPI) / "sub").mkdir()
    (d.data(SAPI) / "sub" / "deep").write_bytes(b"x" * 1000)
    (d.data(SAPI) / "inside-link").symlink_to("sub/deep")
    (d.data(IMGAPI) / "img").write_bytes(b"image data")
    yield d
    d.store.close()


def row(dc, alias):
    return next(r for r in dc.store.list_restore_status(HN1) if r.alias == alias)


def problems(report):
    return [p for s in report.services for p in s.problems] + report.problems

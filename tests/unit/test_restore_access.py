"""Reading a copy back for `service restore`: payload, images, a clone."""

import time
from pathlib import Path

import pytest

from sdcadm.fsutil import sha256_file
from sdcadm.restore_data.access import RestoreData, holdings
from tests.unit.restore_dc import dc  # noqa: F401 (a fixture)
from tests.unit.restore_dc import BINDER, HN0, HN1, IMG, SAPI, VMAPI


def test_restore_api_gives_payload_images_and_a_clone(dc, tmp_path):
    dc.sync()
    data = RestoreData(dc.config, dc.backend)
    copy = data.instance_copy(SAPI)
    assert copy.service == "sapi" and copy.alias == "sapi0" and copy.source["hostname"] == "hn0"
    assert copy.instance.uuid == SAPI and copy.payload["image"]["uuid"] == IMG
    assert [(i.uuid, p.name) for i, p in copy.images] == [(IMG, f"{IMG}.file")]
    assert copy.as_of and copy.snapshot
    target = tmp_path / "hn1" / "zones" / "new" / "data"
    path = Path(data.clone_dataset(copy, target))
    assert (path / "canary").read_bytes() == b"hello"
    assert (path / "inside-link").is_symlink()
    installed = data.install_images(copy, tmp_path / "hn1" / "images")
    assert sha256_file(installed[0]) == dc.image.sha256
    assert [c.alias for c in data.copies(source=HN0)] == ["imgapi0", "sapi0", "vmapi0"]
    assert data.copies(source=HN1) == []
    from sdcadm.errors import NotFound

    with pytest.raises(NotFound, match="no restore data of instance"):
        data.instance_copy(BINDER)
    vm = data.instance_copy(VMAPI)
    with pytest.raises(NotFound, match="no copy of vmapi0's delegate dataset"):
        data.clone_dataset(vm, tmp_path / "x")
    rows = holdings(dc.layout, time.time())
    assert {(r["service"], r["alias"], r["source"], r["status"]) for r in rows} == {
        ("imgapi", "imgapi0", "hn0", "ok"), ("sapi", "sapi0", "hn0", "ok"),
        ("vmapi", "vmapi0", "hn0", "ok")}

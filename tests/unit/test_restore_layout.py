"""Restore-data paths (DESIGN section 4) and the path-safety rule."""

import pytest

from sdcadm.fsutil import safe_relative
from sdcadm.restore_data.layout import RestoreLayout, image_names, vm_name

U1 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
U2 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


def test_paths_follow_the_design(tmp_path):
    layout = RestoreLayout(tmp_path)
    assert layout.dc_json == tmp_path / "dc.json"
    svc = tmp_path / "svc-imgapi"
    assert layout.service_dir("imgapi") == svc
    assert layout.service_json("imgapi") == svc / "service.json"
    assert layout.insts_json("imgapi") == svc / "insts.json"
    assert layout.vm_json("imgapi", U1) == svc / f"vm-{U1}.json"
    assert layout.image_json("imgapi", U2) == svc / "images" / f"{U2}.json"
    assert layout.image_file("imgapi", U2) == svc / "images" / f"{U2}.file"
    assert layout.dataset_dir("imgapi", U1) == svc / "datasets" / U1
    assert layout.manifest("imgapi") == svc / "manifest.json"
    assert vm_name(U1) == f"vm-{U1}.json"
    assert image_names(U2) == (f"images/{U2}.json", f"images/{U2}.file")


def test_locks_are_per_service_and_instance_and_hidden(tmp_path):
    layout = RestoreLayout(tmp_path)
    assert layout.service_lock("sapi") != layout.commit_lock("sapi")
    assert layout.instance_lock(U1).parent == tmp_path / ".locks"
    assert layout.pending("sapi").name.startswith(".")
    assert layout.committing("sapi").name.startswith(".")


def test_listing_what_exists(tmp_path):
    layout = RestoreLayout(tmp_path)
    assert layout.services() == []
    (tmp_path / "svc-sapi" / "datasets" / U1).mkdir(parents=True)
    (tmp_path / "svc-sapi" / "datasets" / "not-a-uuid").mkdir()
    (tmp_path / "svc-sapi" / f"vm-{U2}.json").write_text("{}")
    (tmp_path / "svc-sapi" / "vm-junk.json").write_text("{}")
    (tmp_path / "svc-imgapi").mkdir()
    (tmp_path / "svc-").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "svc-file").write_text("")
    assert layout.services() == ["imgapi", "sapi"]
    assert layout.dataset_uuids("sapi") == [U1]
    assert layout.vm_uuids("sapi") == [U2]
    assert layout.dataset_uuids("imgapi") == [] and layout.vm_uuids("nope") == []


@pytest.mark.parametrize("path,ok", [
    ("service.json", True), ("images/x.file", True), ("a/b/c", True), ("..hidden", True),
    ("a..b", True), ("../x", False), ("a/../b", False), ("..", False), ("/etc/passwd", False),
    ("", False), ("a//b", False), ("a\0b", False), (None, False),
])
def test_safe_relative(path, ok):
    assert safe_relative(path) is ok

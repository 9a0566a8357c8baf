"""`sdcadm image import`: an image enters the DC only when its file matches
its record and its manifest; anything wrong is refused and changes nothing."""

import json
import os

import pytest
from click.testing import CliRunner

from sdcadm.cli.main import cli
from sdcadm.images import build_image
from tests.conftest import isolate_cli, store_at

U1 = "30000000-0000-4000-8000-000000000001"
U2 = "30000000-0000-4000-8000-000000000002"
MANIFEST = {"name": "sapi", "version": "1.0.0", "command": ["/bin/true"]}


@pytest.fixture
def dc(tmp_path, monkeypatch):
    path = tmp_path / "dc.sqlite"
    store_at(path, create=True).close()
    config = tmp_path / "sdcadm.yaml"
    config.write_text(f"store:\n  path: {path}\nimage_source: {tmp_path / 'images'}\n")
    isolate_cli(monkeypatch, config)
    return tmp_path


@pytest.fixture
def built(tmp_path):
    out = tmp_path / "incoming"
    image = build_image(out, U1, MANIFEST, {"bin/run": b"#!/bin/sh\n"})
    return out, image


def sdcadm(*args):
    return CliRunner().invoke(cli, list(args))


def state(dc):
    store = store_at(dc / "dc.sqlite")
    try:
        images = store.list_images()
    finally:
        store.close()
    files = sorted(os.listdir(dc / "images")) if (dc / "images").exists() else []
    return images, files


def test_import_then_again(dc, built):
    out, image = built
    result = sdcadm("image", "import", str(out / f"{U1}.json"), "-j")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["already"] is False
    images, files = state(dc)
    assert images == [image] and files == [f"{U1}.file", f"{U1}.json"]
    assert (dc / "images" / f"{U1}.file").read_bytes() == (out / f"{U1}.file").read_bytes()
    again = sdcadm("image", "import", str(out / f"{U1}.json"))
    assert again.exit_code == 0 and "already imported" in again.stdout
    listed = sdcadm("image", "ls", "-H", "-o", "name,version")
    assert listed.stdout == "sapi\t1.0.0\n"


def tamper_record(out, **changes):
    path = out / f"{U1}.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("change, message", [
    ({"sha256": "0" * 64}, "has sha256"),
    ({"size": 12}, "its record says 12"),
    ({"version": "2.0.0"}, "holds sapi 1.0.0, its record says sapi 2.0.0"),
    ({"origin": U2}, "not imported"),
    ({"sha256": "nope"}, "does not match"),
])
def test_a_record_that_does_not_match_is_refused(dc, built, change, message):
    out, _ = built
    path = tamper_record(out, **change)
    result = sdcadm("image", "import", str(path))
    assert result.exit_code != 0
    assert message in result.stderr, result.stderr
    assert state(dc) == ([], [])


def test_a_tampered_file_is_refused(dc, built):
    out, _ = built
    with open(out / f"{U1}.file", "r+b") as f:
        f.seek(20)
        f.write(b"X")
    result = sdcadm("image", "import", str(out / f"{U1}.json"))
    assert result.exit_code == 1 and "has sha256" in result.stderr
    assert state(dc) == ([], [])


def test_a_missing_file_or_record_is_refused(dc, built):
    out, _ = built
    (out / f"{U1}.file").rename(out / "elsewhere.file")
    result = sdcadm("image", "import", str(out / f"{U1}.json"))
    assert result.exit_code == 1 and "--file" in result.stderr
    ok = sdcadm("image", "import", str(out / f"{U1}.json"), "--file", str(out / "elsewhere.file"))
    assert ok.exit_code == 0, ok.output
    missing = sdcadm("image", "import", str(out / "nope.json"))
    assert missing.exit_code == 1 and "cannot read image record" in missing.stderr


def test_another_file_under_an_existing_uuid_is_refused(dc, built, tmp_path):
    out, _ = built
    assert sdcadm("image", "import", str(out / f"{U1}.json")).exit_code == 0
    other = build_image(tmp_path / "other", U1, dict(MANIFEST, version="1.0.1"), {"x": b"y"})
    result = sdcadm("image", "import", str(tmp_path / "other" / f"{U1}.json"))
    assert result.exit_code == 1 and "already imported as sapi 1.0.0" in result.stderr
    images, _ = state(dc)
    assert [i.version for i in images] == ["1.0.0"] and other.version == "1.0.1"
    assert (dc / "images" / f"{U1}.file").read_bytes() == (out / f"{U1}.file").read_bytes()


def test_several_records_in_one_run_origin_first(dc, built, tmp_path):
    out, image = built
    child = build_image(out, U2, dict(MANIFEST, version="1.1.0"), {"bin/run": b"#!/bin/sh\n"},
                        origin=U1)
    result = sdcadm("image", "import", str(out / f"{U1}.json"), str(out / f"{U2}.json"), "-j")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["uuid"] for line in result.stdout.splitlines()] == [U1, U2]
    images, _ = state(dc)
    assert sorted(images, key=lambda i: i.uuid) == [image, child]


def test_several_records_stop_at_the_first_refused(dc, built, tmp_path):
    out, image = built
    result = sdcadm("image", "import", str(out / f"{U1}.json"), str(out / "nope.json"))
    assert result.exit_code == 1 and "cannot read image record" in result.stderr
    assert state(dc)[0] == [image]   # the one before it stays imported, as documented


def test_file_with_several_records_is_a_usage_error(dc, built):
    out, _ = built
    result = sdcadm("image", "import", str(out / f"{U1}.json"), str(out / f"{U1}.json"),
                    "--file", str(out / f"{U1}.file"))
    assert result.exit_code == 2 and "--file names the file of one image" in result.stderr
    assert state(dc) == ([], [])

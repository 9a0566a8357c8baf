"""`sdcadm usbkey build|verify|seed|diff` in process, on real directories."""

import json

import pytest
from click.testing import CliRunner

from sdcadm.cli.main import cli
from tests.conftest import isolate_cli


@pytest.fixture
def key(tmp_path, monkeypatch):
    root = tmp_path / "usbkey"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.json").write_text("{}")
    (root / "secrets").mkdir()
    (root / "secrets" / "token").write_text("secret")
    config = tmp_path / "sdcadm.yaml"
    config.write_text(f"usbkey_dir: {root}\nhostname: hn0\n")
    isolate_cli(monkeypatch, config)
    return root


def sdcadm(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_build_verify_diff_seed(key, tmp_path):
    out = tmp_path / "b.tgz"
    built = sdcadm("usbkey", "build", "-o", str(out), "-j")
    assert built.exit_code == 0, built.output
    doc = json.loads(built.stdout)
    assert doc["manifest"]["source"] == "hn0"
    assert sorted(doc["manifest"]["files"]) == ["images/a.json", "secrets/token"]
    assert sdcadm("usbkey", "verify", str(out)).exit_code == 0
    assert sdcadm("usbkey", "diff", str(out)).stdout.endswith("matches " + str(out) + "\n")
    (key / "images" / "a.json").write_text('{"changed": true}')
    drift = sdcadm("usbkey", "diff", str(out), "-j")
    assert drift.exit_code == 1
    assert json.loads(drift.stdout)["drift"] == [{"file": "images/a.json", "change": "changed"}]
    declined = sdcadm("usbkey", "seed", str(out), input="n\n")
    assert declined.exit_code == 1 and (key / "images" / "a.json").read_text() == '{"changed": true}'
    seeded = sdcadm("usbkey", "seed", str(out), "-y")
    assert seeded.exit_code == 0, seeded.output
    assert (key / "images" / "a.json").read_text() == "{}"


def test_a_bad_bundle_is_refused_and_the_usbkey_is_untouched(key, tmp_path):
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    for args in (["verify", str(bad)], ["seed", str(bad), "-y"], ["diff", str(bad)]):
        result = sdcadm("usbkey", *args)
        assert result.exit_code == 1
        assert "is not a complete gzip'd tar" in result.stderr
    assert (key / "images" / "a.json").read_text() == "{}"


def test_build_refuses_a_missing_directory(tmp_path, monkeypatch):
    config = tmp_path / "sdcadm.yaml"
    config.write_text(f"usbkey_dir: {tmp_path / 'nope'}\n")
    isolate_cli(monkeypatch, config)
    result = sdcadm("usbkey", "build", "-o", str(tmp_path / "b.tgz"))
    assert result.exit_code == 1 and "is not a directory" in result.stderr
    assert "usbkey_dir" in result.stderr

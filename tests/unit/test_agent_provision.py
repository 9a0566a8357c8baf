import io
import json
import tarfile

import pytest

from sdcadm.agent.provision import (
    Layout,
    depose,
    destroy,
    install_image,
    provision,
    read_manifest,
    read_payload,
)
from sdcadm.errors import ImageError, ValidationError
from sdcadm.fsutil import sha256_file
from sdcadm.lab.images import build_workload_image
from sdcadm.model import Image, Instance

ME = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def image(tmp_path):
    return build_workload_image(tmp_path / "images", "sapi")


def inst(image, n=1, delegate=True):
    return Instance(uuid=f"00000000-0000-0000-0000-{n:012d}", alias=f"sapi{n}", service="sapi",
                    server_uuid=ME, image=image.uuid, admin_ip="127.99.99.10", port=8080,
                    delegate_dataset=delegate)


def test_provision_lays_out_the_zone(tmp_path, image):
    layout = Layout(tmp_path / "root")
    i = inst(image)
    payload = provision(layout, i, image, tmp_path / "images")
    assert read_payload(layout, i.uuid) == payload
    assert payload["instance"]["uuid"] == i.uuid and payload["image"]["uuid"] == image.uuid
    assert read_manifest(layout, i.uuid)["command"] == ["python3", "workload.py"]
    assert (layout.zone_root(i.uuid) / "workload.py").is_file()
    assert layout.data(i.uuid).is_dir()
    assert sha256_file(layout.images / f"{image.uuid}.file") == image.sha256
    assert layout.zone_uuids() == [i.uuid]


def test_reprovisioning_keeps_the_data(tmp_path, image):
    layout = Layout(tmp_path / "root")
    i = inst(image)
    provision(layout, i, image, tmp_path / "images")
    (layout.data(i.uuid) / "k").write_text("v")
    (layout.zone_root(i.uuid) / "junk").write_text("x")
    provision(layout, i, image, tmp_path / "images")
    assert (layout.data(i.uuid) / "k").read_text() == "v"
    assert not (layout.zone_root(i.uuid) / "junk").exists()
    assert sorted(p.name for p in layout.zones.iterdir()) == [i.uuid]  # no staging left


def test_no_data_directory_without_delegate_dataset(tmp_path, image):
    layout = Layout(tmp_path / "root")
    i = inst(image, delegate=False)
    provision(layout, i, image, tmp_path / "images")
    assert not layout.data(i.uuid).exists()


def _bad(tmp_path, entries):
    path = tmp_path / "images" / "44444444-4444-4444-4444-444444444444.file"
    path.parent.mkdir(exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return Image(uuid="44444444-4444-4444-4444-444444444444", name="bad", version="1",
                 sha256=sha256_file(path))


@pytest.mark.parametrize("entries, reason", [
    ([("manifest.json", b'{"name": "bad", "version": "1", "command": ["x"]}'),
      ("../escape", b"x")], "contains '..'"),
    ([("workload.py", b"")], "no manifest.json"),
    ([("manifest.json", b'{"name": "bad", "version": "1"}')], "'command' is a required"),
])
def test_a_bad_image_leaves_zones_untouched(tmp_path, entries, reason):
    image = _bad(tmp_path, entries)
    layout = Layout(tmp_path / "root")
    with pytest.raises((ImageError, ValidationError), match=reason):
        provision(layout, inst(image), image, tmp_path / "images")
    assert list(layout.zones.iterdir()) == []
    assert not (tmp_path / "root" / "escape").exists()


def test_sha256_mismatch_is_refused_before_copying(tmp_path, image):
    wrong = Image(**{**image.to_dict(), "sha256": "0" * 64})
    layout = Layout(tmp_path / "root")
    with pytest.raises(ImageError, match="sha256"):
        install_image(wrong, tmp_path / "images", layout.images)
    assert list(layout.images.iterdir()) == []


def test_missing_image_file(tmp_path, image):
    with pytest.raises(ImageError, match="does not exist"):
        install_image(image, tmp_path / "nowhere", tmp_path / "cache")


def test_image_source_may_be_the_local_image_directory(tmp_path, image):
    # In production both are /var/sdcadm/images.
    assert install_image(image, tmp_path / "images", tmp_path / "images").is_file()


def test_destroy_and_depose(tmp_path, image):
    layout = Layout(tmp_path / "root")
    a, b = inst(image, 1), inst(image, 2)
    for i in (a, b):
        provision(layout, i, image, tmp_path / "images")
    (layout.data(b.uuid) / "k").write_text("v")
    destroy(layout, a.uuid)
    assert not layout.zone(a.uuid).exists()
    first = depose(layout, b.uuid)
    assert first == layout.deposed() / b.uuid and (first / "data" / "k").read_text() == "v"
    provision(layout, b, image, tmp_path / "images")
    assert depose(layout, b.uuid) == layout.deposed() / f"{b.uuid}.1"
    assert layout.zone_uuids() == []
    assert destroy(layout, a.uuid) is None and depose(layout, a.uuid) is None


def test_invalid_payload_on_disk_is_ignored(tmp_path, image):
    layout = Layout(tmp_path / "root")
    i = inst(image)
    provision(layout, i, image, tmp_path / "images")
    layout.payload_file(i.uuid).write_text(json.dumps({"instance": {}}))
    assert read_payload(layout, i.uuid) is None


def test_the_configured_expansion_bound_applies_when_provisioning(tmp_path, image):
    """agent.max_image_bytes: the workload image is a tar stream of at least
    10 KiB (tar's blocking), so a 4 KiB bound refuses it; zones/ stays untouched."""
    layout = Layout(tmp_path / "root")
    with pytest.raises(ImageError, match="expands beyond 4096 bytes"):
        provision(layout, inst(image), image, tmp_path / "images", max_bytes=4096)
    assert not (tmp_path / "root" / "zones").exists() or \
        not any(p.name.startswith("0") for p in (tmp_path / "root" / "zones").iterdir())
    provision(layout, inst(image), image, tmp_path / "images", max_bytes=1 << 30)


def test_max_image_bytes_is_a_bounded_config_key(tmp_path):
    from sdcadm.config import load_config
    from sdcadm.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("agent: {max_image_bytes: 100}\n")
    with pytest.raises(ConfigError, match="agent.max_image_bytes"):
        load_config(path, environ={})
    path.write_text("agent: {max_image_bytes: 1073741824}\n")
    assert load_config(path, environ={}).agent.max_image_bytes == 1 << 30

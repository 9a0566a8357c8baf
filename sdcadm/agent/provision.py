"""Instance layout on disk, and provisioning from an image.

Under the server root::

    var/sdcadm/images/<image>.file   local copy of the image, sha256-checked
    var/sdcadm/images/<image>.json   its Image record
    zones/<uuid>/root/               the image, unpacked
    zones/<uuid>/data/               the delegate dataset (if any); never removed
                                     by re-provisioning
    zones/<uuid>/instance.json       the payload it was provisioned from
    zones/<uuid>/pid, stdout.log     the running process
    zones/.deposed/<uuid>/           zones of instances now owned elsewhere

A bad image (unsafe entry, wrong sha256, missing or invalid manifest) raises
ImageError before anything is written under ``zones/``.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from sdcadm.errors import ImageError, ValidationError
from sdcadm.fsutil import sha256_file, write_json_atomic
from sdcadm.images import MANIFEST, MAX_UNPACKED, unpack_image
from sdcadm.model import Instance
from sdcadm.payload import make_payload, payload_env
from sdcadm.schemas import validate
from sdcadm.uuids import is_uuid

log = logging.getLogger(__name__)

DEPOSED = ".deposed"


class Layout:
    """Paths of one server's instances and image copies."""

    def __init__(self, root):
        self.root = Path(root)
        self.zones = self.root / "zones"
        self.images = self.root / "var" / "sdcadm" / "images"

    def zone(self, uuid):
        return self.zones / uuid

    def zone_root(self, uuid):
        return self.zones / uuid / "root"

    def data(self, uuid):
        return self.zones / uuid / "data"

    def payload_file(self, uuid):
        return self.zones / uuid / "instance.json"

    def pidfile(self, uuid):
        return self.zones / uuid / "pid"

    def stdout_log(self, uuid):
        return self.zones / uuid / "stdout.log"

    def deposed(self):
        return self.zones / DEPOSED

    def zone_uuids(self):
        """UUIDs of the zones on disk (hidden entries such as .deposed left out)."""
        if not self.zones.is_dir():
            return []
        return sorted(p.name for p in self.zones.iterdir() if p.is_dir() and is_uuid(p.name))


def read_payload(layout, uuid):
    """The validated payload of zones/<uuid>, or None (absent or invalid, logged)."""
    path = layout.payload_file(uuid)
    try:
        doc = json.loads(path.read_text())
        validate("payload", doc, path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as e:
        log.warning("ignoring invalid %s: %s", path, e, extra={"instance": uuid})
        return None
    return doc


def write_payload(layout, uuid, payload):
    write_json_atomic(layout.payload_file(uuid), payload)


def write_pidfile(layout, uuid, pid):
    path = layout.pidfile(uuid)
    tmp = path.with_name(".pid.tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


def remove_pidfile(layout, uuid):
    try:
        layout.pidfile(uuid).unlink()
    except FileNotFoundError:
        pass


def read_manifest(layout, uuid):
    """The validated image manifest of an unpacked instance root."""
    path = layout.zone_root(uuid) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot read {path}: {e}",
                         hint="the instance root is damaged; delete zones/<uuid> to re-provision") from None
    return validate("image_manifest", doc, path)


def install_image(image, source_dir, images_dir, fetch=None):
    """Copy ``<image>.file`` from ``source_dir`` (a directory, or a list of
    them tried in order: a headnode's image source, then its usbkey's images)
    into ``images_dir`` (unless a good copy is there already) and check its
    sha256; return the local path. In none of them: ``fetch(image,
    images_dir)`` gets it from another server (``image_fetch.PeerImages``),
    when given."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    dest = images_dir / f"{image.uuid}.file"
    if dest.exists() and sha256_file(dest) == image.sha256:
        return dest
    sources = [Path(d) for d in (source_dir if isinstance(source_dir, (list, tuple))
                                 else [source_dir])]
    source_dir = sources[0]
    src = next((d / dest.name for d in sources if (d / dest.name).is_file()),
               source_dir / dest.name)
    if not src.is_file() and fetch is not None:
        return fetch(image, images_dir)
    if not src.is_file():
        raise ImageError(f"image file {src} does not exist",
                         hint=f"import image {image.uuid} ({image.name}@{image.version}) into {source_dir}")
    if src.resolve() == dest.resolve():
        raise ImageError(f"image file {src} has sha256 {sha256_file(src)}, "
                         f"expected {image.sha256}", hint="re-import the image")
    fd, tmp = tempfile.mkstemp(prefix=f".{image.uuid}.", suffix=".tmp", dir=images_dir)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        actual = sha256_file(tmp)
        if actual != image.sha256:
            raise ImageError(f"image file {src} has sha256 {actual}, expected {image.sha256}",
                             hint="the file is corrupt or not the image its record names; re-import it")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    write_json_atomic(images_dir / f"{image.uuid}.json", image.to_dict())
    return dest


def provision(layout, instance, image, source_dir, max_bytes=None, fetch=None):
    """Lay out zones/<uuid> for ``instance`` from ``image``; return the payload.

    The image is checked and unpacked into a staging directory first, so a bad
    image leaves ``zones/`` untouched. An existing ``data/`` is kept.
    """
    payload = make_payload(instance, image, payload_env(instance))
    image_file = install_image(image, source_dir, layout.images, fetch)
    layout.zones.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{instance.uuid}-", dir=layout.zones))
    try:
        unpack_image(image_file, staging, image.sha256, max_bytes=max_bytes or MAX_UNPACKED)
        zone = layout.zone(instance.uuid)
        zone.mkdir(exist_ok=True)
        old = layout.zone_root(instance.uuid)
        if old.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".old-{instance.uuid}-", dir=layout.zones))
            old.rename(trash / "root")
            shutil.rmtree(trash, ignore_errors=True)
        staging.rename(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if instance.delegate_dataset:
        layout.data(instance.uuid).mkdir(exist_ok=True)
    write_payload(layout, instance.uuid, payload)
    return payload


def record(layout, instance, image_doc):
    """Rewrite instance.json for a new generation of the same runtime."""
    payload = make_payload(instance, image_doc, payload_env(instance))
    write_payload(layout, instance.uuid, payload)
    return payload


def destroy(layout, uuid):
    """Remove zones/<uuid> (the instance was deleted from the store)."""
    zone = layout.zone(uuid)
    if not zone.exists():
        return
    # Rename first so a half-removed zone is never mistaken for an instance.
    trash = Path(tempfile.mkdtemp(prefix=f".destroy-{uuid}-", dir=layout.zones))
    zone.rename(trash / uuid)
    shutil.rmtree(trash)


def depose(layout, uuid):
    """Move zones/<uuid> to zones/.deposed/<uuid> untouched; return where it went."""
    zone = layout.zone(uuid)
    if not zone.exists():
        return None
    layout.deposed().mkdir(parents=True, exist_ok=True)
    dest, n = layout.deposed() / uuid, 1
    while dest.exists():  # deposed before: keep every copy
        dest, n = layout.deposed() / f"{uuid}.{n}", n + 1
    zone.rename(dest)
    return dest


def instance_of(payload):
    return Instance.from_dict(payload["instance"])

"""Reading restore data to rebuild an instance (for `service restore`).

    data = RestoreData(config)                        # this headnode's restore data
    copy = data.instance_copy(uuid)                   # or data.copies(source=dead_server_uuid)
    copy.payload                                      # vm-<uuid>.json (schema payload)
    data.install_images(copy, images_dir)             # image + origin chain, sha256-checked
    data.clone_dataset(copy, root / "zones" / new_uuid / "data")   # zero-copy restore

Everything comes from the committed manifest: the dataset snapshot cloned is
the last *good* copy the manifest names, never a newer one a failed or refused
sync left behind. Reads take the service's commit lock, so a sync running at
the same time cannot change or prune what is being read.

Nothing is restored that does not match the (signed) manifest: the metadata
and image files of the instance are checked before the images are installed,
and the clone of its dataset is read whole and compared file by file before
it is handed over; a broken copy is refused (RestoreDataBroken naming the
file) and its clone removed. ``verify_copy`` runs the same checks on a scratch
clone, for a procedure to refuse before anything moves.
"""

import json
import os
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from sdcadm.errors import ImageError, NotFound, RestoreDataBroken
from sdcadm.model import Image, Instance
from sdcadm.fsutil import copy_atomic, write_json_atomic
from sdcadm.restore_data import checked_clone
from sdcadm.restore_data import commit as commits
from sdcadm.restore_data.commit import COMMIT_LOCK_TIMEOUT
from sdcadm.restore_data.files import FileLock
from sdcadm.restore_data.imagecopy import check_image_file
from sdcadm.restore_data.layout import image_names, restore_layout, vm_name
from sdcadm.restore_data.manifest import ManifestError, read_manifest
from sdcadm.restore_data.verify_files import Findings, check_listed
from sdcadm.schemas import validate


@dataclass
class InstanceCopy:
    service: str
    uuid: str
    alias: str
    source: dict | None          # {"server_uuid", "hostname", "admin_ip"} it was pulled from
    status: str                  # of the last sync attempt
    error: str | None
    as_of: float | None          # time of the last good sync (what a restore gets)
    payload: dict                # vm-<uuid>.json: {"instance", "image", "env"?}
    images: list                 # [(Image, Path)]: its image first, then the origin chain
    dataset: dict | None         # manifest entry: backend, snapshot, guid, bytes, files, links
    replica_dir: Path | None     # datasets/<uuid> (None without a delegate dataset)
    listed: dict = field(default_factory=dict)   # the manifest's {rel: {"sha256", "bytes"}}
                                                 # of its vm-<uuid>.json and image files

    @property
    def instance(self):
        return Instance.from_dict(self.payload["instance"])

    @property
    def snapshot(self):
        return self.dataset["snapshot"] if self.dataset else None


class RestoreData:
    def __init__(self, config, backend=None):
        self.config = config
        self.layout = restore_layout(config)
        self._backend = backend

    @property
    def backend(self):
        if self._backend is None:
            from sdcadm.datasets import get_backend

            self._backend = get_backend(self.config)
        return self._backend

    def services(self):
        return self.layout.services()

    def manifest(self, service):
        """The committed, validated manifest of ``service`` (ManifestError otherwise)."""
        with FileLock(self.layout.commit_lock(service), timeout=COMMIT_LOCK_TIMEOUT,
                      what=f"restore data of {service}"):
            commits.recover(self.layout.service_dir(service))
            return read_manifest(self.layout.manifest(service), self.layout.key)

    def copies(self, service=None, source=None):
        """InstanceCopy of every instance held (of ``service``; pulled from server
        UUID ``source``), in service then alias order."""
        out = []
        for name in ([service] if service else self.services()):
            if not self.layout.service_dir(name).is_dir():
                continue
            doc = self.manifest(name)
            for uuid, entry in sorted(doc["instances"].items(), key=lambda kv: kv[1]["alias"]):
                if source and (entry["source"] or {}).get("server_uuid") != source:
                    continue
                out.append(self._copy(name, uuid, entry, doc["files"]))
        return out

    def instance_copy(self, uuid, service=None):
        """The InstanceCopy of instance ``uuid``; NotFound naming what is held."""
        for name in ([service] if service else self.services()):
            if not self.layout.service_dir(name).is_dir():
                continue
            doc = self.manifest(name)
            entry = doc["instances"].get(uuid)
            if entry is not None:
                return self._copy(name, uuid, entry, doc["files"])
        held = ", ".join(self.services()) or "nothing"
        raise NotFound(f"this headnode has no restore data of instance {uuid}",
                       hint=f"it holds restore data of: {held}; see `sdcadm restore-data ls`")

    def _copy(self, service, uuid, entry, files):
        svc_dir = self.layout.service_dir(service)
        vm = svc_dir / vm_name(uuid)
        try:
            payload = validate("payload", json.loads(vm.read_bytes()), vm)
        except FileNotFoundError:
            raise NotFound(f"{vm} is missing: {entry['alias']} cannot be re-provisioned from "
                           "this headnode's restore data",
                           hint="run `sdcadm restore-data verify` here") from None
        except ValueError as e:
            raise NotFound(f"{vm} is not valid JSON: {e}",
                           hint="run `sdcadm restore-data verify` here") from None
        images = []
        for image_uuid in entry["images"]:
            record = svc_dir / "images" / f"{image_uuid}.json"
            doc = validate("image", json.loads(record.read_bytes()), record)
            images.append((Image.from_dict(doc), svc_dir / "images" / f"{image_uuid}.file"))
        dataset = entry["dataset"]
        own = [vm_name(uuid)] + [rel for image in entry["images"] for rel in image_names(image)]
        return InstanceCopy(
            service=service, uuid=uuid, alias=entry["alias"], source=entry["source"],
            status=entry["status"], error=entry["error"], as_of=entry["last_success"],
            payload=payload, images=images, dataset=dataset,
            replica_dir=self.layout.dataset_dir(service, uuid) if dataset else None,
            listed={rel: files[rel] for rel in own if rel in files})

    # -- integrity: what is restored is what the manifest says --------------------------
    def check_files(self, copy):
        """Problems (one line each, naming the file) of ``copy``'s payload and
        image files against the manifest: missing from it, missing here, not a
        regular file, or changed (sha256 and size)."""
        found = Findings()
        own = [vm_name(copy.uuid)] + [rel for image, _ in copy.images
                                      for rel in image_names(image.uuid)]
        found.problems.extend(f"missing: {rel} (not in the manifest)"
                              for rel in own if rel not in copy.listed)
        check_listed(self.layout.service_dir(copy.service), copy.listed, found)
        return found.problems

    def verify_copy(self, copy):
        """Every problem seeding would refuse ``copy`` for, found on a scratch
        clone (removed): its files (``check_files``) and every file of its
        dataset copy. Reads the whole dataset: a procedure's prepare calls
        this so that the operator is told before anything moves."""
        problems = self.check_files(copy)
        if copy.dataset:
            target = self.layout.scratch / (f"restore-check-{copy.uuid}-{os.getpid()}-"
                                            f"{uuidlib.uuid4().hex[:8]}")
            try:
                checked_clone.clone(self.backend, self.layout, copy, target, None)
            except RestoreDataBroken as e:
                problems.extend(getattr(e, "problems", None) or [e.message])
            else:
                checked_clone.discard(self.backend, target, None)
        return problems

    def install_images(self, copy, images_dir):
        """Copy the image chain of ``copy`` into ``images_dir`` as <uuid>.file and
        <uuid>.json (checked; a good file already there is kept). Return the
        paths of the image files, the instance's image first."""
        images_dir = Path(images_dir)
        problems = self.check_files(copy)
        if problems:
            raise checked_clone.broken(copy, problems)
        paths = []
        for image, path in copy.images:
            dest = images_dir / f"{image.uuid}.file"
            try:
                check_image_file(dest, image)
            except (OSError, ImageError):     # missing or bad there: copy ours
                check_image_file(path, image)
                copy_atomic(path, dest)
            write_json_atomic(images_dir / f"{image.uuid}.json", image.to_dict())
            paths.append(dest)
        return paths

    def clone_dataset(self, copy, target, name=None):
        """Zero-copy restore of ``copy``'s dataset (the snapshot its manifest
        names) at ``target``, e.g. ``<root>/zones/<new uuid>/data``; return the
        path of the files. NotFound when the instance has no dataset copy;
        RestoreDataBroken (nothing left at ``target``) when the clone does not
        match the manifest."""
        if not copy.dataset:
            raise NotFound(f"there is no copy of {copy.alias}'s delegate dataset here")
        return checked_clone.clone(self.backend, self.layout, copy, Path(target), name)

    def cloned(self, target):
        """True when ``target`` holds a clone that ``clone_dataset`` finished
        and checked (not one cut short between cloning and checking)."""
        return checked_clone.finished(target)


def holdings(layout, now):
    """What this headnode holds, one dict per service and instance (for
    ``GET /v1/restore-data``): source, snapshot, age, size, status. A service
    whose manifest is unreadable is one row with status ``broken``."""
    rows = []
    for service in layout.services():
        try:
            # No lock: the manifest is replaced atomically, and this is a report,
            # so it never waits for a verify or a commit.
            doc = read_manifest(layout.manifest(service), layout.key)
        except ManifestError as e:
            rows.append({"service": service, "instance": None, "alias": None, "source": None,
                         "snapshot": None, "age": None, "bytes": 0, "status": "broken",
                         "error": e.problem, "last_success": None, "last_attempt": None})
            continue
        for uuid, entry in sorted(doc["instances"].items(), key=lambda kv: kv[1]["alias"]):
            ds = entry["dataset"]
            last = entry["last_success"]
            rows.append({
                "service": service, "instance": uuid, "alias": entry["alias"],
                "source": (entry["source"] or {}).get("hostname"),
                "snapshot": ds["snapshot"] if ds else None,
                "age": round(now - last, 3) if last else None,
                "bytes": ds["bytes"] if ds else 0, "status": entry["status"],
                "error": entry["error"], "last_success": last,
                "last_attempt": entry["last_attempt"]})
    return rows

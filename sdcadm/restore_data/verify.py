"""`restore-data verify`: prove that this headnode's restore data restores.

For each service: finish an interrupted commit, read and check the manifest
(truncated, invalid or edited is reported as such), check every metadata file
and image against it and their content (``verify_files``), then restore each
dataset copy into a scratch clone through the dataset backend, compare every
file, link and byte with the manifest, and remove the clone. Nothing here needs the DC store: it works when the
store is gone, which is when it matters.
"""

import json
import os
import uuid as uuidlib
from dataclasses import dataclass, field

from sdcadm.errors import DatasetError, SdcadmError, TransportError
from sdcadm.restore_data import commit as commits
from sdcadm.restore_data.files import FileLock, LockBusy, remove_tree
from sdcadm.restore_data.layout import MANIFEST, vm_name
from sdcadm.restore_data.manifest import ManifestError, read_manifest
from sdcadm.restore_data.verify_dataset import check_dataset
from sdcadm.restore_data.verify_files import check_content, check_files, load_checked
from sdcadm.uuids import check_name

LOCK_TIMEOUT = 120.0


@dataclass
class ServiceReport:
    service: str
    problems: list = field(default_factory=list)
    instances: list = field(default_factory=list)   # dicts: uuid, alias, source, snapshot, ...
    as_of: float | None = None                       # the oldest last good sync of its copies
    files: int = 0                                   # files checked
    bytes: int = 0

    @property
    def ok(self):
        return not self.problems

    def to_dict(self):
        return {"service": self.service, "ok": self.ok, "as_of": self.as_of,
                "problems": list(self.problems), "instances": list(self.instances),
                "files": self.files, "bytes": self.bytes}


@dataclass
class VerifyReport:
    services: list = field(default_factory=list)    # ServiceReport
    problems: list = field(default_factory=list)    # not tied to one service (dc.json, ...)

    @property
    def ok(self):
        return not self.problems and all(s.ok for s in self.services)

    def to_dict(self):
        return {"ok": self.ok, "problems": list(self.problems),
                "services": [s.to_dict() for s in self.services]}


def verify(layout, backend, services=None, *, lock_timeout=LOCK_TIMEOUT):
    """Verify ``services`` (default: every service held here); a VerifyReport."""
    layout.key  # no key, nothing can be checked: a ConfigError saying how to create it
    report = VerifyReport()
    report.problems.extend(check_dc_json(layout))
    names = layout.services() if services is None else [check_name(n) for n in services]
    for name in names:
        report.services.append(verify_service(layout, backend, name, lock_timeout=lock_timeout))
    return report


def check_dc_json(layout):
    from sdcadm.schemas import problems

    path = layout.dc_json
    if not path.exists():
        return [f"{path.name}: missing (no sync has completed on this headnode)"]
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        return [f"{path.name}: unreadable or not JSON: {e}"]
    return [f"{path.name}: {p}" for p in problems("restore_dc", doc)]


def verify_service(layout, backend, service, *, lock_timeout=LOCK_TIMEOUT):
    report = ServiceReport(service)
    svc_dir = layout.service_dir(service)
    if not svc_dir.is_dir():
        report.problems.append(f"no restore data for {service} on this headnode")
        return report
    clones = {}
    try:
        try:
            with FileLock(layout.commit_lock(service), timeout=lock_timeout,
                          what=f"restore data of {service}"):
                commits.recover(svc_dir)
                manifest = read_manifest(layout.manifest(service), layout.key)
                if manifest["service"] != service:
                    raise ManifestError(layout.manifest(service),
                                        f"describes service {manifest['service']!r}, "
                                        f"not {service!r}")
                for uuid, inst in sorted(manifest["instances"].items()):
                    if inst["dataset"]:
                        clones[uuid] = _clone(layout, backend, service, uuid, inst, report)
        except ManifestError as e:
            report.problems.append(f"{MANIFEST}: {e.problem}")
            return report
        except LockBusy as e:
            report.problems.append(str(e))
            return report
        check_files(svc_dir, manifest, report)
        check_content(svc_dir, manifest, report)
        for uuid, inst in sorted(manifest["instances"].items()):
            _check_instance(layout, service, uuid, inst, manifest, clones.get(uuid), report)
        for uuid in layout.dataset_uuids(service):
            if uuid not in manifest["instances"]:
                report.problems.append(f"extra: datasets/{uuid}/ (no manifest entry)")
        successes = [i["last_success"] for i in manifest["instances"].values()]
        report.as_of = None if None in successes or not successes else min(successes)
    finally:
        for target, _path in clones.values():
            if target is not None:
                _destroy_clone(backend, target)
    return report


def _clone(layout, backend, service, uuid, inst, report):
    snapshot = inst["dataset"]["snapshot"]
    target = layout.scratch / f"{service}-{uuid}-{os.getpid()}-{uuidlib.uuid4().hex[:8]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = backend.clone(str(layout.dataset_dir(service, uuid)), str(target), snapshot)
    except (DatasetError, TransportError, OSError, SdcadmError) as e:
        report.problems.append(f"datasets/{uuid}@{snapshot} ({inst['alias']}): cannot be "
                               f"restored: {e}")
        _destroy_clone(backend, str(target))
        return None, None
    return str(target), path


def _destroy_clone(backend, target):
    try:
        backend.destroy_clone(str(target))
    except (DatasetError, TransportError, OSError, SdcadmError):
        pass
    remove_tree(target)


def _check_instance(layout, service, uuid, inst, manifest, clone, report):
    alias = inst["alias"]
    vm = vm_name(uuid)
    payload = None
    if vm not in manifest["files"]:
        report.problems.append(f"missing: {vm} ({alias} cannot be re-provisioned without it)")
    else:
        payload = load_checked(layout.service_dir(service), vm, "payload", report)
    for image in inst["images"]:
        for rel in (f"images/{image}.json", f"images/{image}.file"):
            if rel not in manifest["files"]:
                report.problems.append(f"missing: {rel} (image of {alias})")
    ds = inst["dataset"]
    wants_data = bool(payload and payload["instance"].get("delegate_dataset"))
    row = {"uuid": uuid, "alias": alias,
           "source": (inst["source"] or {}).get("hostname"), "status": inst["status"],
           "error": inst["error"], "last_success": inst["last_success"],
           "snapshot": ds["snapshot"] if ds else None, "files": 0, "bytes": 0}
    report.instances.append(row)
    if inst["last_success"] is None:
        report.problems.append(f"{alias}: no complete copy yet (last sync {inst['status']}: "
                               f"{inst['error']})")
    if wants_data and ds is None:
        report.problems.append(f"{alias}: its delegate dataset has no copy yet")
    if ds is None or clone is None:
        return
    target, path = clone
    if target is None:
        return   # the clone failed; reported
    where = f"datasets/{uuid}@{ds['snapshot']}"
    tree, problems = check_dataset(path, ds)
    row["files"], row["bytes"] = len(tree.files), tree.bytes
    report.problems.extend(f"{where}: {problem}" for problem in problems)
    report.files += len(tree.files)
    report.bytes += tree.bytes

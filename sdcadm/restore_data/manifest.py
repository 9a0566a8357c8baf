"""``svc-<service>/manifest.json``: what one service's restore data holds.

The manifest is written last, after everything it describes is in place, so
it always describes a complete copy. It records the source of each instance,
the dataset snapshot (name and GUID), the sha256 and size of every file
(metadata, images and the dataset copy), when the sync started and finished,
its status and error. It carries its own ``checksum`` (sha256 of the
canonical JSON of everything else), so a manifest edited after it was
written is told apart from a copy whose files changed.

The checksum is unkeyed: whoever can write the file can make a consistent
forgery. So a manifest is also signed, ``signature`` = HMAC-SHA256 over the
canonical JSON of everything but checksum and signature, with the DC's
restore-data key (``RestoreLayout.key``, the same file on every headnode).
Reading checks both: a wrong checksum is damage or a careless edit, a good
checksum with a wrong or missing signature is a forgery (or a headnode
with another key, or a manifest written before manifests were signed). See
docs/security.md, "Restore data".
"""

import hashlib
import hmac
import json
import logging
from pathlib import Path

from sdcadm.errors import RestoreDataBroken, ValidationError
from sdcadm.fsutil import canonical_json, sha256_bytes, write_bytes_atomic
from sdcadm.fsutil import safe_relative

log = logging.getLogger(__name__)

VERSION = 1
# Worst first: the status of a service is the worst status of its instances.
SEVERITY = {"failed": 3, "diverged": 2, "unreachable": 1, "ok": 0}


class ManifestError(RestoreDataBroken):
    """A manifest is missing, unreadable, invalid, was edited or is not signed."""

    def __init__(self, path, problem, *, hint=None):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}",
                         hint=hint or "run `sdcadm service sync-restore-data` to write a new copy")


RESYNC_HINT = ("run `sdcadm service sync-restore-data SERVICE` on this headnode to write a new, "
               "signed copy from a healthy source, or restore from another headnode; check that "
               "restore_data.key_file holds the same key on every headnode")


def checksum(doc):
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return sha256_bytes(canonical_json(body).encode())


def signature(doc, key):
    """HMAC-SHA256 (hex) of ``doc`` without its checksum and signature, keyed by ``key``."""
    body = {k: v for k, v in doc.items() if k not in ("checksum", "signature")}
    return hmac.new(key, canonical_json(body).encode(), hashlib.sha256).hexdigest()


def seal(doc, key):
    """The manifest signed with ``key`` and its checksum set (validated)."""
    doc = dict(doc, version=VERSION)
    doc.pop("checksum", None)
    doc["signature"] = signature(doc, key)
    doc["checksum"] = checksum(doc)
    problems = problems_of(doc)
    if problems:
        raise ValidationError("restore_manifest", f"manifest of {doc.get('service')}", problems)
    return doc


def problems_of(doc):
    """Schema problems plus what a schema cannot say (unsafe paths)."""
    from sdcadm.schemas import problems

    found = problems("restore_manifest", doc)
    if found:
        return found
    for name in doc["files"]:
        if not safe_relative(name):
            found.append(f"at files: unsafe path {name!r}")
    for uuid, inst in doc["instances"].items():
        ds = inst["dataset"]
        for name in (ds or {}).get("files", {}) | (ds or {}).get("links", {}):
            if not safe_relative(name):
                found.append(f"at instances.{uuid}.dataset: unsafe path {name!r}")
    return found


def write_manifest(path, doc, key):
    """Seal (sign with ``key``) and atomically write ``doc``; return the sealed document."""
    doc = seal(doc, key)
    write_bytes_atomic(path, canonical_json(doc).encode())
    return doc


def read_manifest(path, key):
    """The validated manifest at ``path``, signed with ``key``; ManifestError
    saying exactly what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(path, "missing: this copy was never completed") from None
    except OSError as e:
        raise ManifestError(path, f"cannot be read: {e.strerror}") from None
    return parse_manifest(raw, key, path)


def parse_manifest(raw, key, path="manifest.json", check=None):
    """The validated manifest in ``raw``, signed with ``key``: not empty, JSON,
    an object, valid (``check(doc)`` -> problems; the service manifest's
    schema by default), its checksum and signature right. ManifestError."""
    if not raw.strip():
        raise ManifestError(path, "is empty (truncated)")
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError:
        raise ManifestError(path, "is not UTF-8 text (damaged)") from None
    except ValueError as e:
        # Manifests are written whole and end with "}\n": one that does not was cut short.
        truncated = raw.lstrip().startswith(b"{") and not raw.rstrip().endswith(b"}")
        what = "is truncated" if truncated else "is not valid JSON"
        raise ManifestError(path, f"{what} ({e.msg} at line {e.lineno} column {e.colno}, "
                                  f"{len(raw)} bytes)") from None
    if not isinstance(doc, dict):
        raise ManifestError(path, f"is not a JSON object (got {type(doc).__name__})")
    found = (check or problems_of)(doc)
    if found:
        raise ManifestError(path, "is invalid:\n    " + "\n    ".join(found))
    if checksum(doc) != doc["checksum"]:
        raise ManifestError(path, "was modified after it was written (its checksum does not "
                                  "match its content)")
    check_signature(doc, key, path)
    return doc


def check_signature(doc, key, path):
    """ManifestError unless ``doc`` is signed with ``key``. The comparison is
    constant-time, so that timing does not tell a forger how much of a guessed
    signature is right."""
    got = doc.get("signature")
    if got is None:
        raise ManifestError(path, "is not signed (written by an sdcadm that did not sign "
                                  "manifests, or forged): refused", hint=RESYNC_HINT)
    if not hmac.compare_digest(got, signature(doc, key)):
        raise ManifestError(path, "has a signature that does not match: it was not written "
                                  "with this DC's restore-data key (forged, or "
                                  "restore_data.key_file differs between headnodes): refused",
                            hint=RESYNC_HINT)


def service_status(instances):
    """(status, error) of a service from its instances' entries (worst wins)."""
    worst, error = "ok", None
    for uuid, inst in sorted(instances.items()):
        if SEVERITY[inst["status"]] > SEVERITY[worst]:
            worst = inst["status"]
            error = f"{inst['alias']}: {inst['error']}" if inst.get("error") else None
    return worst, error


def total_bytes(doc):
    size = sum(f["bytes"] for f in doc["files"].values())
    for inst in doc["instances"].values():
        if inst["dataset"]:
            size += inst["dataset"]["bytes"]
    return size


def read_previous(path, service, key):
    """The committed manifest a sync builds on, or None: missing (the first
    sync) or unreadable or unsigned (logged; the next commit replaces it)."""
    try:
        return read_manifest(path, key)
    except ManifestError as e:
        if Path(path).exists():
            log.warning("ignoring the previous manifest of %s: %s", service, e,
                        extra={"event": "restore-data-bad-manifest", "service": service})
        return None

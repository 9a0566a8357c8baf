"""Bringing another headnode's copy of one instance here, for `service restore`.

When a peer headnode holds a newer copy of an instance than this one, restore
pulls it first, so that seeding works unchanged (``params.seed_from``: this
server's agent clones its *own* restore data). The peer is a source like any
other, reached over SSH as the puller reaches servers; what is read is its
committed restore data:

1. its ``manifest.json`` of the service, parsed and checked like ours: its
   HMAC signature with the DC's restore-data key (the same on every
   headnode), so a peer cannot hand over a copy it made up;
2. the instance's files (``vm-<uuid>.json``, its image chain; the service's
   ``service.json``/``insts.json`` when this headnode has none), each checked
   against that manifest (sha256 and size) as it arrives, into ``.pending/``;
3. its dataset copy, through the dataset backend (``dir``: rsync with
   ``--link-dest`` against our current copy, so unchanged files cost
   nothing), compared file by file with the manifest (sha256 and size, by
   the hashes the backend took of the new copy); a copy that does not match
   is removed and our previous one stays current;
4. our manifest, with that instance's entry taken from the peer's, sealed and
   committed with the files at once (``commit.py``) under the service's sync
   lock, so that a sync of our own puller cannot interleave.

Nothing of ours changes unless every check passed. The ``zfs`` backend is
refused (DatasetError saying where to run the restore instead): a peer's
replica is a received dataset whose incremental chain this headnode's pool
does not share, and that is not built yet.
"""

import logging
import time
from pathlib import Path

from sdcadm.datasets.base import SourceRef
from sdcadm.datasets import digest
from sdcadm.datasets.tree import scan_tree
from sdcadm.errors import DatasetError, RestoreDataBroken
from sdcadm.fsutil import sha256_bytes, write_bytes_atomic
from sdcadm.restore_data import commit as commits
from sdcadm.restore_data.commit import COMMIT_LOCK_TIMEOUT
from sdcadm.restore_data.files import FileLock, remove_tree
from sdcadm.restore_data.layout import (INSTS_JSON, MANIFEST, SERVICE_JSON, SERVICE_PREFIX,
                                        image_names, vm_name)
from sdcadm.restore_data.manifest import parse_manifest, read_previous, seal, service_status, \
    total_bytes
from sdcadm.restore_data.sources import source_root
from sdcadm.restore_data.verify_dataset import algorithm_of, tree_problems

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 64 << 20
HINT = ("the copy here was left as it was; restore from this headnode's own copy by running again "
        "once the peer's copy is fixed (`sdcadm restore-data verify` on it), or run the restore "
        "on that headnode")


class PeerCopyRefused(RestoreDataBroken):
    """A peer headnode's copy does not match its signed manifest, or is not the copy offered."""


def peer_restore_dir(config, peer):
    """Where ``peer`` (a Server) keeps its restore data, as this headnode reaches
    it: the same path as ours relative to a server's root, under the peer's
    root (``restore_data.source_root_template``)."""
    ours, root = Path(config.under_root(config.restore_data_dir)), Path(config.root)
    rel = ours.relative_to(root) if root != Path("/") and root in ours.parents \
        else ours.relative_to("/")
    return Path(source_root(config, peer)) / rel


def ssh_transport(config, host):
    from sdcadm.transport.ssh import SSHTransport

    ssh = config.ssh
    return SSHTransport(host, port=ssh.port, user=ssh.user, identity=ssh.identity,
                        known_hosts=ssh.known_hosts, connect_timeout=ssh.connect_timeout)


class PeerPull:
    def __init__(self, data, transports=None, clock=time.time):
        """``data``: this headnode's RestoreData; ``transports(host)``: an SSH
        transport to a headnode (default: from the ``ssh.*`` configuration)."""
        self.data, self.clock = data, clock
        self.config, self.layout = data.config, data.layout
        self.transports = transports or (lambda host: ssh_transport(self.config, host))

    def pull(self, peer, service, uuid, offered_last_success):
        """Bring ``peer``'s copy of instance ``uuid`` (of ``service``) here;
        return {"snapshot", "last_success", "bytes_moved", "timings"}. PeerCopyRefused
        (nothing changed here) when it does not match its signed manifest or is
        older than the copy its agent offered (``offered_last_success``)."""
        remote = peer_restore_dir(self.config, peer) / f"{SERVICE_PREFIX}{service}"
        transport = self.transports(peer.admin_ip)
        try:
            doc = self._manifest(transport, remote, peer)
            entry = doc["instances"].get(uuid)
            if entry is None or entry["last_success"] is None:
                raise PeerCopyRefused(f"{peer.hostname}'s signed manifest of {service} holds no "
                                      f"good copy of instance {uuid}", hint=HINT)
            if entry["last_success"] < offered_last_success:
                raise PeerCopyRefused(
                    f"{peer.hostname}'s signed manifest of {service} holds an older copy of "
                    f"{entry['alias']} than its agent offered: refused", hint=HINT)
            if entry["dataset"] and (self.data.backend.name != "dir"
                                     or entry["dataset"]["backend"] != "dir"):
                raise DatasetError(
                    f"pulling a {entry['dataset']['backend']} copy from another headnode is not "
                    f"supported yet: run the restore on {peer.hostname}")
            with FileLock(self.layout.service_lock(service), timeout=COMMIT_LOCK_TIMEOUT,
                          what=f"restore data of {service}"):
                return self._pull_locked(transport, peer, remote, service, uuid, doc, entry)
        finally:
            transport.close()

    def _manifest(self, transport, remote, peer):
        path = remote / MANIFEST
        raw = transport.run_bytes(["head", "-c", str(MAX_MANIFEST_BYTES + 1), str(path)]).stdout
        if len(raw) > MAX_MANIFEST_BYTES:
            raise PeerCopyRefused(f"{peer.hostname}:{path} is over {MAX_MANIFEST_BYTES} bytes",
                                  hint=HINT)
        return parse_manifest(raw, self.layout.key, f"{peer.hostname}:{path}")

    def _pull_locked(self, transport, peer, remote, service, uuid, doc, entry):
        started, layout = self.clock(), self.layout
        svc_dir = layout.service_dir(service)
        svc_dir.mkdir(parents=True, exist_ok=True)
        with self._commit_lock(service):
            commits.recover(svc_dir)
        prev = read_previous(layout.manifest(service), service, layout.key)
        staging = commits.Staging(layout.pending(service))
        pulled, dataset, stats = None, None, {"bytes_moved": 0, "timings": {}}
        try:
            t0 = time.monotonic()
            files = self._files(transport, peer, remote, svc_dir, staging, doc, entry, uuid, prev)
            stats["timings"]["files"] = round(time.monotonic() - t0, 3)
            if entry["dataset"]:
                dataset, pulled, stats = self._dataset(peer, remote, service, uuid,
                                                       entry["dataset"], stats)
            t0 = time.monotonic()
            instances = dict(prev["instances"]) if prev else {}
            instances[uuid] = dict(entry, dataset=dataset)
            manifest = self._manifest_doc(service, prev or doc, started, files, instances)
            with self._commit_lock(service):
                commits.commit(svc_dir, staging, manifest)
                commits.remove_unlisted(svc_dir, files)
            stats["timings"]["commit"] = round(time.monotonic() - t0, 3)
        except BaseException:
            remove_tree(staging.path)
            if pulled:
                self.data.backend.drop_copy(str(layout.dataset_dir(service, uuid)), *pulled)
            raise
        log.info("pulled %s's copy of %s (%s) from %s", peer.hostname, entry["alias"], service,
                 peer.hostname, extra={"event": "restore-data-peer-pull", "instance": uuid})
        return {"snapshot": dataset["snapshot"] if dataset else None,
                "last_success": entry["last_success"], **stats}

    def _commit_lock(self, service):
        return FileLock(self.layout.commit_lock(service), timeout=COMMIT_LOCK_TIMEOUT,
                        what=f"restore data of {service}")

    def _files(self, transport, peer, remote, svc_dir, staging, doc, entry, uuid, prev):
        """The instance's metadata files, fetched and checked into staging;
        return the manifest's new file list."""
        prev_files = prev["files"] if prev else {}
        files = dict(prev_files)
        wanted = [vm_name(uuid)] + [rel for image in entry["images"] for rel in image_names(image)]
        if prev is None:
            wanted += [SERVICE_JSON, INSTS_JSON]
        for rel in wanted:
            want = doc["files"].get(rel)
            if want is None:
                raise PeerCopyRefused(f"{peer.hostname}'s manifest of {doc['service']} does not "
                                      f"list {rel}", hint=HINT)
            kept = svc_dir / rel
            if prev_files.get(rel) == want and kept.is_file() and not kept.is_symlink():
                continue                       # the same file is here already
            data = transport.run_bytes(["head", "-c", str(want["bytes"] + 1),
                                        str(remote / rel)]).stdout
            if len(data) != want["bytes"] or sha256_bytes(data) != want["sha256"]:
                raise PeerCopyRefused(
                    f"{peer.hostname}:{remote / rel} does not match its signed manifest "
                    f"({len(data)} bytes, sha256 {sha256_bytes(data)[:12]}…; manifest: "
                    f"{want['bytes']} bytes, {want['sha256'][:12]}…)", hint=HINT)
            write_bytes_atomic(staging.file(rel), data)
            files[rel] = want
        return files

    def _dataset(self, peer, remote, service, uuid, want, stats):
        """Pull the peer's dataset copy as a new copy of ours, checked against
        ``want`` (the peer's manifest entry). Return (our entry, (name, the
        copy current before) for undoing it, ``stats`` with bytes moved and timings)."""
        backend, layout = self.data.backend, self.layout
        replica = layout.dataset_dir(service, uuid)
        replica.parent.mkdir(parents=True, exist_ok=True)
        snapshot = want["snapshot"]
        source = SourceRef(server_uuid=peer.uuid, hostname=peer.hostname, host=peer.admin_ip,
                           instance_uuid=uuid,
                           path=str(remote / "datasets" / uuid / "snapshots" / snapshot))
        with FileLock(layout.instance_lock(uuid), timeout=COMMIT_LOCK_TIMEOUT,
                      what=f"the copy of {uuid}"):
            before = backend.current_path(str(replica))
            before = Path(before).name if before else None
            result = backend.sync(source, str(replica), self.config.server_uuid)
            # The backend hashed this very copy as it made it (files it
            # hard-linked from ours keep the hashes ours was checked with;
            # what crossed the wire was read): compared, not read again. The
            # agent reads every file of its clone once more when it seeds.
            t0 = time.monotonic()
            algorithm = algorithm_of(want)
            if result.tree is not None and algorithm == digest.ALGORITHM:
                tree = result.tree     # the backend's walk of this very copy
            else:
                tree = scan_tree(backend.copy_path(str(replica), result.snapshot),
                                 known=result.files or None, algorithm=algorithm)
            problems = list(tree.problems) + tree_problems(tree, want)
            check_s = round(time.monotonic() - t0, 3)
            if result.vanished:
                problems.append(f"{len(result.vanished)} file(s) vanished while copied")
            if problems:
                if not result.unchanged:   # else it is the copy we already had: kept
                    backend.drop_copy(str(replica), result.snapshot, before)
                raise PeerCopyRefused(
                    f"{peer.hostname}'s dataset copy {snapshot} of {uuid} does not match its "
                    "signed manifest: " + "; ".join(problems[:5])
                    + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
                    hint=HINT)
        # The backend's own "check" (its nothing-changed gate) is not this
        # manifest check: both kept, under their own names.
        timings = {**stats["timings"],
                   **{("gate" if k == "check" else k): v for k, v in result.timings.items()},
                   "check": check_s}
        pulled = None if result.unchanged else (result.snapshot, before)
        return dict(want, snapshot=result.snapshot), pulled, \
            {"bytes_moved": int(result.bytes_moved or 0), "timings": timings}

    def _manifest_doc(self, service, base, started, files, instances):
        status, error = service_status(instances)
        doc = {
            "service": service,
            "receiver": {"server_uuid": self.config.server_uuid,
                         "hostname": self.config.hostname or self.config.server_uuid},
            "dc_revision": base["dc_revision"], "started": started, "finished": self.clock(),
            "status": status, "error": error, "bytes": 0, "files": files,
            "instances": instances, "checksum": "0" * 64,
        }
        doc["bytes"] = total_bytes(doc)
        return seal(doc, self.layout.key)

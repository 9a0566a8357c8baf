"""One restore-data sync cycle on a headnode (DESIGN section 4).

``Puller(config, store_getter, backend).sync(services=None, reseed=False,
observer=None)``:

1. read the DC model from the store and write ``dc.json`` (when its revision
   changed);
2. plan (``plan.plan_pulls``): the instances of non-HA services on other
   servers, grouped by service;
3. sync up to ``restore_data.concurrency`` services at once, each under its
   own lock file (so never two syncs of one service, across threads and
   processes): stage service.json, insts.json, vm-<uuid>.json and the images
   (with their origin chain), pull each delegate dataset through the dataset
   backend, check the new copy (no link escaping it, no device files), then
   commit the metadata and the manifest at once (``commit.py``);
4. prune copies of instances gone from the plan for ``prune_grace`` seconds;
5. record per-instance status in the store and the agent's metrics.

A failure (source unreachable, diverged replica, refused copy, bad image)
keeps the last good copy and its manifest entry; the status says why.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sdcadm.errors import (
    ConfigError,
    DatasetError,
    ReplicaDiverged,
    SdcadmError,
    StoreError,
    TransportError,
    Unreachable,
)
from sdcadm.model import RestoreStatus
from sdcadm.progress import Progress, notify
from sdcadm.restore_data import commit as commits
from sdcadm.restore_data.events import InstanceResult, ServiceResult, SyncSummary
from sdcadm.restore_data.files import FileLock, LockBusy, read_json, remove_tree, write_json_atomic
from sdcadm.restore_data.imagecopy import fetch_image
from sdcadm.restore_data.layout import INSTS_JSON, SERVICE_JSON, RestoreLayout, image_names, vm_name
from sdcadm.restore_data.manifest import ManifestError, read_manifest, seal, service_status, total_bytes
from sdcadm.restore_data.plan import image_chain, plan_pulls
from sdcadm.restore_data.prune import PruneMixin
from sdcadm.restore_data.tree import scan_tree

log = logging.getLogger(__name__)

COMMIT_LOCK_TIMEOUT = commits.LOCK_TIMEOUT


class CopyRefused(DatasetError):
    """A new dataset copy is unsafe to restore (a link escaping it, a device file)."""


def restore_layout(config):
    return RestoreLayout(config.under_root(config.restore_data_dir))


def source_root(config, server):
    """The root of ``server``'s files, as the receiver reaches them."""
    template = config.restore_data.source_root_template
    try:
        return template.format(hostname=server.hostname, uuid=server.uuid)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(config.path, [f"key 'restore_data.source_root_template' "
                                        f"({template!r}) cannot be used: {e!r}"],
                          hint="only {hostname} and {uuid} are replaced; write { and } as "
                               "{{ and }}") from None


def source_pool(config, server):
    """The zfs pool (or dataset) holding ``server``'s delegate datasets."""
    template = config.datasets.zfs_source_pool_template
    if not template:
        return config.datasets.zfs_pool
    try:
        return template.format(hostname=server.hostname, uuid=server.uuid)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(config.path, [f"key 'datasets.zfs_source_pool_template' "
                                        f"({template!r}) cannot be used: {e!r}"],
                          hint="only {hostname} and {uuid} are replaced") from None


def source_data_path(config, server, instance_uuid):
    return str(Path(source_root(config, server)) / "zones" / instance_uuid / "data")


class Facts:
    """The DC model as read from the store at the start of a cycle."""

    def __init__(self, store):
        self.revision = store.revision()
        self.servers = store.list_servers()
        self.services = {s.name: s for s in store.list_services()}
        self.instances = store.list_instances()
        self.images = {i.uuid: i for i in store.list_images()}
        self.networks = []
        for name in ("admin",):
            try:
                self.networks.append(store.get_network(name))
            except SdcadmError:
                pass

    def server(self, uuid):
        return next((s for s in self.servers if s.uuid == uuid), None)


class Puller(PruneMixin):
    def __init__(self, config, store_getter, backend=None, *, catalog=None, metrics=None,
                 transport_factory=None, clock=time.time):
        self.config = config
        self.me = config.server_uuid
        self.layout = restore_layout(config)
        self._store = store_getter
        self._backend = backend
        self._catalog = catalog
        self.metrics = metrics
        self.transport_factory = transport_factory or self._ssh
        self.clock = clock

    # -- collaborators ---------------------------------------------------------------
    @property
    def backend(self):
        if self._backend is None:
            from sdcadm.datasets import get_backend

            self._backend = get_backend(self.config)
        return self._backend

    @property
    def catalog(self):
        if self._catalog is None:
            from sdcadm.catalog import load_catalog

            self._catalog = load_catalog(self.config.catalog)
        return self._catalog

    def _ssh(self, host):
        from sdcadm.transport.ssh import SSHTransport

        ssh = self.config.ssh
        return SSHTransport(host, port=ssh.port, user=ssh.user, identity=ssh.identity,
                            known_hosts=ssh.known_hosts, connect_timeout=ssh.connect_timeout)

    # -- one cycle -------------------------------------------------------------------
    def sync(self, services=None, reseed=False, observer=None, lock_timeout=0.0):
        """Run one cycle; return a SyncSummary (also sent to ``observer`` last).

        ``services``: only these (default: every service with something to
        pull). ``lock_timeout``: how long to wait for a sync of the same
        service already running elsewhere (0: report it ``busy``)."""
        started = self.clock()
        hostname = self.config.hostname or self.me
        try:
            facts = Facts(self._store())
        except (StoreError, OSError) as e:
            summary = SyncSummary(self.me, hostname, False, started=started,
                                  finished=self.clock(), error=f"cannot read the DC store: {e}")
            notify(observer, summary)
            return summary
        me = facts.server(self.me)
        hostname = me.hostname if me else hostname
        self._write_dc_json(facts)
        full = plan_pulls(self.me, facts.servers, facts.services.values(), facts.instances,
                          self.catalog.services, now=started,
                          heartbeat_timeout=self.config.agent.heartbeat_timeout)
        wanted = full if services is None else {s: full.get(s, []) for s in services}
        notify(observer, Progress("restore-data", f"{hostname}: {len(wanted)} service(s) to sync",
                                  0, len(wanted)))
        results = {}
        workers = max(1, int(self.config.restore_data.concurrency))
        with ThreadPoolExecutor(workers, thread_name_prefix="restore-data") as pool:
            futures = {name: pool.submit(self.sync_service, name, items, facts, reseed=reseed,
                                         observer=observer, lock_timeout=lock_timeout)
                       for name, items in sorted(wanted.items())}
            for name, future in futures.items():
                results[name] = future.result()
                notify(observer, results[name])
        pruned = self.prune(full, facts, observer)
        statuses = {name: r.status for name, r in results.items()}
        summary = SyncSummary(self.me, hostname, all(s == "ok" for s in statuses.values()),
                              statuses, tuple(pruned), started, self.clock())
        notify(observer, summary)
        return summary

    # -- dc.json -----------------------------------------------------------------------
    def _write_dc_json(self, facts):
        path = self.layout.dc_json
        old = read_json(path)
        if isinstance(old, dict) and old.get("revision") == facts.revision:
            return
        from sdcadm.schemas import validate

        doc = {
            "version": 1, "revision": facts.revision, "time": self.clock(), "receiver": self.me,
            "servers": [s.to_dict() for s in facts.servers],
            "services": [s.to_dict() for s in facts.services.values()],
            "instances": [i.to_dict() for i in facts.instances],
            "images": [i.to_dict() for i in facts.images.values()],
            "networks": [n.to_dict() for n in facts.networks],
        }
        validate("restore_dc", doc, path)
        write_json_atomic(path, doc)

    # -- one service -------------------------------------------------------------------
    def sync_service(self, name, items, facts, *, reseed=False, observer=None, lock_timeout=0.0):
        """Sync one service (under its lock); return its ServiceResult."""
        started = self.clock()
        if not items:
            notify(observer, Progress(f"restore-data/{name}", f"{name}: nothing to pull "
                                      "(HA, or no instance on another server)"))
            return ServiceResult(name, "ok", None, 0.0, ())
        try:
            with FileLock(self.layout.service_lock(name), timeout=lock_timeout,
                          what=f"restore data of {name}"):
                return self._sync_service_locked(name, items, facts, reseed, observer, started)
        except LockBusy as e:
            return ServiceResult(name, "busy", str(e), self.clock() - started, ())
        except Exception as e:  # noqa: BLE001 - one service must not stop the others
            log.exception("restore-data sync of %s failed", name,
                          extra={"event": "restore-data-failed", "service": name})
            return ServiceResult(name, "failed", f"{type(e).__name__}: {e}",
                                 self.clock() - started, ())

    def _sync_service_locked(self, name, items, facts, reseed, observer, started):
        svc_dir = self.layout.service_dir(name)
        svc_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.layout.commit_lock(name), timeout=COMMIT_LOCK_TIMEOUT,
                      what=f"restore data of {name}"):
            commits.recover(svc_dir)
        previous = self._previous_manifest(name)
        prev_instances = previous["instances"] if previous else {}
        prev_files = previous["files"] if previous else {}
        staging = commits.Staging(self.layout.pending(name))
        service = facts.services.get(name)
        files = {SERVICE_JSON: staging.write_json(SERVICE_JSON, service.to_dict() if service
                                                  else {"name": name})}
        members = [i.to_dict() for i in facts.instances if i.service == name]
        files[INSTS_JSON] = staging.write_json(INSTS_JSON, members)

        entries, results = {}, []
        for n, item in enumerate(items, 1):
            notify(observer, Progress(f"restore-data/{name}",
                                      f"{name}: {item.instance.alias} from "
                                      f"{item.source.hostname if item.source else '?'}",
                                      n - 1, len(items)))
            entry, result = self._sync_instance(name, item, facts, staging, files,
                                                prev_instances.get(item.instance.uuid),
                                                prev_files, reseed, observer)
            entries[item.instance.uuid] = entry
            results.append(result)
        planned = set(entries)
        # Copies no longer planned stay (and stay described) until pruned.
        for uuid, entry in prev_instances.items():
            if uuid not in planned:
                entries[uuid] = entry
                self._carry_files(uuid, entry, prev_files, files)
        status, error = service_status({u: entries[u] for u in planned})
        doc = {
            "service": name,
            "receiver": {"server_uuid": self.me,
                         "hostname": (facts.server(self.me).hostname if facts.server(self.me)
                                      else self.config.hostname or self.me)},
            "dc_revision": facts.revision, "started": started, "finished": self.clock(),
            "status": status, "error": error, "bytes": 0, "files": files, "instances": entries,
            "checksum": "0" * 64,
        }
        doc["bytes"] = total_bytes(doc)
        doc = seal(doc)
        with FileLock(self.layout.commit_lock(name), timeout=COMMIT_LOCK_TIMEOUT,
                      what=f"restore data of {name}"):
            commits.commit(svc_dir, staging, doc)
            commits.remove_unlisted(svc_dir, files)
            self._remove_hash_caches(name, entries)
            for uuid in planned:
                if entries[uuid]["status"] == "ok" and entries[uuid]["dataset"]:
                    self._prune_copies(name, uuid, entries[uuid]["dataset"]["snapshot"])
        self._record(name, results, entries, facts)
        return ServiceResult(name, status, error, self.clock() - started,
                             tuple(r.to_dict() for r in results))

    def _previous_manifest(self, name):
        try:
            return read_manifest(self.layout.manifest(name))
        except ManifestError as e:
            if self.layout.manifest(name).exists():
                log.warning("ignoring the previous manifest of %s: %s", name, e,
                            extra={"event": "restore-data-bad-manifest", "service": name})
            return None

    @staticmethod
    def _carry_files(uuid, entry, prev_files, files):
        """Keep the manifest entries of the files of a copy that is not re-synced
        (its vm-<uuid>.json and its image chain stay in place)."""
        for image in entry.get("images", []):
            for rel in image_names(image):
                if rel in prev_files and rel not in files:
                    files[rel] = prev_files[rel]
        if vm_name(uuid) in prev_files and vm_name(uuid) not in files:
            files[vm_name(uuid)] = prev_files[vm_name(uuid)]

    # -- one instance ------------------------------------------------------------------
    def _sync_instance(self, name, item, facts, staging, files, prev, prev_files, reseed,
                       observer):
        inst, started = item.instance, self.clock()
        source = item.source
        entry = {
            "alias": inst.alias,
            "source": ({"server_uuid": source.uuid, "hostname": source.hostname,
                        "admin_ip": source.admin_ip} if source else None),
            "images": prev["images"] if prev else [], "status": "ok", "error": None,
            "last_attempt": started,
            "last_success": prev["last_success"] if prev else None,
            "dataset": prev["dataset"] if prev else None,
        }
        problems, status, moved = [], "ok", 0
        transport = None
        try:
            if item.reachable:
                transport = self.transport_factory(source.admin_ip)
            try:
                staged, chain = self._stage_metadata(name, item, facts, staging, files,
                                                     prev_files, transport)
            except (KeyError, ValueError, SdcadmError, OSError) as e:
                problems.append(str(e).strip("'\""))
                status = "failed"
                self._carry_files(inst.uuid, entry, prev_files, files)
            else:
                files.update(staged)
                entry["images"] = chain
            if not item.reachable:
                status = _worse(status, "unreachable")
                problems.append(f"{item.reason}; keeping the copy of "
                                f"{_when(entry['last_success'])}")
            elif inst.delegate_dataset:
                try:
                    entry["dataset"], moved = self._sync_dataset(name, item, reseed, observer)
                except ReplicaDiverged as e:
                    status = _worse(status, "diverged")
                    problems.append(str(e))
                except Unreachable as e:
                    status = _worse(status, "unreachable")
                    problems.append(str(e))
                except (SdcadmError, OSError) as e:
                    status = _worse(status, "failed")
                    problems.append(str(e))
            else:
                entry["dataset"] = None
        finally:
            if transport is not None:
                transport.close()
        finished = self.clock()
        entry["status"] = status
        entry["error"] = "; ".join(problems) or None
        if status == "ok":
            entry["last_success"] = finished
        ds = entry["dataset"]
        result = InstanceResult(
            inst.uuid, inst.alias, source.hostname if source else None, status, entry["error"],
            ds["snapshot"] if ds else None, ds["bytes"] if ds else 0, moved,
            round(finished - started, 3), entry["last_success"])
        log.info("restore data of %s (%s) from %s: %s", inst.alias, name,
                 result.source, status, extra={"event": "restore-data-instance",
                                               "instance": inst.uuid, "reason": entry["error"]})
        return entry, result

    def _stage_metadata(self, name, item, facts, staging, files, prev_files, transport):
        """Stage vm-<uuid>.json and the image chain; return ({rel: entry}, chain
        UUIDs). Nothing is added to ``files`` unless all of it is staged, so a
        failure keeps the previous, consistent set."""
        from sdcadm.agent.provision import make_payload, payload_env

        inst = item.instance
        staged = {}
        try:
            chain = image_chain(inst.image, facts.images)
            payload = make_payload(inst, chain[0], payload_env(inst))
            staged[vm_name(inst.uuid)] = staging.write_json(vm_name(inst.uuid), payload)
            for image in chain:
                self._stage_image(name, item, image, staging, files, prev_files, transport,
                                  staged)
        except BaseException:
            staging.discard(staged)          # the previous files of this instance stay
            raise
        return staged, [image.uuid for image in chain]

    def _stage_image(self, name, item, image, staging, files, prev_files, transport, staged):
        rel_json, rel_file = image_names(image.uuid)
        if rel_json not in files:            # else another instance staged it already
            staged[rel_json] = staging.write_json(rel_json, image.to_dict())
        if rel_file not in files:
            prev = prev_files.get(rel_file)
            kept = self.layout.service_dir(name) / rel_file
            if (prev and prev["sha256"] == image.sha256 and kept.is_file()
                    and not kept.is_symlink() and kept.stat().st_size == prev["bytes"]):
                staged[rel_file] = prev      # images are immutable: keep the committed file
                return
            remote_dir = (str(Path(source_root(self.config, item.source)) / "var" / "sdcadm"
                              / "images") if transport else None)
            digest, size = fetch_image(image, staging.file(rel_file), self.config.image_source,
                                       transport, remote_dir)
            staged[rel_file] = {"sha256": digest, "bytes": size}

    def source_ref(self, item):
        from sdcadm.datasets.base import SourceRef

        inst, server = item.instance, item.source
        pool = source_pool(self.config, server)
        zfs_dataset = None
        if pool:
            from sdcadm.datasets.zfspool import source_dataset_name

            zfs_dataset = source_dataset_name(pool, inst.uuid)
        return SourceRef(server_uuid=server.uuid, hostname=server.hostname, host=server.admin_ip,
                         instance_uuid=inst.uuid,
                         path=source_data_path(self.config, server, inst.uuid),
                         zfs_dataset=zfs_dataset)

    def _sync_dataset(self, name, item, reseed, observer):
        inst = item.instance
        replica = self.layout.dataset_dir(name, inst.uuid)
        replica.parent.mkdir(parents=True, exist_ok=True)
        step = f"restore-data/{name}/{inst.alias}"

        def relay(event):
            notify(observer, Progress(step, f"{inst.alias}: {getattr(event, 'message', event)}",
                                      getattr(event, "done", None), getattr(event, "total", None)))

        with FileLock(self.layout.instance_lock(inst.uuid), timeout=COMMIT_LOCK_TIMEOUT,
                      what=f"the copy of {inst.alias}"):
            result = self.backend.sync(self.source_ref(item), str(replica), self.me,
                                       reseed=reseed, observer=relay)
            current = self.backend.current_path(str(replica))
            if current is None:
                raise DatasetError(f"the dataset backend reported a copy of {inst.alias} "
                                   "but has no current copy")
            if result.files:    # the backend hashed this copy already: trust it
                tree = scan_tree(current, known=result.files)
            else:               # hash it here, reusing hashes of unchanged files
                cache_path = self._hash_cache(name, inst.uuid)
                cache = read_json(cache_path)
                cache = cache if isinstance(cache, dict) else {}
                tree = scan_tree(current, cache)
                write_json_atomic(cache_path, {k: cache[k] for k in tree.keys})
        if tree.problems:
            raise CopyRefused(
                f"refused the new copy of {inst.alias}'s dataset ({result.snapshot}): "
                + "; ".join(tree.problems[:10])
                + (f" (and {len(tree.problems) - 10} more)" if len(tree.problems) > 10 else ""),
                hint="fix the source dataset; the previous copy is kept")
        dataset = {"backend": self.backend.name, "snapshot": result.snapshot,
                   "guid": result.guid, "bytes": tree.bytes, "synced": self.clock(),
                   "files": tree.files, "links": tree.links}
        return dataset, int(result.bytes_moved or 0)

    def _hash_cache(self, name, uuid):
        return self.layout.service_dir(name) / f".hashes-{uuid}.json"

    def _remove_hash_caches(self, name, entries):
        for path in self.layout.service_dir(name).glob(".hashes-*.json"):
            if path.name[len(".hashes-"):-len(".json")] not in entries:
                remove_tree(path)

    def _prune_copies(self, name, uuid, snapshot):
        """Keep datasets.keep copies, and never the one the manifest names."""
        replica = str(self.layout.dataset_dir(name, uuid))
        try:
            names = [c.name for c in self.backend.copies(replica)]
            keep = int(self.config.datasets.keep)
            if snapshot in names:
                keep = max(keep, len(names) - names.index(snapshot))
            self.backend.prune(replica, keep)
        except (DatasetError, TransportError, OSError) as e:
            log.warning("pruning old copies of %s: %s", uuid, e,
                        extra={"event": "restore-data-prune-failed", "instance": uuid})

    # -- status ------------------------------------------------------------------------
    def _record(self, name, results, entries, facts):
        for r in results:
            entry = entries[r.uuid]
            ds = entry["dataset"]
            source = entry["source"]
            row = RestoreStatus(
                receiver=self.me, service=name, instance=r.uuid, alias=r.alias,
                source=source["server_uuid"] if source else None,
                snapshot=ds["snapshot"] if ds else None, guid=ds["guid"] if ds else None,
                bytes=ds["bytes"] if ds else 0, duration=r.duration,
                last_success=entry["last_success"], last_attempt=entry["last_attempt"],
                status=r.status, error=r.error)
            try:
                self._store().put_restore_status(row)
            except (StoreError, OSError) as e:
                log.warning("cannot record restore-data status of %s: %s", r.alias, e,
                            extra={"event": "restore-data-status-failed", "instance": r.uuid})
            if self.metrics is not None:
                self.metrics.record_restore(name, r.source or "unknown", r.status, row.bytes,
                                            r.duration, row.last_success, r.bytes_moved)


def _worse(a, b):
    from sdcadm.restore_data.manifest import SEVERITY

    return a if SEVERITY[a] >= SEVERITY[b] else b


def _when(ts):
    if not ts:
        return "never (there is no copy yet)"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

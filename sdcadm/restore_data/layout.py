"""Where restore data lives on a headnode (DESIGN section 4).

Under ``restore_data_dir`` (``/var/sdcadm/svc-restore-data``)::

    dc.json                         versioned dump of the DC model
    .locks/                         lock files (fcntl), one per service and instance
    .vanished.json                  when each held instance was first seen gone (prune_grace)
    .verify/                        scratch clones made by `restore-data verify`
    svc-<service>/
      service.json insts.json       the service and all its instances
      vm-<uuid>.json                payload (schema ``payload``) to re-provision the instance
      images/<uuid>.json .file      the image of each instance and its origin chain
      datasets/<uuid>/              the delegate dataset copy (owned by the dataset backend)
      manifest.json                 what the copy holds and checksums (schema ``restore_manifest``)
      .pending/ .commit/            a metadata update being staged / being moved into place
      .hashes-<uuid>.json           file hashes of the current copy, reused by the next sync

Paths, and the DC key manifests are signed with (read from
``restore_data.key_file`` on first use): no other I/O here except listing
what exists.
"""

from pathlib import Path

from sdcadm.errors import ConfigError
from sdcadm.uuids import check_name, check_uuid, is_name, is_uuid

SERVICE_PREFIX = "svc-"
MANIFEST = "manifest.json"
SERVICE_JSON = "service.json"
INSTS_JSON = "insts.json"
DC_JSON = "dc.json"
HASH_CACHE_PREFIX = ".hashes-"


def vm_name(uuid):
    return f"vm-{uuid}.json"


def image_names(uuid):
    """Relative paths (inside svc-<service>/) of an image's record and file."""
    return f"images/{uuid}.json", f"images/{uuid}.file"


def restore_layout(config):
    """The layout of this server's restore data (``restore_data_dir`` under its root)."""
    return RestoreLayout(config.under_root(config.restore_data_dir),
                         key_file=config.restore_data.key_file, source=config.path)


class RestoreLayout:
    def __init__(self, root, *, key_file=None, source="configuration"):
        self.root = Path(root)
        self.key_file, self._source = key_file, source
        self._key = None

    @property
    def key(self):
        """The DC's restore-data key (bytes); ConfigError saying how to create it.
        Read lazily: listing paths needs no key, reading a manifest does."""
        if self._key is None:
            from sdcadm.config import read_restore_key

            if self.key_file is None:
                raise ConfigError(self._source, ["restore_data.key_file is not set"],
                                  hint="set it to the file holding the DC's restore-data key")
            self._key = read_restore_key(self.key_file, self._source)
        return self._key

    # -- top level -------------------------------------------------------------
    @property
    def dc_json(self):
        return self.root / DC_JSON

    @property
    def locks(self):
        return self.root / ".locks"

    @property
    def vanished_file(self):
        return self.root / ".vanished.json"

    @property
    def scratch(self):
        return self.root / ".verify"

    def service_lock(self, service):
        """Held exclusively for a whole sync of the service (one sync at a time)."""
        return self.locks / f"svc-{check_name(service)}.sync.lock"

    def commit_lock(self, service):
        """Exclusive while files of the service change; shared while they are read."""
        return self.locks / f"svc-{check_name(service)}.commit.lock"

    def instance_lock(self, uuid):
        return self.locks / f"{check_uuid(uuid, 'instance UUID')}.lock"

    @property
    def prune_lock(self):
        return self.locks / "prune.lock"

    # -- per service -----------------------------------------------------------
    def service_dir(self, service):
        # Every per-service path goes through here: the name is checked once.
        return self.root / f"{SERVICE_PREFIX}{check_name(service)}"

    def service_json(self, service):
        return self.service_dir(service) / SERVICE_JSON

    def insts_json(self, service):
        return self.service_dir(service) / INSTS_JSON

    def vm_json(self, service, uuid):
        return self.service_dir(service) / vm_name(check_uuid(uuid, "instance UUID"))

    def images_dir(self, service):
        return self.service_dir(service) / "images"

    def image_json(self, service, uuid):
        return self.images_dir(service) / f"{check_uuid(uuid, 'image UUID')}.json"

    def image_file(self, service, uuid):
        return self.images_dir(service) / f"{check_uuid(uuid, 'image UUID')}.file"

    def datasets_dir(self, service):
        return self.service_dir(service) / "datasets"

    def dataset_dir(self, service, uuid):
        return self.datasets_dir(service) / check_uuid(uuid, "instance UUID")

    def manifest(self, service):
        return self.service_dir(service) / MANIFEST

    def pending(self, service):
        return self.service_dir(service) / ".pending"

    def committing(self, service):
        return self.service_dir(service) / ".commit"

    def hash_cache(self, service, uuid):
        """sha256 of the files of the current copy of ``uuid``, kept so that the
        next sync re-reads only files that changed (backends that hash nothing)."""
        return self.service_dir(service) / f"{HASH_CACHE_PREFIX}{check_uuid(uuid, 'instance UUID')}.json"

    def hash_cache_uuids(self, service):
        """Instance UUIDs that have a hash cache in this service's directory."""
        d = self.service_dir(service)
        if not d.is_dir():
            return []
        return sorted(p.name[len(HASH_CACHE_PREFIX):-len(".json")] for p in d.iterdir()
                      if p.name.startswith(HASH_CACHE_PREFIX) and p.name.endswith(".json"))

    # -- what exists -------------------------------------------------------------
    def services(self):
        """Names of the services that have a svc-<name> directory, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name[len(SERVICE_PREFIX):] for p in self.root.iterdir()
                      if p.is_dir() and p.name.startswith(SERVICE_PREFIX)
                      and is_name(p.name[len(SERVICE_PREFIX):]))

    def dataset_uuids(self, service):
        """Instance UUIDs with a dataset copy of this service, sorted."""
        d = self.datasets_dir(service)
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and is_uuid(p.name))

    def vm_uuids(self, service):
        d = self.service_dir(service)
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            if p.name.startswith("vm-") and p.name.endswith(".json") and is_uuid(p.name[3:-5]):
                out.append(p.name[3:-5])
        return sorted(out)

"""This server's own instances' delegate datasets, per ``datasets.backend``.

Not to be confused with ``sdcadm.datasets`` (the backends that *copy* other
servers' datasets into restore data): this is the agent's side, the dataset
an instance it runs writes to. ``dir``: a plain directory
``zones/<uuid>/data``. ``zfs``: a dataset ``<pool>/zones/<uuid>/data``
mounted there (what the restore-data puller of other headnodes snapshots and
sends). The supervisor's actions call these around provisioning, destroying
and deposing; seeding (restore/migrate) clones the local replica, for zfs
directly under the instance's dataset name so that later syncs from other
headnodes find it where they look.
"""

import os

from sdcadm.datasets.zfspool import (
    create_source_dataset,
    destroy_source_dataset,
    source_dataset_name,
    zfs_program,
)
from sdcadm.transport.local import LocalShell
from sdcadm.transport.zfs import Zfs


class DirDelegateDatasets:
    name = "dir"

    def create(self, layout, uuid):
        layout.data(uuid).mkdir(parents=True, exist_ok=True)

    def dataset_name(self, uuid):
        return None

    def destroy(self, layout, uuid):
        """Nothing beyond the zone directory, which the caller removes."""

    def before_depose(self, layout, uuid):
        """Nothing: the directory moves with the zone."""

    def after_depose(self, layout, uuid, zone):
        """Nothing: the directory moved with the zone."""


class ZfsDelegateDatasets:
    name = "zfs"

    def __init__(self, pool, zfs=None):
        self.pool = pool
        self.zfs = zfs or Zfs(LocalShell(), zfs_program("zfs"))

    def dataset(self, uuid):
        return source_dataset_name(self.pool, uuid)

    dataset_name = dataset

    def create(self, layout, uuid):
        name = create_source_dataset(self.zfs, self.pool, uuid, layout.data(uuid))
        if self.zfs.get_one(name, "mounted") != "yes":
            self.zfs.mount(name)

    def destroy(self, layout, uuid):
        destroy_source_dataset(self.zfs, self.dataset(uuid))

    def before_depose(self, layout, uuid):
        name = self.dataset(uuid)
        if self.zfs.exists(name):
            self.zfs.unmount(name, force=True)

    def after_depose(self, layout, uuid, zone):
        """Kept for forensics: mounted again where the zone went."""
        name = self.dataset(uuid)
        if zone is not None and self.zfs.exists(name):
            self.zfs.set(name, "mountpoint", os.path.abspath(zone / "data"))


def for_config(config):
    if config.datasets.backend == "zfs":
        return ZfsDelegateDatasets(config.datasets.zfs_pool)
    return DirDelegateDatasets()

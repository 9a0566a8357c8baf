"""Instances' delegate datasets on this server, per ``datasets.backend``.

``dir``: a plain directory ``zones/<uuid>/data``. ``zfs``: a dataset
``<pool>/zones/<uuid>/data`` mounted there (what the restore-data puller of
other headnodes snapshots and sends). The supervisor calls these around
provisioning, destroying and deposing; seeding (restore/migrate) clones the
local replica, for zfs directly under the instance's dataset name so that
later syncs from other headnodes find it where they look.
"""

import os


class DirDatasets:
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


class ZfsDatasets:
    name = "zfs"

    def __init__(self, pool, zfs=None):
        from sdcadm.datasets.zfspool import find_program
        from sdcadm.transport.local import LocalShell
        from sdcadm.transport.zfs import Zfs

        self.pool = pool
        self.zfs = zfs or Zfs(LocalShell(), find_program("zfs"))

    def dataset(self, uuid):
        from sdcadm.datasets.zfspool import source_dataset_name

        return source_dataset_name(self.pool, uuid)

    dataset_name = dataset

    def create(self, layout, uuid):
        from sdcadm.datasets.zfspool import create_source_dataset

        name = create_source_dataset(self.zfs, self.pool, uuid, layout.data(uuid))
        if self.zfs.get_one(name, "mounted") != "yes":
            self.zfs.mount(name)

    def destroy(self, layout, uuid):
        from sdcadm.datasets.zfspool import destroy_source_dataset

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
        return ZfsDatasets(config.datasets.zfs_pool)
    return DirDatasets()

"""Delegate datasets: one interface (``base.DatasetBackend``), two backends.

``get_backend(config)`` -> the backend ``datasets.backend`` names (``dir`` or
``zfs``), with the ``ssh.*`` options and ``datasets.zfs_pool``.
``create_source_dataset`` (re-exported from ``zfspool``) makes an instance's
delegate dataset a zfs dataset for the agent and the lab. See docs/datasets.md.
"""

from sdcadm.errors import DatasetError


def get_backend(config, **options):
    """The dataset backend of ``config`` (extra ``options`` go to its
    constructor, e.g. ``transport_factory``)."""
    kind = config.datasets.backend
    if kind == "dir":
        from sdcadm.datasets.dirbackend import DirBackend
        return _build(DirBackend, config, options)
    if kind == "zfs":
        from sdcadm.datasets.zfsbackend import ZfsBackend
        return _build(ZfsBackend, config, options)
    raise DatasetError(f"unknown dataset backend {kind!r}", hint="datasets.backend: dir | zfs")


def _build(cls, config, options):
    s = config.ssh
    args = dict(port=s.port, user=s.user, identity=s.identity, known_hosts=s.known_hosts,
                connect_timeout=s.connect_timeout)
    args.update(options)
    if cls.name == "zfs":
        return cls(config.datasets.zfs_pool, **args)
    return cls(**args)


def create_source_dataset(zfs, pool, instance_uuid, mountpoint):
    """See ``sdcadm.datasets.zfspool.create_source_dataset``."""
    from sdcadm.datasets.zfspool import create_source_dataset as create
    return create(zfs, pool, instance_uuid, mountpoint)

"""What a sync cycle pulls, and from where.

``Facts`` is the DC model as read from the store once at the start of a cycle
(every decision of the cycle is made over that one reading). The source of an
instance is its server, reached as the configuration says: its files under
``restore_data.source_root_template`` (e.g. an NFS mount, or the lab's
per-server roots), its zfs datasets under ``datasets.zfs_source_pool_template``.
"""

from pathlib import Path

from sdcadm.errors import ConfigError, SdcadmError
from sdcadm.restore_data.plan import plan_pulls


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

    def hostname(self, uuid, default):
        server = self.server(uuid)
        return server.hostname if server else default


def plan_cycle(receiver, facts, catalog, now, heartbeat_timeout, services=None):
    """(every pull this receiver should hold, the pulls of this cycle): the
    second is the first limited to ``services`` (default: all of it)."""
    full = plan_pulls(receiver, facts.servers, facts.services.values(), facts.instances,
                      catalog.services, now=now, heartbeat_timeout=heartbeat_timeout)
    wanted = full if services is None else {s: full.get(s, []) for s in services}
    return full, wanted


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


def source_images_dir(config, server):
    """The source server's image cache (where its agent keeps image files)."""
    return str(Path(source_root(config, server)) / "var" / "sdcadm" / "images")


def source_ref(config, item):
    """The SourceRef a dataset backend pulls ``item``'s delegate dataset from."""
    from sdcadm.datasets.base import SourceRef

    inst, server = item.instance, item.source
    pool = source_pool(config, server)
    zfs_dataset = None
    if pool:
        from sdcadm.datasets.zfspool import source_dataset_name

        zfs_dataset = source_dataset_name(pool, inst.uuid)
    return SourceRef(server_uuid=server.uuid, hostname=server.hostname, host=server.admin_ip,
                     instance_uuid=inst.uuid, path=source_data_path(config, server, inst.uuid),
                     zfs_dataset=zfs_dataset)

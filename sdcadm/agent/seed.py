"""Seeding a new instance from this server's restore data.

`service restore` and `service migrate` do not copy anything into the new
server themselves: they write the instance record with
``params.seed_from = {"instance": <uuid>, "service": <name>}`` and assign it
here. Before provisioning, the agent then takes, from its *own* restore data
(`RestoreData`), the image chain (when the image source lacks it — imgapi may
be the service being restored) and a zero-copy clone of the last good copy of
that instance's delegate dataset into ``zones/<uuid>/data``. No byte crosses
the network at restore time.

Both are checked against the service's signed manifest first (`RestoreData`
does): a copy changed since it was pulled is refused with RestoreDataBroken
naming the file, nothing of it is left under ``zones/``, and the provisioning
fails with that reason (the instance is ``failed``, the procedure says why).
"""

import logging
import threading

log = logging.getLogger(__name__)

SEED_KEY = "seed_from"


def seed_source(instance):
    """(instance uuid, service) to seed from, or None."""
    seed = instance.params.get(SEED_KEY)
    if not isinstance(seed, dict) or not seed.get("instance"):
        return None
    return seed["instance"], seed.get("service") or instance.service


class Seeder:
    """Seeds instances from the restore data of the server's configuration."""

    def __init__(self, config, layout, dataset_name=None):
        self.config = config
        self.layout = layout
        # zfs: the name the instance's delegate dataset must have (the clone is
        # made under it, so later syncs find it where they look); dir: None.
        self.dataset_name = dataset_name or (lambda uuid: None)
        self._data = None
        self._lock = threading.Lock()  # a pass seeds several instances at once

    @property
    def data(self):
        with self._lock:
            if self._data is None:
                from sdcadm.restore_data.access import RestoreData

                self._data = RestoreData(self.config)
            return self._data

    def prepare(self, instance):
        """Install the image chain and clone the dataset of ``instance``'s seed,
        when it has one and its data directory does not exist yet. Idempotent.
        Returns a short description of what was done, or None."""
        source = seed_source(instance)
        if source is None:
            return None
        uuid, service = source
        copy = self.data.instance_copy(uuid, service)
        self.data.install_images(copy, self.layout.images)
        target = self.layout.data(instance.uuid)
        if not instance.delegate_dataset or self.data.cloned(target):
            return f"images of {copy.alias} installed"
        self.data.clone_dataset(copy, target, name=self.dataset_name(instance.uuid))
        log.info("instance %s seeded from the restore data of %s (as of %s)", instance.alias,
                 copy.alias, copy.as_of,
                 extra={"event": "instance-seeded", "instance": instance.uuid, "seed": uuid,
                        "snapshot": copy.snapshot})
        return f"seeded from {copy.alias}'s copy {copy.snapshot}"

"""Staging the metadata of a service's restore data into ``.pending/``.

service.json, insts.json, and per instance its vm-<uuid>.json (the payload
that re-provisions it) and its image with the origin chain. Nothing reaches
the manifest's file list unless all of an instance's files were staged, so a
failure keeps the previous, consistent set; an image already committed with
the same sha256 is kept rather than copied again (images are immutable).
"""

from sdcadm.payload import make_payload, payload_env
from sdcadm.restore_data.imagecopy import fetch_image
from sdcadm.restore_data.layout import INSTS_JSON, SERVICE_JSON, image_names, vm_name
from sdcadm.restore_data.plan import image_chain
from sdcadm.restore_data.sources import source_images_dir


def stage_service(staging, facts, name):
    """Stage service.json and insts.json; return their manifest entries."""
    service = facts.services.get(name)
    members = [i.to_dict() for i in facts.instances if i.service == name]
    return {
        SERVICE_JSON: staging.write_json(SERVICE_JSON,
                                         service.to_dict() if service else {"name": name}),
        INSTS_JSON: staging.write_json(INSTS_JSON, members),
    }


def carry_files(uuid, entry, prev_files, files):
    """Keep the manifest entries of the files of a copy that is not re-synced
    (its vm-<uuid>.json and its image chain stay in place)."""
    for image in entry.get("images", []):
        for rel in image_names(image):
            if rel in prev_files and rel not in files:
                files[rel] = prev_files[rel]
    if vm_name(uuid) in prev_files and vm_name(uuid) not in files:
        files[vm_name(uuid)] = prev_files[vm_name(uuid)]


class InstanceStager:
    """Stages one instance's vm-<uuid>.json and image chain."""

    def __init__(self, config, layout):
        self.config, self.layout = config, layout

    def stage(self, name, item, facts, staging, files, prev_files, transport):
        """Return ({rel: manifest entry}, image chain UUIDs); nothing is added to
        ``files`` here, and on failure what was staged is discarded."""
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
        if rel_file in files:
            return
        prev = prev_files.get(rel_file)
        kept = self.layout.service_dir(name) / rel_file
        if (prev and prev["sha256"] == image.sha256 and kept.is_file()
                and not kept.is_symlink() and kept.stat().st_size == prev["bytes"]):
            staged[rel_file] = prev          # keep the committed file
            return
        remote_dir = source_images_dir(self.config, item.source) if transport else None
        digest, size = fetch_image(image, staging.file(rel_file), self.config.image_source,
                                   transport, remote_dir)
        staged[rel_file] = {"sha256": digest, "bytes": size}


"""The agent's local cache of the last DC state it saw (one JSON file).

Written atomically (temporary file, fsync, rename, fsync of the directory) so
a crash leaves either the old or the new copy, never half of one. Read back
at start-up so the agent knows its instances before the store answers, and
so an operator can rebuild the store from it.
"""

import json
import logging
from pathlib import Path

from sdcadm.errors import ValidationError
from sdcadm.fsutil import write_json_atomic
from sdcadm.model import Image, Instance
from sdcadm.schemas import validate

log = logging.getLogger(__name__)

VERSION = 1


class StateCache:
    """``save(server_uuid, instances, images, revision, saved_at)`` / ``load()``."""

    def __init__(self, path):
        self.path = Path(path)
        self._last = None

    def save(self, server_uuid, instances, images, revision, saved_at):
        """Write the cache if its content changed; return True if written."""
        content = {
            "version": VERSION,
            "server_uuid": server_uuid,
            "revision": revision,
            "instances": [i.to_dict() for i in instances],
            "images": {u: img.to_dict() for u, img in sorted(images.items())},
        }
        if content == self._last:
            return False
        write_json_atomic(self.path, {**content, "saved_at": saved_at})
        self._last = content
        return True

    def load(self, server_uuid):
        """(instances, images, saved_at) from the cache; empty when absent or unusable."""
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return [], {}, None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable agent cache %s: %s", self.path, e,
                        extra={"event": "cache-unreadable"})
            return [], {}, None
        try:
            return self._parse(doc, server_uuid)
        except (ValidationError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("ignoring invalid agent cache %s: %s", self.path, e,
                        extra={"event": "cache-invalid"})
            return [], {}, None

    def _parse(self, doc, server_uuid):
        if doc.get("version") != VERSION:
            raise ValueError(f"cache version {doc.get('version')!r}, expected {VERSION}")
        if doc.get("server_uuid") != server_uuid:
            raise ValueError(f"cache belongs to server {doc.get('server_uuid')!r}, not {server_uuid}")
        instances = []
        for i, raw in enumerate(doc["instances"]):
            validate("instance", raw, f"{self.path}: instances[{i}]")
            instances.append(Instance.from_dict(raw))
        images = {}
        for uuid, raw in doc.get("images", {}).items():
            validate("image", raw, f"{self.path}: images.{uuid}")
            images[uuid] = Image.from_dict(raw)
        return instances, images, doc.get("saved_at")

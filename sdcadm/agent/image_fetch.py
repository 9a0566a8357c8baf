"""Images over the network: a server that lacks an image fetches it from
another server's agent, never from a path another server shares.

An image enters the DC on one server (``sdcadm image import`` on a headnode,
or the lab's first headnode); every other server that must run it asks the
agents of the running servers (headnodes first) for ``GET
/v1/images/<uuid>/file`` with the DC's agent token, streams the answer into
a temporary file in its own image directory while hashing it, and keeps it
only if its size is within ``agent.max_image_bytes`` and its sha256 is the
one the image's record in the DC store names. A peer that does not have it,
does not answer, or sends something else is skipped for the next.
"""

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from sdcadm.errors import ImageError, StoreError
from sdcadm.health import http_open
from sdcadm.fsutil import write_json_atomic
from sdcadm.model import SERVER_RUNNING, status_of

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def peers(servers, me, now, heartbeat_timeout):
    """The servers to ask, in order: running ones other than ``me`` with an
    agent, headnodes first, then by hostname. Pure."""
    found = [s for s in servers if s.uuid != me and s.agent_url
             and status_of(s, now, heartbeat_timeout) == SERVER_RUNNING]
    return sorted(found, key=lambda s: (not s.headnode, s.hostname))


class PeerImages:
    def __init__(self, me, stores, token, heartbeat_timeout, max_bytes, timeout=10.0):
        self.me, self.stores, self.token = me, stores, token
        self.heartbeat_timeout, self.max_bytes, self.timeout = heartbeat_timeout, max_bytes, timeout

    def fetch(self, image, images_dir):
        """Fetch ``image`` into ``images_dir`` as <uuid>.file (checked) and
        <uuid>.json; return the file's path. ImageError naming every peer tried."""
        try:
            store = self.stores.get()
            candidates = peers(store.list_servers(), self.me, store.now(), self.heartbeat_timeout)
        except StoreError as e:
            raise ImageError(f"image {image.uuid} is not on this server and the DC store, which "
                             f"says where else it is, cannot be read: {e}",
                             hint="retried at the next pass") from None
        images_dir = Path(images_dir)
        images_dir.mkdir(parents=True, exist_ok=True)
        tried = []
        for peer in candidates:
            try:
                path = self._from(peer, image, images_dir)
            except (OSError, ImageError) as e:
                tried.append(f"{peer.hostname}: {e}")
                continue
            write_json_atomic(images_dir / f"{image.uuid}.json", image.to_dict())
            log.info("image %s (%s@%s) fetched from %s", image.uuid, image.name, image.version,
                     peer.hostname, extra={"event": "image-fetched", "image": image.uuid,
                                           "peer": peer.hostname})
            return path
        raise ImageError(f"image {image.uuid} ({image.name}@{image.version}) is not on this "
                         "server, and no other server gave a good copy"
                         + (": " + "; ".join(tried) if tried else " (no other server is running)"),
                         hint="import the image on a headnode (`sdcadm image import FILE`)")

    def _from(self, peer, image, images_dir):
        url = f"{peer.agent_url}/v1/images/{image.uuid}/file"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        fd, tmp = tempfile.mkstemp(prefix=f".{image.uuid}.", suffix=".fetch", dir=images_dir)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, http_open(request, self.timeout) as resp:
                declared = resp.headers.get("Content-Length")
                if declared is not None and int(declared) > self.max_bytes:
                    raise ImageError(f"it offers {declared} bytes, over the limit of "
                                     f"{self.max_bytes} (agent.max_image_bytes)")
                while chunk := resp.read(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ImageError(f"it sent more than {self.max_bytes} bytes "
                                         "(agent.max_image_bytes)")
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != image.sha256:
                raise ImageError(f"it sent {size} bytes of sha256 {digest.hexdigest()}, "
                                 f"not {image.sha256}")
            dest = images_dir / f"{image.uuid}.file"
            os.replace(tmp, dest)
            return dest
        except urllib.error.HTTPError as e:
            raise ImageError(f"HTTP {e.code}") from None
        except ValueError as e:  # a Content-Length that is not a number
            raise ImageError(f"bad answer: {e}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

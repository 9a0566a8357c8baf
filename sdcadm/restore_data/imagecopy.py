"""Copying an image (and, by the caller, its origin chain) into restore data.

The image file comes from this headnode's own ``image_source`` when it has a
good copy there, else from the source server's image cache over SSH. Either
way it must match the sha256 of its Image record and be a tarball every entry
of which stays inside the root (no absolute path, no ``..``, no link leaving
it, no device file): anything else is refused, and the copy kept is the last
good one.
"""

import os
import tarfile
from pathlib import Path

from sdcadm.errors import ImageError, TransportError
from sdcadm.images import check_member
from sdcadm.fsutil import copy_atomic, sha256_file, write_bytes_atomic


def check_image_file(path, image):
    """Raise ImageError unless ``path`` is ``image``'s file and safe to unpack."""
    digest = sha256_file(path, follow_symlinks=False)
    if digest != image.sha256:
        raise ImageError(f"image file of {image.uuid} ({image.name}@{image.version}) has sha256 "
                         f"{digest}, expected {image.sha256}")
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                check_member(member)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ImageError(f"image file of {image.uuid} is not a readable tarball: {e}") from None


def fetch_image(image, dest, local_dir, remote=None, remote_dir=None):
    """Put ``image``'s file at ``dest`` (atomically) and check it; return (sha256, bytes).

    ``local_dir``: this headnode's image source. ``remote``: an SSH transport
    to the source server, ``remote_dir`` its image cache, used when the local
    copy is missing or bad. The file at ``dest`` is only replaced by a checked
    copy: a bad one is removed and ImageError raised.
    """
    dest = Path(dest)
    problems = []
    local = Path(local_dir) / f"{image.uuid}.file"
    if local.is_file():
        try:
            check_image_file(local, image)
            return copy_atomic(local, dest)
        except ImageError as e:
            problems.append(f"local copy {local}: {e}")
    if remote is not None and remote_dir:
        tmp = dest.with_name(f".{dest.name}.remote")
        try:
            result = remote.run_bytes(["cat", f"{remote_dir.rstrip('/')}/{image.uuid}.file"])
            write_bytes_atomic(tmp, result.stdout)
            check_image_file(tmp, image)
            os.replace(tmp, dest)
            return image.sha256, len(result.stdout)
        except (ImageError, TransportError) as e:
            problems.append(f"copy from {remote.address}: {str(e).strip()}")
        finally:
            if tmp.exists():
                tmp.unlink()
    if not problems:
        problems.append(f"not in {local_dir}" + (" nor on the source server" if remote else ""))
    raise ImageError(f"cannot copy image {image.uuid} ({image.name}@{image.version}): "
                     + "; ".join(problems),
                     hint=f"import the image into {local_dir}")

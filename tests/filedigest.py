"""The dataset file digest (sdcadm/datasets/digest.py), written again here
from its definition so that tests do not check the code with itself."""

import hashlib

CHUNK = 128 * 1024


def of_bytes(data):
    """sha256(size, 8 bytes big-endian + the sha256 of each 128 KiB chunk)."""
    h = hashlib.sha256(len(data).to_bytes(8, "big"))
    for i in range(0, len(data), CHUNK):
        h.update(hashlib.sha256(data[i:i + CHUNK]).digest())
    return h.hexdigest()


def of_file(path):
    with open(path, "rb") as f:
        return of_bytes(f.read())

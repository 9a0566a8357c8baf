"""The digest of a dataset file: sha256 over the sha256 of its 128 KiB chunks.

A copy's manifest names every file of a dataset by a digest. A whole-file
sha256 must read the whole file again whenever one byte of it changed; this
one is a hash list::

    chunk i   = bytes [i * 128 KiB, min((i + 1) * 128 KiB, size))
    digest    = sha256(size as 8 bytes big-endian + sha256(chunk 0) + sha256(chunk 1) + ...)

so a sync that knows which chunks changed (the zfs backend reads them off the
send stream as it passes, ``zstream.py``) hashes those chunks only and takes
the others' hashes from the previous copy. Reading a file (verify, seeding,
the dir backend) costs what a sha256 of it costs. The size is in the root so
that a file and the same file with trailing zero bytes differ.

``ALGORITHM`` names it in manifests (a dataset entry's ``digest``); an entry
without ``digest`` was written with whole-file sha256 (``WHOLE_FILE``), which
``file_digest`` still computes for such manifests.
"""

import hashlib
import os

from sdcadm.fsutil import sha256_file

CHUNK = 128 * 1024
ALGORITHM = "sha256-128k"
WHOLE_FILE = "sha256"
ALGORITHMS = (ALGORITHM, WHOLE_FILE)

_ZERO_CHUNK = hashlib.sha256(bytes(CHUNK)).digest()


def chunk_count(size):
    return -(-size // CHUNK)


def chunk_length(size, index):
    """Bytes of chunk ``index`` of a file of ``size`` bytes."""
    return min(CHUNK, size - index * CHUNK)


def zero_chunk(length):
    """Raw sha256 of ``length`` zero bytes (a hole)."""
    return _ZERO_CHUNK if length == CHUNK else hashlib.sha256(bytes(length)).digest()


def root(size, chunks):
    """Hex digest of a file of ``size`` bytes from its chunks' raw sha256s (in order)."""
    h = hashlib.sha256(size.to_bytes(8, "big"))
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def read_chunks(fd, size, indexes):
    """{index: raw sha256} of the chunks ``indexes`` of the open file ``fd``
    (OSError if the file is shorter than ``size`` says)."""
    out = {}
    for i in indexes:
        want = chunk_length(size, i)
        data = os.pread(fd, want, i * CHUNK)
        if len(data) != want:
            raise OSError(0, f"short read at chunk {i}: the file changed while it was read")
        out[i] = hashlib.sha256(data).digest()
    return out


def open_nofollow(path):
    """A read-only fd on ``path``, never through a symlink (OSError ELOOP)."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)


def file_chunks(path):
    """(size, [raw sha256 of each chunk]) of the file at ``path`` (not through a symlink)."""
    size, chunks = 0, []
    with os.fdopen(open_nofollow(path), "rb") as f:   # buffered: whole chunks but the last
        for data in iter(lambda: f.read(CHUNK), b""):
            size += len(data)
            chunks.append(hashlib.sha256(data).digest())
    return size, chunks


def file_digest(path, algorithm=ALGORITHM):
    """The digest of the file at ``path`` under ``algorithm`` (never through a symlink)."""
    if algorithm == WHOLE_FILE:
        return sha256_file(path, follow_symlinks=False)
    if algorithm != ALGORITHM:
        raise ValueError(f"unknown file digest {algorithm!r}")
    size, chunks = file_chunks(path)
    return root(size, chunks)

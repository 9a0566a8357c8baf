"""The zfs backend's chunk hashes of its current copy, and the resolver that
names a received copy's files from them and from the stream.

``<replica_dir>/chunks.json``::

    {"algorithm": "sha256-128k", "snapshot": "<the copy they describe>",
     "objects": {"<object number>": [[type, blksz, bonuslen] | null, size,
                                     "<hex sha256 per chunk>"]}}

A sync receives an incremental stream from the copy named there; every
chunk the stream leaves alone keeps its hash (``zstream.StreamHasher``
decides which), the others come from the stream or, when it cannot say, are
read from the received copy -- only those chunks. A missing, stale or
damaged file only means more reading.
"""

import json
import logging
import os
import threading

from sdcadm.datasets import digest
from sdcadm.errors import DatasetError
from sdcadm.fsutil import write_cache_atomic

log = logging.getLogger(__name__)

CACHE = "chunks.json"
HASH_HEX = 64


def load_record(path, snapshot, parse, instead):
    """``parse(record)`` of the JSON record at ``path`` if it was written
    for this digest and copy ``snapshot``; else None. A record ``parse``
    refuses (ValueError, TypeError, KeyError, ...) is logged and ignored:
    the sync does ``instead`` (says the log), never trusts it."""
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("algorithm") != digest.ALGORITHM or data.get("snapshot") != snapshot:
            return None
        return parse(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError, KeyError, DatasetError) as e:
        log.warning("ignoring %s: %s (%s)", path, e, instead)
        return None


def save_record(path, snapshot, body):
    write_cache_atomic(path, {"algorithm": digest.ALGORITHM, "snapshot": snapshot, **body})


def load(replica_dir, snapshot):
    """{object number: (params, size, hex)} recorded for copy ``snapshot``
    (``hex``: 64 digits per chunk, split only for the objects a sync names:
    ``raw_chunks``), or None (none, another copy's, or not readable)."""
    def parse(data):
        out = {}
        for number, (params, size, hexes) in data["objects"].items():
            if len(hexes) != HASH_HEX * digest.chunk_count(size):
                raise ValueError(f"object {number}: {len(hexes)} hex digits for {size} bytes")
            bytes.fromhex(hexes)      # checked here (C speed), split only when used
            out[int(number)] = (tuple(params) if params else None, size, hexes)
        return out
    return load_record(os.path.join(replica_dir, CACHE), snapshot, parse,
                       "the copy's files are read instead")


def raw_chunks(entry):
    """A loaded entry with its chunk hashes as [raw sha256]."""
    params, size, hexes = entry
    raw = bytes.fromhex(hexes)
    return params, size, [raw[i:i + 32] for i in range(0, len(raw), 32)]


def save(replica_dir, snapshot, objects):
    """``objects``: {number: (params, size, [raw sha256] or the hex as loaded)}."""
    save_record(os.path.join(replica_dir, CACHE), snapshot, {
        "objects": {str(n): [list(p) if p else None, size,
                             chunks if isinstance(chunks, str) else b"".join(chunks).hex()]
                    for n, (p, size, chunks) in objects.items()}})


class Resolver:
    """``tree.scan_tree``'s ``resolve`` for a copy just received: a file's
    digest from ``hasher`` (None: it read nothing usable) and ``base`` (the
    previous copy's objects, or None); ``objects`` collects what to save."""

    def __init__(self, root, hasher, base):
        self.root, self.hasher, self.base = root, hasher, base or {}
        self.objects = {}
        self._lock = threading.Lock()
        self.read_bytes = 0

    def __call__(self, rel, st):
        number, size = st.st_ino, st.st_size
        base = self.base.get(number)
        if base is not None:
            base = raw_chunks(base)
        if self.hasher is not None:
            chunks = self.hasher.resolve(number, size, base)
            params = self.hasher.params(number, base)
        else:
            chunks, params = [None] * digest.chunk_count(size), None
        missing = [i for i, c in enumerate(chunks) if c is None]
        if not missing:
            return self._done(number, params, size, chunks)
        path = os.path.join(self.root, rel)

        def read():
            fd = digest.open_nofollow(path)
            try:
                if os.fstat(fd).st_size != size:
                    raise OSError(0, "the file changed size while it was read")
                got = digest.read_chunks(fd, size, missing)
            finally:
                os.close(fd)
            with self._lock:
                self.read_bytes += sum(digest.chunk_length(size, i) for i in missing)
            for i, c in got.items():
                chunks[i] = c
            return self._done(number, params, size, chunks)
        return read

    def _done(self, number, params, size, chunks):
        self.objects[number] = (params, size, chunks)
        return digest.root(size, chunks)

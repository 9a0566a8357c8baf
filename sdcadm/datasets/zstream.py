"""The chunk hashes of a zfs send stream, read as it passes to ``zfs recv``.

A sync used to read every file it received back through the filesystem to
hash it (zfs-fuse: the most expensive part of a full sync, and a 64 MiB file
re-read whole for one changed block). The stream already carries every
block it changes: ``StreamHasher.feed`` is given the stream's bytes as the
relay moves them and hashes each 128 KiB chunk (``digest.py``) of each plain
file the stream writes. ``resolve`` then says, for one file of the received
copy (object number = inode number on ZPL), the hash of each chunk: from the
stream, a hole, the previous copy's (a chunk the stream did not touch), or
``None``: read it from the copy. Whatever it cannot be sure of is ``None``.

Records (``dmu_replay_record``: 312-byte header, native byte order, then a
payload): BEGIN, OBJECT (+ bonus), FREEOBJECTS, WRITE (+ data), FREE, END,
SPILL (+ data). A stream with any other record, another byte order, a
compound (``-R``) header or a feature that changes what a WRITE carries
(dedup, embedded, compressed, raw) is not understood: ``ok`` turns False
and the caller reads every file, as before. So does a parse error: nothing
here may fail the transfer; ``zfs recv`` judges the stream.

Semantics kept (as ``zfs recv`` applies them, in stream order): a WRITE sets
the bytes it covers; a FREE zeroes its range; FREEOBJECTS drops objects; an
OBJECT whose type, block size or bonus length differ from the previous
copy's may have been reallocated: none of its old chunks are reused. A chunk
is known only from [0, n) of it (``filled``); bytes past the file's end must
be zeros in the stream for a partial last chunk to be taken from it.
"""

import hashlib
import logging
import struct

from sdcadm.datasets.digest import CHUNK, chunk_count, chunk_length, zero_chunk

log = logging.getLogger(__name__)

HEADER = 312
MAGIC = 0x2F5BACBAC
BEGIN, OBJECT, FREEOBJECTS, WRITE, FREE, END, WRITE_BYREF, SPILL = range(8)
PLAIN_FILE = 19                     # DMU_OT_PLAIN_FILE_CONTENTS
SUBSTREAM = 1                       # DMU_SUBSTREAM (not a compound -R stream)
# Features a plain `zfs send [-i]` may set without changing what a WRITE
# carries: SA spill blocks (1<<2), large blocks (1<<19), large dnodes (1<<23).
HARMLESS_FEATURES = (1 << 2) | (1 << 19) | (1 << 23)
ZERO_RUN_LIMIT = 64                 # longer FREE ranges are kept as a range
MAX_PAYLOAD = 16 << 20              # zfs's largest block; a longer payload is not a block
TO_THE_END = (1 << 64) - 1

_U32x2 = struct.Struct("<II")
_BEGIN = struct.Struct("<QQ")                  # magic, versioninfo
_OBJECT = struct.Struct("<QIIII")              # object, type, bonustype, blksz, bonuslen
_FREEOBJECTS = struct.Struct("<QQ")            # firstobj, numobjs
_WRITE = struct.Struct("<QI4xQQ8xBBB")  # object, type, offset, length, cksum, flags, compress
_FREE = struct.Struct("<QQQ")                  # object, offset, length
_SPILL = struct.Struct("<QQ")                  # object, length


class _NotUnderstood(Exception):
    """The stream is not one this reader can vouch for."""


def _nonzero_end(view):
    """Length of ``view`` without its trailing zero bytes."""
    if not view or view[-1]:
        return len(view)
    return len(bytes(view).rstrip(b"\0"))


class Builder:
    """A chunk known over [0, filled): its hash so far, fed up to ``nz``
    (the rest of what is known is zeros, fed only when data follows)."""

    __slots__ = ("hash", "filled", "nz")

    def __init__(self, filled=0):
        self.hash, self.filled, self.nz = hashlib.sha256(), filled, 0

    def feed(self, view):
        end = _nonzero_end(view)
        if end:
            if self.filled > self.nz:
                self.hash.update(bytes(self.filled - self.nz))
            self.hash.update(view[:end])
            self.nz = self.filled + end
        self.filled += len(view)

    def digest(self, need):
        """Raw sha256 of the chunk's first ``need`` bytes, or None (not all
        known, or non-zero bytes beyond them)."""
        if not self.nz <= need <= self.filled:
            return None
        if need == self.nz:
            return self.hash.digest()
        h = self.hash.copy()
        h.update(bytes(need - self.nz))
        return h.digest()


class Kept:
    """A chunk the stream left as it was over [0, upto) (a FREE began
    inside it: past a small file's only block, say)."""

    __slots__ = ("upto",)

    def __init__(self, upto):
        self.upto = upto


ZERO = "zero"        # the whole chunk is a hole
UNKNOWN = "unknown"  # touched in a way not followed: read it


class Obj:
    __slots__ = ("params", "freed", "chunks", "zero_ranges")

    def __init__(self, freed):
        self.params = None          # (type, blksz, bonuslen) of its last OBJECT record
        self.freed = freed          # dropped by FREEOBJECTS at some point in the stream
        # index -> raw sha256 of a whole chunk | Builder | Kept | ZERO | UNKNOWN
        self.chunks = {}
        self.zero_ranges = []       # [(first, end)) of chunk indexes made holes


class StreamHasher:
    def __init__(self):
        self.ok = True
        self.reason = None
        self.incremental = None     # from BEGIN: fromguid != 0
        self.objects = {}
        self._freed_ranges = []
        self._other_writes = set()  # objects whose non-file blocks were written (directories)
        self._buf = bytearray()
        self._header = None         # the header whose payload is being read
        self._need = HEADER
        self.hashed_bytes = 0

    # -- feeding -----------------------------------------------------------
    def feed(self, data):
        """The next bytes of the stream (any split). Never raises."""
        if not self.ok:
            return
        try:
            self._feed(memoryview(data))
        except _NotUnderstood as e:
            self._give_up(str(e))
        except Exception as e:    # a bug here must not fail a transfer
            log.exception("zfs stream reader failed")
            self._give_up(f"reader error: {e}")

    def _give_up(self, reason):
        self.ok, self.reason = False, reason
        self.objects.clear()
        self._other_writes.clear()
        self._buf = bytearray()
        log.info("not hashing from the zfs stream: %s (the copy is read instead)", reason)

    def finish(self):
        """After the stream's last byte: False (and ``reason``) if it ended mid-record."""
        if self.ok and (self._buf or self._header is not None or self._need != HEADER):
            self._give_up("the stream ended inside a record")
        if self.ok and self.incremental is None:
            self._give_up("the stream had no BEGIN record")
        return self.ok

    def _feed(self, view):
        while view:
            if self._buf or len(view) < self._need:
                take = min(self._need - len(self._buf), len(view))
                self._buf += view[:take]
                view = view[take:]
                if len(self._buf) < self._need:
                    return
                record, self._buf = memoryview(bytes(self._buf)), bytearray()
            else:
                record, view = view[:self._need], view[self._need:]
            self._record(record)

    def _record(self, data):
        if self._header is None:
            kind, payload_len = _U32x2.unpack_from(data, 0)
            length = self._header_record(kind, data[8:], payload_len)
            if length:
                self._header, self._need = (kind, data[8:].tobytes()), length
            else:
                self._need = HEADER
        else:
            kind, body = self._header
            self._header, self._need = None, HEADER
            if kind == WRITE:
                self._write(body, data)

    def _header_record(self, kind, body, payload_len):
        """Apply a header; the payload length that follows it."""
        length = self._header_payload(kind, body, payload_len)
        if not 0 <= length <= MAX_PAYLOAD:
            raise _NotUnderstood(f"a record of type {kind} announces {length} bytes")
        return length

    def _header_payload(self, kind, body, payload_len):
        if kind == BEGIN:
            magic, versioninfo = _BEGIN.unpack_from(body, 0)
            if magic != MAGIC:
                raise _NotUnderstood("not a native-byte-order send stream")
            if versioninfo & 3 != SUBSTREAM:
                raise _NotUnderstood("a compound (-R) stream")
            if (versioninfo >> 2) & ~HARMLESS_FEATURES:
                raise _NotUnderstood(f"stream features {versioninfo >> 2:#x}")
            if self.incremental is not None:
                raise _NotUnderstood("more than one BEGIN record")
            fromguid = struct.unpack_from("<Q", body, 40)[0]
            self.incremental = fromguid != 0
            return payload_len
        if self.incremental is None:
            raise _NotUnderstood("no BEGIN record first")
        if kind == OBJECT:
            obj, typ, _bonustype, blksz, bonuslen = _OBJECT.unpack_from(body, 0)
            self._obj(obj).params = (typ, blksz, bonuslen)
            return -(-bonuslen // 8) * 8
        if kind == FREEOBJECTS:
            first, count = _FREEOBJECTS.unpack_from(body, 0)
            end = min(first + count, TO_THE_END)
            self._freed_ranges.append((first, end))
            for obj in [o for o in self.objects if first <= o < end]:
                self.objects[obj] = Obj(freed=True)
            return 0
        if kind == WRITE:
            obj, typ, offset, length, _ck, _flags, compress = _WRITE.unpack_from(body, 0)
            if compress:
                raise _NotUnderstood("a compressed WRITE record")
            return length     # not file data (directories, ...): read past, unhashed
        if kind == FREE:
            obj, offset, length = _FREE.unpack_from(body, 0)
            self._free(obj, offset, length)
            return 0
        if kind == END:
            return 0
        if kind == SPILL:
            return _SPILL.unpack_from(body, 0)[1]
        raise _NotUnderstood(f"record type {kind}")

    def _obj(self, number):
        obj = self.objects.get(number)
        if obj is None:
            freed = any(a <= number < b for a, b in self._freed_ranges)
            obj = self.objects[number] = Obj(freed)
        return obj

    def _write(self, body, data):
        obj_no, typ, offset, length, *_ = _WRITE.unpack_from(body, 0)
        if typ != PLAIN_FILE:
            self._other_writes.add(obj_no)
            return
        obj = self._obj(obj_no)
        self.hashed_bytes += length
        pos = 0
        while pos < length:
            index, at = divmod(offset + pos, CHUNK)
            piece = data[pos:pos + min(CHUNK - at, length - pos)]
            state = obj.chunks.get(index)
            if at == 0:
                state = Builder()
            elif not isinstance(state, Builder) or state.filled != at:
                state = Builder(at) if self._zero(obj, index, state) else UNKNOWN
            if state is not UNKNOWN:
                state.feed(piece)
                if state.nz == CHUNK:     # complete, no zero tail: keep only its hash
                    state = state.hash.digest()
            obj.chunks[index] = state
            pos += len(piece)

    @staticmethod
    def _zero(obj, index, state):
        return state is ZERO or (state is None
                                 and any(a <= index < b for a, b in obj.zero_ranges))

    def _free(self, obj_no, offset, length):
        obj = self._obj(obj_no)
        end = TO_THE_END if length >= TO_THE_END - offset else offset + length
        index, at = divmod(offset, CHUNK)
        if at:                                  # the first chunk, from inside it
            stop = min(CHUNK, end - index * CHUNK)
            state = obj.chunks.get(index)
            if isinstance(state, Builder) and state.filled == at:
                state.filled = stop
            elif isinstance(state, Kept):
                state.upto = min(state.upto, at)
            elif state is None and not self._zero(obj, index, state):
                obj.chunks[index] = Kept(at)
            elif state is not ZERO and state is not None:
                obj.chunks[index] = UNKNOWN
            index += 1
        last_full = end // CHUNK              # chunks [index, last_full) are whole holes
        if last_full - index > ZERO_RUN_LIMIT:
            obj.zero_ranges.append((index, last_full))
            for i in [i for i in obj.chunks if index <= i < last_full]:
                del obj.chunks[i]
        else:
            for i in range(index, last_full):
                obj.chunks[i] = ZERO
        tail = end - last_full * CHUNK
        if end != TO_THE_END and tail and last_full >= index:
            # a hole over [0, tail) of one more chunk
            state = obj.chunks.get(last_full)
            if state is not ZERO:
                builder = Builder()
                builder.filled = tail
                obj.chunks[last_full] = builder

    # -- answering ---------------------------------------------------------
    @property
    def touched(self):
        """Object numbers the stream has a record for (OBJECT, WRITE, FREE):
        every object whose dnode or data changed since the base. (An object
        FREEOBJECTS dropped was unlinked: its directory is touched.)"""
        return set(self.objects) | self._other_writes

    def resolve(self, number, size, base=None):
        """[raw sha256 | None] for each chunk of object ``number``, a file of
        ``size`` bytes in the received copy. ``base``: the previous copy's
        ``(params, size, [raw sha256...])`` of this object, for chunks the
        stream did not touch (incremental streams only)."""
        obj = self.objects.get(number)
        usable = bool(self.incremental and base is not None)
        if obj is not None and (obj.freed or (obj.params is not None and (
                not base or not base[0] or tuple(base[0]) != obj.params))):
            usable = False   # dropped, or perhaps reallocated: its old chunks are not ours

        def kept(index, need):
            if usable and index < len(base[2]) and chunk_length(base[1], index) == need:
                return base[2][index]
            return None

        out = []
        for index in range(chunk_count(size)):
            need = chunk_length(size, index)
            state = obj.chunks.get(index) if obj else None
            if isinstance(state, bytes):
                out.append(state if need == CHUNK else None)
            elif isinstance(state, Builder):
                out.append(state.digest(need))
            elif isinstance(state, Kept):
                out.append(kept(index, need) if need <= state.upto else None)
            elif state is ZERO:
                out.append(zero_chunk(need))
            elif state is UNKNOWN:
                out.append(None)
            elif obj is not None and any(a <= index < b for a, b in obj.zero_ranges):
                out.append(zero_chunk(need))
            else:
                out.append(kept(index, need))
        return out

    def params(self, number, base=None):
        """The object's (type, blksz, bonuslen): from this stream, else the previous copy's."""
        obj = self.objects.get(number)
        if obj is not None and obj.params is not None:
            return obj.params
        if obj is not None and obj.freed:
            return None
        return tuple(base[0]) if base and base[0] else None

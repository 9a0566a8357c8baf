"""The send-stream reader on streams built here record by record: what it
may vouch for, what it must leave to a read, and streams it must refuse."""

import hashlib
import struct

import pytest

from sdcadm.datasets import digest, zstream
from sdcadm.datasets.zstream import StreamHasher
from tests import filedigest

C = digest.CHUNK
FILE = zstream.PLAIN_FILE


def header(kind, body=b"", payload_len=0):
    return struct.pack("<II", kind, payload_len) + body.ljust(304, b"\0")


def begin(fromguid=0, versioninfo=1 | (0 << 2), magic=zstream.MAGIC, payload=b""):
    body = struct.pack("<QQQIIQQ", magic, versioninfo, 0, 2, 0, 1234, fromguid) + b"pool/ds@s"
    return header(zstream.BEGIN, body, len(payload)) + payload


def obj(number, blksz=C, bonuslen=264, typ=FILE):
    pad = -(-bonuslen // 8) * 8
    return header(zstream.OBJECT, struct.pack("<QIIII", number, typ, 17, blksz, bonuslen)) \
        + b"\x01" * pad


def write(number, offset, data, typ=FILE, compress=0):
    body = struct.pack("<QI4xQQ8xBBB", number, typ, offset, len(data), 7, 0, compress)
    return header(zstream.WRITE, body) + data


def free(number, offset, length=zstream.TO_THE_END):
    return header(zstream.FREE, struct.pack("<QQQ", number, offset, length))


def freeobjects(first, count):
    return header(zstream.FREEOBJECTS, struct.pack("<QQ", first, count))


def end():
    return header(zstream.END)


def read(stream, split=None):
    hasher = StreamHasher()
    for i in range(0, len(stream), split or len(stream) or 1):
        hasher.feed(stream[i:i + (split or len(stream))])
    hasher.finish()
    return hasher


def resolved(hasher, number, size, base=None):
    chunks = hasher.resolve(number, size, base)
    return None if None in chunks else digest.root(size, chunks)


def base_of(data, params=(FILE, C, 264)):
    return (params, len(data), [hashlib.sha256(data[i:i + C]).digest()
                                for i in range(0, len(data), C)])


def padded_blocks(number, data, blksz):
    """WRITE records of ``data`` in ``blksz`` blocks, the last one zero-padded."""
    out = b""
    for off in range(0, len(data), blksz):
        out += write(number, off, data[off:off + blksz].ljust(blksz, b"\0"))
    return out


@pytest.mark.parametrize("size,blksz", [(0, 512), (1, 512), (1000, 1024), (C, C), (C + 1, C),
                                        (3 * C + 17, C), (50_000, 8192), (300_001, 8192)])
@pytest.mark.parametrize("split", [None, 1, 313, 65536])
def test_a_full_stream_names_files_as_reading_them_does(size, blksz, split):
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    stream = (begin() + obj(5, blksz) + free(5, -(-size // blksz) * blksz)
              + padded_blocks(5, data, blksz) + end())
    hasher = read(stream, split)
    assert hasher.ok and hasher.incremental is False
    assert resolved(hasher, 5, size) == filedigest.of_bytes(data)


def test_trailing_zeros_inside_the_file_are_its_bytes():
    data = b"abc" + bytes(5000)
    hasher = read(begin() + obj(5, 8192) + write(5, 0, data.ljust(8192, b"\0")) + end())
    assert resolved(hasher, 5, len(data)) == filedigest.of_bytes(data)
    assert resolved(hasher, 5, 3) == filedigest.of_bytes(b"abc")


def test_non_zero_bytes_past_the_end_are_left_to_a_read():
    hasher = read(begin() + obj(5, 1024) + write(5, 0, b"x" * 1024) + end())
    assert hasher.resolve(5, 1000) == [None]
    assert resolved(hasher, 5, 1024) == filedigest.of_bytes(b"x" * 1024)


def test_holes_from_free_records():
    data = bytes(4 * C) + b"tail"
    stream = begin() + obj(7) + free(7, 0, 4 * C) + write(7, 4 * C, b"tail".ljust(C, b"\0")) \
        + free(7, 5 * C) + end()
    assert resolved(read(stream), 7, len(data)) == filedigest.of_bytes(data)


def test_a_long_hole_is_kept_as_a_range_and_a_later_write_wins():
    size = 1000 * C
    data = bytearray(size)
    data[500 * C:501 * C] = b"w" * C
    stream = begin() + obj(7) + free(7, 0) + write(7, 500 * C, b"w" * C) + end()
    hasher = read(stream)
    assert len(hasher.objects[7].chunks) == 1          # not a thousand ZERO entries
    assert resolved(hasher, 7, size) == filedigest.of_bytes(bytes(data))
    # ... and a hole made after the write zeroes it again.
    hasher = read(begin() + obj(7) + write(7, 500 * C, b"w" * C) + free(7, 0) + end())
    assert resolved(hasher, 7, size) == filedigest.of_bytes(bytes(size))


def test_an_incremental_stream_keeps_the_chunks_it_does_not_touch():
    old = bytes(range(256)) * (3 * C // 256)
    new = old[:C] + b"n" * C + old[2 * C:]
    stream = begin(fromguid=99) + obj(5) + free(5, 3 * C) + write(5, C, b"n" * C) + end()
    hasher = read(stream)
    assert hasher.incremental
    assert resolved(hasher, 5, len(new), base_of(old)) == filedigest.of_bytes(new)
    # Without the previous copy's hashes, the untouched chunks must be read.
    assert hasher.resolve(5, len(new)) [0] is None
    # An object the stream does not mention keeps all of them.
    assert resolved(hasher, 6, len(old), base_of(old)) == filedigest.of_bytes(old)


def test_a_full_stream_never_uses_a_previous_copy():
    old = b"o" * (2 * C)
    hasher = read(begin() + obj(5) + write(5, 0, b"n" * C) + end())
    assert hasher.resolve(5, 2 * C, base_of(old))[1] is None


def test_a_free_past_a_small_files_only_block_keeps_it():
    old = b"small file"
    stream = begin(fromguid=99) + obj(5, 512) + free(5, 512) + end()
    assert resolved(read(stream), 5, len(old), base_of(old, (FILE, 512, 264))) \
        == filedigest.of_bytes(old)


def test_a_free_inside_a_kept_chunk_before_the_end_is_left_to_a_read():
    old = b"k" * 5000
    stream = begin(fromguid=99) + obj(5, 512) + free(5, 1024) + end()
    assert read(stream).resolve(5, len(old), base_of(old, (FILE, 512, 264))) == [None]


def test_a_reallocated_or_dropped_object_keeps_nothing():
    old = b"o" * (2 * C)
    # another block size: zfs may have reallocated the object
    hasher = read(begin(fromguid=99) + obj(5, 8192) + end())
    assert hasher.resolve(5, len(old), base_of(old)) == [None, None]
    # dropped by FREEOBJECTS, then made again under the same number
    hasher = read(begin(fromguid=99) + freeobjects(5, 1) + obj(5) + write(5, 0, b"n" * C) + end())
    assert hasher.resolve(5, len(old), base_of(old))[1] is None
    # dropped by a FREEOBJECTS range seen before the object is mentioned
    hasher = read(begin(fromguid=99) + freeobjects(0, 1 << 40) + obj(5) + end())
    assert hasher.resolve(5, len(old), base_of(old)) == [None, None]


def test_writes_of_small_blocks_fill_a_chunk_in_order_only():
    data = bytes(range(256)) * (C // 256)
    in_order = b"".join(write(5, off, data[off:off + 8192]) for off in range(0, C, 8192))
    assert resolved(read(begin() + obj(5, 8192) + in_order + end()), 5, C) \
        == filedigest.of_bytes(data)
    out_of_order = write(5, 8192, data[8192:16384]) + write(5, 0, data[:8192])
    assert read(begin() + obj(5, 8192) + out_of_order + end()).resolve(5, C) == [None]


def test_directory_blocks_pass_unhashed():
    hasher = read(begin() + obj(4, 512, typ=20) + write(4, 0, b"z" * 512, typ=20) + end())
    assert hasher.ok and hasher.hashed_bytes == 0 and hasher.objects[4].chunks == {}


@pytest.mark.parametrize("stream,reason", [
    (b"", "no BEGIN"),
    (begin(magic=zstream.MAGIC << 8), "byte-order"),
    (begin(versioninfo=2), "compound"),
    (begin(versioninfo=1 | (1 << 2)), "features"),            # dedup
    (begin(versioninfo=1 | (1 << 16) << 2), "features"),      # embedded data
    (begin() + write(5, 0, b"x" * 512, compress=15), "compressed"),
    (begin() + header(9), "record type 9"),
    (begin() + header(zstream.WRITE, struct.pack("<QI4xQQ", 5, FILE, 0, 1 << 40)), "announces"),
    (begin() + obj(5)[:400], "inside a record"),
    (begin() + begin(), "more than one BEGIN"),
    (obj(5) + end(), "no BEGIN"),
])
def test_streams_it_cannot_vouch_for_are_given_up(stream, reason):
    hasher = read(stream + end())
    assert not hasher.ok and reason in hasher.reason
    assert hasher.objects == {}


def test_a_reader_bug_never_fails_the_transfer(monkeypatch):
    def broken(*args):
        raise ZeroDivisionError("bug")
    monkeypatch.setattr(StreamHasher, "_write", broken)
    hasher = StreamHasher()
    hasher.feed(begin() + obj(5) + write(5, 0, b"x" * C) + end())
    assert not hasher.ok and "reader error" in hasher.reason

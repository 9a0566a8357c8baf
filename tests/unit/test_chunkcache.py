"""chunks.json: what a sync reuses from the previous copy, and what a
damaged, foreign or stale file makes it do (read instead, never trust)."""

import hashlib
import json

import pytest

from sdcadm.datasets import chunkcache, digest
from tests import filedigest


def chunks_of(data):
    return [hashlib.sha256(data[i:i + digest.CHUNK]).digest()
            for i in range(0, len(data), digest.CHUNK)]


def test_saved_then_loaded_for_the_same_copy_only(tmp_path):
    data = b"a" * (digest.CHUNK + 5)
    chunkcache.save(tmp_path, "s1", {7: ((19, 131072, 264), len(data), chunks_of(data)),
                                     8: (None, 0, [])})
    loaded = chunkcache.load(tmp_path, "s1")
    assert {n: chunkcache.raw_chunks(e) for n, e in loaded.items()} == \
        {7: ((19, 131072, 264), len(data), chunks_of(data)), 8: (None, 0, [])}
    assert digest.root(len(data), chunkcache.raw_chunks(loaded[7])[2]) == filedigest.of_bytes(data)
    # saved again as loaded (untouched objects keep their hex): the same record
    before = (tmp_path / chunkcache.CACHE).read_text()
    chunkcache.save(tmp_path, "s1", loaded)
    assert (tmp_path / chunkcache.CACHE).read_text() == before
    assert chunkcache.load(tmp_path, "s2") is None           # another copy's
    assert chunkcache.load(tmp_path / "nosuch", "s1") is None


@pytest.mark.parametrize("content", [
    "{not json",
    "[]",
    json.dumps({"algorithm": "sha256", "snapshot": "s1", "objects": {}}),      # older digest
    json.dumps({"algorithm": digest.ALGORITHM, "snapshot": "s1"}),              # no objects
    json.dumps({"algorithm": digest.ALGORITHM, "snapshot": "s1",
                "objects": {"7": [None, 10, "ab"]}}),                           # too short
    json.dumps({"algorithm": digest.ALGORITHM, "snapshot": "s1",
                "objects": {"7": [None, 10, "zz" * 32]}}),                      # not hex
    json.dumps({"algorithm": digest.ALGORITHM, "snapshot": "s1",
                "objects": {"x": [None, 10, "00" * 32]}}),                      # not a number
    json.dumps({"algorithm": digest.ALGORITHM, "snapshot": "s1",
                "objects": {"7": [None, "10", "00" * 32]}}),                    # size not int
    json.dumps({"algorithm": digest.ALGORITHM, "snapshot": "s1",
                "objects": {"7": [None, 10]}}),                                 # missing part
])
def test_a_damaged_cache_is_ignored(tmp_path, content):
    (tmp_path / chunkcache.CACHE).write_text(content)
    assert chunkcache.load(tmp_path, "s1") is None


def test_the_resolver_reads_only_what_it_is_not_told(tmp_path):
    data = bytes(range(256)) * (3 * digest.CHUNK // 256) + b"end"
    (tmp_path / "f").write_bytes(data)
    st = (tmp_path / "f").stat()

    class Told:                    # says chunk 1, nothing else
        def resolve(self, number, size, base):
            return [None, chunks_of(data)[1], None, None]

        def params(self, number, base):
            return (19, 131072, 264)

    resolver = chunkcache.Resolver(str(tmp_path), Told(), None)
    job = resolver("f", st)
    assert callable(job)
    assert job() == filedigest.of_bytes(data)
    assert resolver.read_bytes == len(data) - digest.CHUNK
    assert resolver.objects[st.st_ino][0] == (19, 131072, 264)
    # No reader at all: everything is read.
    resolver = chunkcache.Resolver(str(tmp_path), None, None)
    assert resolver("f", st)() == filedigest.of_bytes(data)
    assert resolver.read_bytes == len(data)


def test_a_file_that_changed_size_is_not_named(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 10)
    st = (tmp_path / "f").stat()
    (tmp_path / "f").write_bytes(b"x" * 20)
    with pytest.raises(OSError, match="changed size"):
        chunkcache.Resolver(str(tmp_path), None, None)("f", st)()

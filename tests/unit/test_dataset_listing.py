"""listing.json and the partial relisting (datasets/listing.py), on a plain
directory: what is touched is listed again, what is not is trusted, and a
damaged or hostile listing is never used."""

import json
import os

import pytest

from sdcadm.datasets import digest, listing
from sdcadm.datasets.tree import scan_tree
from tests import filedigest


def test_saved_then_loaded_for_the_same_copy_only(tmp_path):
    entries = {"a": ["f", 5, 3, "0" * 64], "d": ["d", 6, 0, None], "d/l": ["l", 7, 0, "../a"]}
    listing.save(tmp_path, "s1", entries)
    assert listing.load(tmp_path, "s1") == entries
    assert listing.load(tmp_path, "s2") is None
    assert listing.load(tmp_path / "nosuch", "s1") is None


@pytest.mark.parametrize("entries", [
    {"../../etc/passwd": ["f", 5, 3, "0" * 64]},        # traversal
    {"/abs": ["f", 5, 3, "0" * 64]},
    {"a": ["q", 5, 3, "0" * 64]},                       # unknown kind
    {"a": ["f", "5", 3, "0" * 64]},                     # inode not a number
    {"a": ["f", 5, 3, None]},                           # file without digest
    {"a": ["f", 5, 3]},                                 # short
    ["a"],
])
def test_a_damaged_or_hostile_listing_is_ignored(tmp_path, entries):
    (tmp_path / listing.LISTING).write_text(json.dumps(
        {"algorithm": digest.ALGORITHM, "snapshot": "s1", "entries": entries}))
    assert listing.load(tmp_path, "s1") is None


def test_not_json_is_ignored(tmp_path):
    (tmp_path / listing.LISTING).write_text("{")
    assert listing.load(tmp_path, "s1") is None


def whole(root):
    entries = {}
    tree = scan_tree(root, entries=entries)
    return tree, entries


def test_only_touched_directories_and_files_are_looked_at(tmp_path):
    root = tmp_path / "copy"

    def read_all(rel, st):
        return digest.file_digest(os.path.join(root, rel))

    (root / "d").mkdir(parents=True)
    (root / "d" / "keep").write_bytes(b"k")
    (root / "d" / "change").write_bytes(b"c")
    (root / "e").mkdir()
    (root / "e" / "gone").write_bytes(b"g")
    _, base = whole(root)
    (root / "d" / "change").write_bytes(b"changed")
    (root / "e" / "gone").unlink()
    (root / "e" / "new").write_bytes(b"n")
    (root / "e" / "sub").mkdir()
    (root / "e" / "sub" / "deep").write_bytes(b"deep")
    os.symlink("../d/keep", root / "e" / "link")
    touched = {os.stat(root / "d" / "change").st_ino, os.stat(root / "e").st_ino}
    tree, entries = listing.update(str(root), base, touched, read_all)
    walked = scan_tree(root)
    assert tree.files == walked.files and tree.links == walked.links
    assert tree.files["d/change"]["sha256"] == filedigest.of_bytes(b"changed")
    assert "e/gone" not in entries and entries["e/sub/deep"][0] == "f"
    # What was not touched is trusted as it was: that is the bargain.
    (root / "d" / "keep").write_bytes(b"K")
    tree, _ = listing.update(str(root), entries, set(), read_all)
    assert tree.files["d/keep"]["sha256"] == filedigest.of_bytes(b"k")

"""The one tree walker over real files: what it lists, what it refuses, and
which files it reads again."""

import os

import pytest

from sdcadm.datasets.tree import (
    check_tree,
    hash_tree,
    scan_tree,
    symlink_escapes,
    verify_tree,
)
from sdcadm.errors import DatasetError
from sdcadm.fsutil import sha256_bytes, sha256_file
from tests import filedigest


@pytest.fixture
def copy(tmp_path):
    root = tmp_path / "copy"
    (root / "sub").mkdir(parents=True)
    (root / "canary").write_bytes(b"hello")
    (root / "sub" / "deep").write_bytes(b"x" * 1000)
    (root / "inside-link").symlink_to("sub/deep")
    return root


def test_files_links_and_sizes(copy):
    tree = scan_tree(copy)
    assert tree.files == {"canary": {"sha256": filedigest.of_bytes(b"hello"), "bytes": 5},
                          "sub/deep": {"sha256": filedigest.of_bytes(b"x" * 1000), "bytes": 1000}}
    assert tree.links == {"inside-link": "sub/deep"}
    assert tree.problems == [] and tree.bytes == 1005 and tree.hashed_bytes == 1005
    assert tree.digests["inside-link"] == sha256_bytes(b"sub/deep")
    assert list(tree.digests) == ["canary", "inside-link", "sub/deep"]


@pytest.mark.parametrize("rel,target", [
    ("abs", "/etc/passwd"),
    ("up", "../outside"),
    ("sub/up2", "../../outside"),
])
def test_links_leaving_the_copy_are_problems(copy, rel, target):
    (copy / rel).symlink_to(target)
    assert scan_tree(copy).problems == [f"{rel}: link escaping the copy -> {target}"]
    with pytest.raises(DatasetError, match="symlinks point outside it"):
        check_tree(copy)


def test_a_link_escaping_through_another_link_is_caught(copy):
    (copy / "sub" / "parent").symlink_to("..")
    (copy / "hop").symlink_to("sub/parent/..")
    assert symlink_escapes(copy, "hop", "sub/parent/..")
    assert not symlink_escapes(copy, "sub/parent", "..")
    assert [p for p in scan_tree(copy).problems if p.startswith("hop:")]


def test_special_files_are_problems_not_data(copy):
    os.mkfifo(copy / "fifo")
    tree = scan_tree(copy)
    assert tree.problems == ["fifo: not a regular file, directory or symlink"]
    assert "fifo" not in tree.files


def test_unchanged_files_are_not_read_again(copy):
    first = scan_tree(copy)
    again = scan_tree(copy, first.cache)
    assert again.files == first.files and again.hashed_bytes == 0
    (copy / "canary").write_bytes(b"HELLO!")
    changed = scan_tree(copy, again.cache)
    assert changed.hashed_bytes == 6
    assert changed.files["canary"]["sha256"] == filedigest.of_bytes(b"HELLO!")


def test_a_cache_in_another_format_is_not_trusted(copy):
    st = os.stat(copy / "canary")
    old = {f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}": "0" * 64}   # the former key format
    assert scan_tree(copy, old).files["canary"]["sha256"] == filedigest.of_bytes(b"hello")


def test_a_cache_of_whole_file_sha256_is_not_trusted(copy):
    """Caches written before the hash list hold whole-file sha256 under a
    key without the digest's name: never taken for the new digest."""
    st = os.stat(copy / "canary")
    old = {"canary": [st.st_ino, st.st_size, st.st_mtime_ns, sha256_bytes(b"hello")]}
    tree = scan_tree(copy, old)
    assert tree.files["canary"]["sha256"] == filedigest.of_bytes(b"hello")
    assert tree.hashed_bytes == 5 + 1000


def test_a_manifest_of_whole_file_sha256_is_checked_with_it(copy):
    tree = scan_tree(copy, algorithm="sha256")
    assert tree.files["canary"]["sha256"] == sha256_bytes(b"hello")
    with pytest.raises(ValueError, match="unknown file digest"):
        scan_tree(copy, algorithm="md5")


def test_known_digests_of_the_backend_are_trusted(copy):
    known = {"canary": "a" * 64, "sub/deep": {"sha256": "b" * 64}, "nosuch": "c" * 64}
    tree = scan_tree(copy, known=known)
    assert tree.files["canary"]["sha256"] == "a" * 64
    assert tree.files["sub/deep"]["sha256"] == "b" * 64 and tree.hashed_bytes == 0


def test_hash_tree_and_verify_tree_agree(copy):
    digests = hash_tree(copy).digests
    assert verify_tree(copy, digests) == []
    (copy / "canary").write_bytes(b"tampered")
    (copy / "planted").write_bytes(b"?")
    (copy / "sub" / "deep").unlink()
    assert verify_tree(copy, digests) == ["sha256 differs: canary", "unexpected: planted",
                                          "missing: sub/deep"]
    with pytest.raises(DatasetError, match="unsafe path"):
        verify_tree(copy, {"../x": "0" * 64})


def test_sha256_file_can_refuse_symlinks(copy):
    assert sha256_file(copy / "inside-link") == sha256_bytes(b"x" * 1000)
    with pytest.raises(OSError):
        sha256_file(copy / "inside-link", follow_symlinks=False)


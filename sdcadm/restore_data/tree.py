"""Listing a dataset copy: every regular file with its sha256, every symlink
with its target, and whatever makes the copy unsafe to restore.

Nothing is followed: a symlink is recorded, never read through, and one that
points outside the copy (absolute, or climbing out with ``..``) is a problem,
as are device files, FIFOs and sockets. The puller refuses a copy with
problems; verify reports them.
"""

import os
import stat
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from sdcadm.restore_data.files import sha256_nofollow


@dataclass
class Tree:
    files: dict = field(default_factory=dict)     # rel -> {"sha256", "bytes"}
    links: dict = field(default_factory=dict)     # rel -> target
    problems: list = field(default_factory=list)  # human-readable, one per bad entry
    keys: set = field(default_factory=set)        # cache keys of the files seen

    @property
    def bytes(self):
        return sum(f["bytes"] for f in self.files.values())


def link_escapes(rel, target, root=None):
    """True if symlink ``rel`` -> ``target`` points outside the tree it is in:
    absolute, climbing out with ``..``, or (given ``root``) leaving it through
    other links (``a/b -> ..`` then ``c -> a/b/..``)."""
    target = PurePosixPath(target)
    if target.is_absolute():
        return True
    depth = 0
    for part in (PurePosixPath(rel).parent / target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    if root is None:
        return False
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, rel))
    return real != real_root and not real.startswith(real_root + os.sep)


def cache_key(st):
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def scan_tree(root, cache=None, known=None):
    """A Tree of everything under ``root``. ``cache``: {cache_key: sha256}
    (updated in place) so unchanged files (hard links of the previous copy)
    are not hashed again. ``known``: {relative path: sha256} the dataset
    backend computed over this very copy (trusted, not hashed again)."""
    tree = Tree()
    cache = {} if cache is None else cache
    known = known or {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, rel_dir) if rel_dir else root),
                             key=lambda e: e.name)
        except OSError as e:
            tree.problems.append(f"{rel_dir or '.'}: cannot be listed: {e.strerror}")
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                tree.problems.append(f"{rel}: cannot be read: {e.strerror}")
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry.path)
                tree.links[rel] = target
                if link_escapes(rel, target, root):
                    tree.problems.append(f"{rel}: link escaping the copy -> {target}")
            elif stat.S_ISREG(st.st_mode):
                key = cache_key(st)
                digest = cache.get(key) or _digest(known.get(rel))
                if digest is None:
                    try:
                        digest, _ = sha256_nofollow(entry.path)
                    except OSError as e:
                        tree.problems.append(f"{rel}: cannot be read: {e.strerror}")
                        continue
                cache[key] = digest
                tree.keys.add(key)
                tree.files[rel] = {"sha256": digest, "bytes": st.st_size}
            else:
                tree.problems.append(f"{rel}: not a regular file, directory or symlink")
    return tree


def _digest(value):
    """A sha256 from a backend's file map ({rel: sha256} or {rel: {"sha256": ...}})."""
    if isinstance(value, dict):
        value = value.get("sha256")
    return value if isinstance(value, str) and len(value) == 64 else None

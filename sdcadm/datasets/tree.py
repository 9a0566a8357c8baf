"""Walking, hashing and checking a copy's directory tree: the one walker of
sdcadm (the dataset backends, the restore-data puller and verify use it).

Nothing here follows a symlink: a copy is data from another server and may be
hostile. ``scan_tree`` lists a tree -- every regular file with its digest
(``digest.py``; the manifest field is still called ``sha256``) and size, every symlink with its target -- and whatever makes it unsafe to
restore (a symlink leading outside it, a device file, a FIFO, a socket, an
entry that cannot be read) as a problem, never raising for one.
``check_tree`` refuses (DatasetError) a tree with an escaping symlink;
``verify_tree`` compares a tree with the digests a backend recorded.
"""

import os
import posixpath
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sdcadm.datasets import digest as file_digest
from sdcadm.errors import DatasetError
from sdcadm.fsutil import sha256_bytes


@dataclass
class Tree:
    files: dict = field(default_factory=dict)     # rel -> {"sha256", "bytes"} (regular files)
    links: dict = field(default_factory=dict)     # rel -> target
    problems: list = field(default_factory=list)  # human-readable, one per bad entry
    unreadable: list = field(default_factory=list)  # rel of entries that could not be read
    cache: dict = field(default_factory=dict)     # rel -> [*key, sha256], for the next scan
    hashed_bytes: int = 0                         # bytes actually read (not reused)

    @property
    def bytes(self):
        return sum(f["bytes"] for f in self.files.values())

    @property
    def digests(self):
        """{rel: sha256} of every file and symlink (a symlink by the sha256 of its
        target), sorted: what a backend reports and ``verify_tree`` checks."""
        out = {rel: f["sha256"] for rel, f in self.files.items()}
        out.update((rel, sha256_bytes(os.fsencode(t))) for rel, t in self.links.items())
        return dict(sorted(out.items()))


def key_inode(st):
    """Reuse key for a copy made with hard links (dir backend): same inode
    and size means the very same file as in the previous copy. Keys end
    with the digest's name: a cache of another digest never matches."""
    return [st.st_ino, st.st_size, st.st_mtime_ns, file_digest.ALGORITHM]


def walk(root, on_error=None):
    """Yield ``(relative path, os.stat_result)`` for every entry under
    ``root`` (not root itself), sorted, never following symlinks. A directory
    that cannot be listed or an entry that cannot be stat'ed raises OSError,
    or, given ``on_error``, is passed to ``on_error(rel, error, verb)`` (verb:
    "listed" or "read") and skipped."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if on_error is None:
                raise
            on_error(rel_dir or ".", e, "listed")
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                if on_error is None:
                    raise
                on_error(rel, e, "read")
                continue
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def scan_tree(root, previous=None, *, known=None, workers=None,
              algorithm=file_digest.ALGORITHM, resolve=None, entries=None):
    """A Tree of everything under ``root``; problems are listed, not raised.
    Files are named by their digest under ``algorithm`` (``digest.py``);
    ``previous`` and ``known`` only serve the default one.

    ``previous``: the ``cache`` of an earlier Tree; a file whose
    ``key_inode`` is unchanged keeps its hash without being read. ``known``:
    {rel: sha256} a dataset backend computed over this very copy (trusted,
    not re-read). Files are read by ``workers`` threads (default: up
    to 4, one per CPU): hashlib and reads release the GIL, and a FUSE
    filesystem serves parallel reads faster. ``resolve(rel, stat)``: a
    backend that knows the digest without reading the whole file returns
    it, or a callable that computes it (run on a worker), or None (read).
    ``entries``: a dict filled with every entry's ``[kind, inode, size,
    value]`` (``listing.py``'s format), so that no second walk is needed."""
    tree = Tree()
    previous, known = previous or {}, known or {}
    if algorithm != file_digest.ALGORITHM:
        previous, known = {}, {}

    def unreadable(rel, e, verb):
        tree.unreadable.append(rel)
        tree.problems.append(f"{rel}: cannot be {verb}: {e.strerror}")

    todo, keys, jobs = [], {}, {}
    for rel, st in walk(root, unreadable):
        if stat.S_ISDIR(st.st_mode):
            if entries is not None:
                entries[rel] = ["d", st.st_ino, 0, None]
            continue
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(os.path.join(root, rel))
            tree.links[rel] = target
            if entries is not None:
                entries[rel] = ["l", st.st_ino, 0, target]
            if symlink_escapes(root, rel, target):
                tree.problems.append(f"{rel}: link escaping the copy -> {target}")
            continue
        if not stat.S_ISREG(st.st_mode):
            problem = f"{rel}: not a regular file, directory or symlink"
            tree.problems.append(problem)
            if entries is not None:
                entries[rel] = ["x", st.st_ino, 0, problem]
            continue
        if entries is not None:
            entries[rel] = ["f", st.st_ino, st.st_size, None]
        k = key_inode(st)
        old = previous.get(rel)
        digest = old[-1] if isinstance(old, list) and old[:-1] == k else _digest(known.get(rel))
        if digest is None and resolve is not None:
            digest = resolve(rel, st)
            if callable(digest):
                jobs[rel], digest = digest, None
        tree.files[rel] = {"sha256": digest, "bytes": st.st_size}
        if digest is None:
            todo.append(rel)
        keys[rel] = k
    _hash_files(root, tree, todo, workers or min(4, os.cpu_count() or 1), algorithm, jobs)
    tree.files = dict(sorted(tree.files.items()))
    if entries is not None:
        for rel in [r for r, e in entries.items() if e[0] == "f"]:
            if rel in tree.files:
                entries[rel][3] = tree.files[rel]["sha256"]
            else:                 # could not be read: not part of the copy's listing
                del entries[rel]
    tree.cache = {rel: [*k, tree.files[rel]["sha256"]] for rel, k in keys.items()
                  if rel in tree.files}
    return tree


def _hash_files(root, tree, todo, workers, algorithm, jobs):
    def one(rel):
        try:
            if rel in jobs:
                return jobs[rel]()
            return file_digest.file_digest(os.path.join(root, rel), algorithm)
        except OSError as e:      # replaced or made unreadable while we looked
            return e

    if not todo:
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rel, digest in zip(todo, pool.map(one, todo)):
            if isinstance(digest, OSError):
                del tree.files[rel]
                tree.unreadable.append(rel)
                tree.problems.append(f"{rel}: cannot be read: {digest.strerror}")
            else:
                tree.files[rel]["sha256"] = digest
                tree.hashed_bytes += tree.files[rel]["bytes"]


def _digest(value):
    """A sha256 from a backend's file map ({rel: sha256} or {rel: {"sha256": ...}})."""
    if isinstance(value, dict):
        value = value.get("sha256")
    return value if isinstance(value, str) and len(value) == 64 else None


def hash_tree(root, previous=None, *, workers=None, resolve=None, entries=None):
    """``scan_tree`` for a dataset backend that just made the copy: a tree it
    cannot read is an error (OSError), not a problem to report."""
    tree = scan_tree(root, previous, workers=workers, resolve=resolve, entries=entries)
    if tree.unreadable:
        raise OSError(f"cannot hash the copy in {root}: "
                      + "; ".join(p for p in tree.problems if ": cannot be " in p))
    return tree


def symlink_escapes(root, rel, target):
    """True if the symlink ``rel`` (-> ``target``) under ``root`` leads
    outside ``root``: absolute, ``..`` past the top, or through other links
    (``a/b -> ..`` then ``c -> a/b/..``)."""
    if os.path.isabs(target):
        return True
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if lexical == ".." or lexical.startswith("../"):
        return True
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, rel))
    return real != real_root and not real.startswith(real_root + os.sep)


def unsafe_entries(root, limit=10):
    """Up to ``limit`` descriptions of entries that would let a reader leave
    ``root`` (escaping symlinks)."""
    found = []
    for rel, st in walk(root):
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(os.path.join(root, rel))
            if symlink_escapes(root, rel, target):
                found.append(f"{rel} -> {target}")
                if len(found) >= limit:
                    break
    return found


def check_tree(root):
    """DatasetError if anything under ``root`` points outside it."""
    if os.path.islink(root) or not os.path.isdir(root):
        raise DatasetError(f"{root} is not a directory")
    bad = unsafe_entries(root)
    if bad:
        raise DatasetError(
            f"refusing to use the copy in {root}: symlinks point outside it: " + ", ".join(bad),
            hint="the source dataset holds links to files outside itself; fix them on the "
                 "source and sync again")


def check_relative(rel):
    """DatasetError unless ``rel`` is a plain relative path (no ``..``)."""
    parts = rel.split("/") if isinstance(rel, str) else None
    if (not parts or rel.startswith("/") or "\0" in rel
            or any(p in ("", ".", "..") for p in parts)):
        raise DatasetError(f"unsafe path {rel!r} in a manifest",
                           hint="the manifest was tampered with or is corrupt; sync again")
    return rel


def verify_tree(root, expected):
    """Problems (list of str, empty when all is well) comparing ``root``
    with ``expected`` ({relative path: sha256}). Unsafe paths or symlinks
    raise DatasetError."""
    for rel in expected:
        check_relative(rel)
    check_tree(root)
    actual = hash_tree(root).digests
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append(f"missing: {rel}")
        elif rel not in expected:
            problems.append(f"unexpected: {rel}")
        elif actual[rel] != expected[rel]:
            problems.append(f"sha256 differs: {rel}")
    return problems

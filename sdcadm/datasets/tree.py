"""Walking, hashing, checking and hard-link-cloning a copy's directory tree.

Shared by both backends. Nothing here follows a symlink: a copy is data from
another server and may be hostile. ``hash_tree`` records a symlink by the
sha256 of its target string; ``check_tree`` refuses (DatasetError) a symlink
that points outside the copy, and ``clone``/``verify`` call it first.
"""

import ctypes
import errno
import hashlib
import logging
import os
import posixpath
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sdcadm.errors import DatasetError

log = logging.getLogger(__name__)

_BLOCK = 1 << 20


@dataclass
class TreeHash:
    files: dict = field(default_factory=dict)   # relative path -> sha256 hex
    total_bytes: int = 0                        # sum of regular files' sizes
    cache: dict = field(default_factory=dict)   # relative path -> [*key, sha256]
    hashed_bytes: int = 0                       # bytes actually read (not reused)


def key_inode(st):
    """Reuse key for a copy made with hard links (dir backend): same inode
    and size means the very same file as in the previous copy."""
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def key_attrs(st):
    """Reuse key for a dataset changed in place (zfs backend): zfs keeps a
    file's object number and replicates mtime and ctime with the data."""
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def walk(root):
    """Yield ``(relative path, os.stat_result)`` for every entry under
    ``root`` (not root itself), sorted, never following symlinks."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            st = entry.stat(follow_symlinks=False)
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def sha256_file(path):
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def hash_tree(root, previous=None, key=key_inode, reusable=None, workers=None):
    """sha256 of every regular file and symlink under ``root``.

    ``previous``: a ``cache`` from an earlier TreeHash; a file whose ``key``
    is unchanged keeps its hash without being read. ``reusable(stat)``: whether
    a file's entry may go into the new cache at all (default: all) -- with
    timestamps in whole seconds (zfs-fuse) a file written again in the same
    second keeps its key, so only files older than the copy are trusted.
    Files are read by ``workers`` threads (default: up to 4, one per CPU):
    hashlib and reads release the GIL, and a FUSE filesystem serves
    parallel reads faster."""
    previous = previous or {}
    result = TreeHash()
    todo = []
    for rel, st in walk(root):
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(os.path.join(root, rel))
            result.files[rel] = hashlib.sha256(os.fsencode(target)).hexdigest()
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        k = key(st)
        result.total_bytes += st.st_size
        old = previous.get(rel)
        if isinstance(old, list) and old[:-1] == k:
            result.files[rel] = old[-1]
        else:
            todo.append(rel)
            result.hashed_bytes += st.st_size
        if reusable is None or reusable(st):
            result.cache[rel] = k
    workers = workers or min(4, os.cpu_count() or 1)
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            digests = pool.map(lambda rel: sha256_file(os.path.join(root, rel)), todo)
            result.files.update(zip(todo, digests))
    result.files = dict(sorted(result.files.items()))
    result.cache = {rel: [*k, result.files[rel]] for rel, k in result.cache.items()}
    return result


def symlink_escapes(root, rel, target):
    """True if the symlink ``rel`` (-> ``target``) under ``root`` leads
    outside ``root``: absolute, ``..`` past the top, or through other links."""
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


def verify_tree(root, expected, key=key_inode):
    """Problems (list of str, empty when all is well) comparing ``root``
    with ``expected`` ({relative path: sha256}). Unsafe paths or symlinks
    raise DatasetError."""
    for rel in expected:
        check_relative(rel)
    check_tree(root)
    actual = hash_tree(root, key=key).files
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append(f"missing: {rel}")
        elif rel not in expected:
            problems.append(f"unexpected: {rel}")
        elif actual[rel] != expected[rel]:
            problems.append(f"sha256 differs: {rel}")
    return problems


def _copy_dir_meta(src_st, dst):
    try:
        os.chown(dst, src_st.st_uid, src_st.st_gid, follow_symlinks=False)
    except PermissionError:
        pass
    os.chmod(dst, stat.S_IMODE(src_st.st_mode))
    os.utime(dst, ns=(src_st.st_atime_ns, src_st.st_mtime_ns))


def link_tree(src, dst):
    """Hard-link tree of ``src`` at ``dst`` (which must not exist): zero copy
    where ``src`` and ``dst`` share a filesystem, a real copy otherwise.
    Built in ``dst.tmp-<pid>`` and renamed, so ``dst`` appears complete."""
    check_tree(src)
    if os.path.lexists(dst):
        raise DatasetError(f"{dst} already exists", hint="remove it (destroy_clone) first")
    tmp = f"{dst}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    dirs = [("", os.stat(src))]
    copied = 0
    try:
        for rel, st in walk(src):
            s, d = os.path.join(src, rel), os.path.join(tmp, rel)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(d)
                dirs.append((rel, st))
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
                if os.geteuid() == 0:
                    os.lchown(d, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                try:
                    os.link(s, d, follow_symlinks=False)
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                    shutil.copy2(s, d, follow_symlinks=False)
                    copied += 1
            # fifos, sockets and devices are not data: left out
        for rel, st in reversed(dirs):
            _copy_dir_meta(st, os.path.join(tmp, rel) if rel else tmp)
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if copied:
        log.warning("clone %s -> %s: %d files copied (different filesystems)", src, dst, copied)
    return dst


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path):
    """Flush the whole filesystem holding ``path`` (one call instead of one
    fsync per file of a fresh copy); os.sync() where syncfs is missing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()

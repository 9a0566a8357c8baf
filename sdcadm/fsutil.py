"""Crash-safe file primitives shared by every part that writes state.

A file is written to a temporary name in its directory, fsync'd, renamed over
the old one and the directory fsync'd: a crash (kill -9, power cut) leaves the
old or the new content, never a mix. Also: the one sha256 of a file or of
bytes, and finding system programs.
"""

import ctypes
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


_BLOCK = 1 << 20


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, *, follow_symlinks=True):
    """Hex sha256 of a file's content. ``follow_symlinks=False`` refuses (OSError
    ELOOP) to read through a symlink: for files that come from another server
    (restore data, dataset copies), which may be hostile."""
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, flags), "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_relative(path):
    """True if ``path`` is a relative POSIX path that stays inside its root
    (no absolute path, no ``..`` component, no empty or NUL name)."""
    if not isinstance(path, str) or not path or "\0" in path or path.startswith("/"):
        return False
    return not any(part in ("", ".", "..") for part in path.split("/"))


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_new(root, old_inodes=(), workers=4):
    """Make a fresh tree under ``root`` durable without flushing the whole
    filesystem: fsync every regular file whose inode is not in ``old_inodes``
    (a hard link to an inode of an earlier, already durable copy only needs
    its directory entry), then every directory, deepest first, ``root`` last.
    Files are fsync'd by ``workers`` threads (the filesystem batches their
    journal commits). Returns the number of files fsync'd."""
    from concurrent.futures import ThreadPoolExecutor

    old = set(old_inodes)
    files, dirs, stack = [], [], [root]
    while stack:
        top = stack.pop()
        dirs.append(top)
        with os.scandir(top) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and entry.inode() not in old:
                    files.append(entry.path)

    def flush(path, flags=os.O_RDONLY):
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    if files:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(files)))) as pool:
            list(pool.map(flush, files))
    for path in reversed(dirs):
        flush(path, os.O_RDONLY | os.O_DIRECTORY)
    return len(files)


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


def canonical_json(doc):
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_bytes_atomic(path, data):
    """Write ``data`` at ``path`` atomically (temp, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path, doc):
    write_bytes_atomic(path, canonical_json(doc).encode())


def write_cache_atomic(path, doc):
    """``write_json_atomic`` for large machine-read caches: compact, unsorted
    JSON, which Python encodes in C (an indent makes it pure Python: 0.2 s
    for the hash caches of a 1 GiB dataset)."""
    write_bytes_atomic(path, json.dumps(doc, separators=(",", ":")).encode())


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def copy_atomic(src, dest, chunk=1 << 20):
    """Copy ``src`` to ``dest`` atomically; return (sha256, bytes) of what was written."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            for block in iter(lambda: inp.read(chunk), b""):
                digest.update(block)
                size += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(dest.parent)
    return digest.hexdigest(), size


def which(name):
    """Absolute path of program ``name``, also looked for in the sbin
    directories (often not on a normal user's PATH); None when missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    return os.path.abspath(path) if path else None


# How to install a program sdcadm runs, for the hint when it is missing.
INSTALL_HINTS = {
    "ssh": "apt-get install openssh-client",
    "ssh-keygen": "apt-get install openssh-client",
    "sshd": "apt-get install openssh-server",
    "rsync": "apt-get install rsync",
    "zfs": "apt-get install zfs-fuse (or install OpenZFS)",
    "zpool": "apt-get install zfs-fuse (or install OpenZFS)",
    "zfs-fuse": "apt-get install zfs-fuse",
}


def find_program(name, error, needed_for=None):
    """Absolute path of program ``name`` (as ``which``). When it is missing,
    raises ``error`` -- the caller's kind of SdcadmError, so that the handlers
    around the caller (a sync that records a failed dataset copy, say) catch it
    like any other failure of theirs -- saying what to install."""
    path = which(name)
    if not path:
        why = f"; {needed_for} needs it" if needed_for else ""
        raise error(f"{name} is not installed{why}",
                    hint=INSTALL_HINTS.get(name, f"install {name} and put it on PATH"))
    return path

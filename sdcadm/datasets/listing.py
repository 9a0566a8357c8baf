"""A received zfs copy's listing, brought up to date from what the stream touched.

Naming a copy's files needs its listing (every path, its kind, size and
digest). Walking it is a ``stat`` per entry through the filesystem -- on
zfs-fuse the largest cost of a sync that changed little. An incremental
stream says which objects changed: a directory whose entries changed has
its ZAP blocks (WRITE records) or at least its dnode (OBJECT) in the
stream, and a file whose size or data changed has its dnode there. So,
given the listing of the stream's base copy (``listing.json``, kept by the
previous sync; a full walk fills one: ``tree.scan_tree(entries=)``) and the set of objects the stream touched, only those
directories are listed again (``scandir``, names and inode numbers), only
new entries and touched files are ``stat``-ed, and only those files are
named again (``resolve``: ``chunkcache.Resolver``). Everything else is the
base's.

``listing.json``::

    {"algorithm", "snapshot", "entries": {rel: [kind, inode, size, value]}}

kind ``d`` (directory), ``f`` (file; value: its digest), ``l`` (symlink;
value: its target), ``x`` (anything else; value: the problem). Symlinks are
checked for escaping the copy every time (a change elsewhere can make an
unchanged link lead out). Whatever cannot be read raises OSError, as
``tree.hash_tree`` does: the copy was just made.
"""

import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from sdcadm.datasets import chunkcache, tree

log = logging.getLogger(__name__)

LISTING = "listing.json"
KINDS = ("d", "f", "l", "x")


def kind_of(mode):
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISLNK(mode):
        return "l"
    return "x"


def load(replica_dir, snapshot):
    """The entries recorded for copy ``snapshot``, or None."""
    def parse(data):
        entries = data["entries"]
        for rel, (kind, ino, size, value) in entries.items():
            tree.check_relative(rel)
            if (kind not in KINDS or not isinstance(ino, int) or not isinstance(size, int)
                    or (kind != "d" and not isinstance(value, str))):
                raise ValueError(f"bad entry for {rel!r}")
        return entries
    return chunkcache.load_record(os.path.join(replica_dir, LISTING), snapshot, parse,
                                  "the copy is walked instead")


def save(replica_dir, snapshot, entries):
    chunkcache.save_record(os.path.join(replica_dir, LISTING), snapshot, {"entries": entries})


def as_tree(entries):
    """The Tree (files, links) ``entries`` describe, as recorded: nothing read."""
    out = tree.Tree()
    for rel, (kind, _ino, size, value) in entries.items():
        if kind == "f":
            out.files[rel] = {"sha256": value, "bytes": size}
        elif kind == "l":
            out.links[rel] = value
    return out


def _dirent_kind(entry):
    """An entry's kind from its directory entry (no stat unless the
    filesystem does not say)."""
    if entry.is_symlink():
        return "l"
    if entry.is_dir(follow_symlinks=False):
        return "d"
    if entry.is_file(follow_symlinks=False):
        return "f"
    return "x"


def _parent(rel):
    return rel.rpartition("/")[0]


def update(root, base, touched, resolve, workers=None):
    """(Tree, entries) of the copy at ``root``, from ``base`` (the base
    copy's entries) and ``touched`` (object numbers the stream changed)."""
    entries = dict(base)
    children = {"": set()}
    for rel, (kind, *_rest) in entries.items():
        children.setdefault(_parent(rel), set()).add(rel)
        if kind == "d":
            children.setdefault(rel, set())
    fresh = {}      # rel -> stat of entries listed or re-stat'ed in this pass

    def drop(rel):
        for child in list(children.pop(rel, ())):
            drop(child)
        entries.pop(rel, None)
        children.get(_parent(rel), set()).discard(rel)

    def add(rel, st, whole=True):
        kind = kind_of(st.st_mode)
        value = (os.readlink(os.path.join(root, rel)) if kind == "l"
                 else f"{rel}: not a regular file, directory or symlink" if kind == "x" else None)
        entries[rel] = [kind, st.st_ino, st.st_size if kind == "f" else 0, value]
        children.setdefault(_parent(rel), set()).add(rel)
        fresh[rel] = st
        if kind == "d":
            children.setdefault(rel, set())
            if whole:        # a new directory: all of it (walk yields every level)
                for sub, sub_st in tree.walk(os.path.join(root, rel)):
                    add(f"{rel}/{sub}", sub_st, whole=False)

    root_ino = os.lstat(root).st_ino
    dirs = [""] if root_ino in touched else []
    dirs += sorted((rel for rel, e in entries.items() if e[0] == "d" and e[1] in touched),
                   key=lambda r: r.count("/"))
    for rel_dir in dirs:
        if rel_dir and rel_dir not in entries:
            continue             # dropped with its parent, or listed whole already
        path = os.path.join(root, rel_dir) if rel_dir else root
        with os.scandir(path) as it:
            listed = {e.name: e for e in it}
        known = {r.rpartition("/")[2]: r for r in children.get(rel_dir, ())}
        for name, rel in known.items():
            if name not in listed:
                drop(rel)
        for name, entry in sorted(listed.items()):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            old = entries.get(rel)
            if old is not None and old[1] == entry.inode() and old[0] == _dirent_kind(entry):
                continue         # the same object: refreshed below if touched
            drop(rel)
            add(rel, entry.stat(follow_symlinks=False))
    for rel, (kind, ino, *_rest) in entries.items():
        if kind == "f" and ino in touched and rel not in fresh:
            fresh[rel] = os.lstat(os.path.join(root, rel))
    return _tree(root, entries, fresh, resolve, workers), entries


def _tree(root, entries, fresh, resolve, workers):
    out = tree.Tree()
    jobs = {}
    for rel, (kind, ino, size, value) in sorted(entries.items()):
        if kind == "f":
            st = fresh.get(rel)
            if st is not None:
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(0, f"{rel} changed kind while it was listed")
                value = resolve(rel, st)
                entries[rel][2] = size = st.st_size
                if callable(value):
                    jobs[rel], value = value, None
            out.files[rel] = {"sha256": value, "bytes": size}
        elif kind == "l":
            out.links[rel] = value
            if tree.symlink_escapes(root, rel, value):
                out.problems.append(f"{rel}: link escaping the copy -> {value}")
        elif kind == "x":
            out.problems.append(value)
    if jobs:
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            for rel, value in zip(jobs, pool.map(lambda r: jobs[r](), jobs)):
                out.files[rel]["sha256"] = value
                out.hashed_bytes += out.files[rel]["bytes"]
    for rel in fresh:
        if rel in out.files:
            entries[rel][3] = out.files[rel]["sha256"]
    return out

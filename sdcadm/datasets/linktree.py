"""Hard-link clones of a copy's tree (the dir backend's zero-copy restore)."""

import errno
import logging
import os
import shutil
import stat

from sdcadm.datasets.tree import check_tree, walk
from sdcadm.errors import DatasetError

log = logging.getLogger(__name__)


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

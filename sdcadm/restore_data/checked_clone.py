"""A clone of a dataset copy that is handed over only once every file of it
matches the manifest (for ``RestoreData.clone_dataset`` and ``verify_copy``).

The clone is made where the instance will run (zero-copy: hard links or a
zfs clone), then read whole: a file changed in place keeps its inode, size
and even its mtime, so nothing short of reading it proves it unchanged. A
difference removes the clone and raises RestoreDataBroken naming the files.
A mark beside the target (``.<name>.unchecked``) says a clone is not checked
yet, so that a crash in between is never taken for a finished seed.
"""

import logging
from pathlib import Path

from sdcadm.errors import DatasetError, RestoreDataBroken, SdcadmError
from sdcadm.restore_data.commit import COMMIT_LOCK_TIMEOUT
from sdcadm.restore_data.files import FileLock, remove_tree
from sdcadm.restore_data.verify_dataset import check_dataset

log = logging.getLogger(__name__)
SHOWN_PROBLEMS = 5   # in one error message; `restore-data verify` lists them all


def clone(backend, layout, copy, target, name):
    """Clone ``copy``'s dataset (an InstanceCopy) at ``target`` (``name``: the
    zfs dataset to make, or None) through ``backend``, check it, return the
    path of its files; RestoreDataBroken with nothing left at ``target``."""
    made_parent = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(layout.commit_lock(copy.service), timeout=COMMIT_LOCK_TIMEOUT,
                  what=f"restore data of {copy.service}"), \
            FileLock(layout.instance_lock(copy.uuid), timeout=COMMIT_LOCK_TIMEOUT,
                     what=f"the copy of {copy.alias}"):
        if _unchecked(target).exists():
            discard(backend, target, name)   # cut short by a crash: start again
        elif target.is_symlink() or (target.exists() and any(target.iterdir())):
            # Not ours: a failure below would remove it.
            raise DatasetError(f"{target} exists already: refusing to clone over it",
                               hint="it is not a clone this headnode left unfinished; "
                                    "move it away if it is not needed")
        _unchecked(target).touch()
        try:
            path = backend.clone(str(copy.replica_dir), str(target), copy.snapshot, name=name)
            _tree, problems = check_dataset(path, copy.dataset)
        except BaseException:
            discard(backend, target, name, made_parent)
            raise
        if problems:
            discard(backend, target, name, made_parent)
            where = f"datasets/{copy.uuid}@{copy.snapshot}"
            raise broken(copy, [f"{where}: {p}" for p in problems])
        _unchecked(target).unlink()
        return path


def finished(target):
    """True when ``target`` holds a clone that ``clone`` finished and checked."""
    return Path(target).exists() and not _unchecked(target).exists()


def discard(backend, target, name, remove_parent=False):
    """Remove the clone at ``target`` and its mark (and its parent directory,
    when ``remove_parent`` and it is empty: ``clone`` made it)."""
    try:
        backend.destroy_clone(str(target), name=name)
    except (SdcadmError, OSError) as e:
        log.warning("could not remove the clone at %s: %s", target, e,
                    extra={"event": "restore-clone-left", "path": str(target)})
    remove_tree(target)
    _unchecked(target).unlink(missing_ok=True)
    if remove_parent:
        try:
            target.parent.rmdir()
        except OSError:
            pass   # not empty: not ours alone


def broken(copy, problems):
    """The RestoreDataBroken refusing ``copy`` for ``problems`` (kept whole in
    its ``problems``; the message shows the first few)."""
    shown = problems[:SHOWN_PROBLEMS]
    if len(problems) > len(shown):
        shown.append(f"and {len(problems) - len(shown)} more")
    error = RestoreDataBroken(
        f"refusing to restore {copy.alias} ({copy.service}) from the restore data of this "
        f"headnode: it does not match its manifest: " + "; ".join(shown),
        hint=f"re-sync with `sdcadm service sync-restore-data {copy.service}` on a healthy "
             f"source, or restore from another headnode; `sdcadm restore-data verify "
             f"{copy.service}` lists every problem")
    error.problems = list(problems)
    return error


def _unchecked(target):
    target = Path(target)
    return target.parent / f".{target.name}.unchecked"

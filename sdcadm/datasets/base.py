"""The delegate-dataset interface: one API, two backends (``dir``, ``zfs``).

A *source* is an instance's delegate dataset on the server that runs it. A
*replica* is the copy a headnode keeps of it under
``<restore_data_dir>/svc-<service>/datasets/<instance uuid>/``. The receiving
headnode drives everything (pull): it reaches the source through SSH.

Rules every backend keeps (DESIGN section 4):
* a copy is visible only when complete; the last good copy is never destroyed
  by a failed or killed sync;
* incremental from the newest snapshot common to both sides (zfs: by GUID);
* several headnodes may pull the same source: per-receiver holds/cursors;
* no common snapshot, a diverged source or a modified replica is a clear
  ``ReplicaDiverged`` with the reason and how to fix it; nothing is destroyed
  to "fix" it unless the caller passes ``reseed=True``.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from sdcadm.datasets import tree
from sdcadm.errors import DatasetError


@dataclass(frozen=True)
class SourceRef:
    """Where a source dataset lives, as the receiver reaches it."""

    server_uuid: str
    hostname: str
    host: str            # address sshd listens on
    instance_uuid: str
    path: str            # dir backend: absolute path of the dataset directory on the source
    zfs_dataset: str | None = None   # zfs backend: pool/.../<uuid>


@dataclass
class SyncResult:
    snapshot: str                 # name of the copy now current (dir: timestamp dir; zfs: snapshot name)
    guid: str | None              # zfs: GUID of that snapshot; dir: None
    bytes_moved: int              # bytes that crossed the wire (best measure the backend has)
    files: dict = field(default_factory=dict)   # relative path -> sha256 of the current copy
    total_bytes: int = 0          # size of the current copy
    incremental: bool = False
    started: float = 0.0
    finished: float = 0.0
    timings: dict = field(default_factory=dict)   # phase -> seconds ("transfer", "hash", ...)
    # dir: files that vanished from the live source while it was copied (the
    # copy holds the rest; ``files`` describes exactly what it holds). zfs: ().
    vanished: tuple = ()
    # The source had not changed since the current copy: no new copy was
    # made (``snapshot`` is the copy that was already current).
    unchanged: bool = False
    # zfs: bytes of the received copy read back to name its files (the rest
    # came from the stream or the previous copy); None: not measured (dir).
    read_back: int | None = None
    # The backend's Tree of the new copy (files with sizes, links, problems)
    # when it made one: the caller need not walk the copy again.
    tree: object = None


@dataclass(frozen=True)
class Copy:
    """One complete copy kept on the receiver."""

    name: str
    created: float
    guid: str | None = None


class DatasetBackend(ABC):
    name = "abstract"

    @abstractmethod
    def sync(self, source, replica_dir, receiver_id, *, reseed=False, observer=None):
        """Pull ``source`` into ``replica_dir``; return a SyncResult.

        ``receiver_id``: this headnode's server UUID (names holds/cursors).
        Raises ReplicaDiverged, Unreachable, TransportError; never leaves a
        partial copy visible."""

    @abstractmethod
    def copies(self, replica_dir):
        """Complete copies kept, oldest first (list of Copy)."""

    @abstractmethod
    def current_path(self, replica_dir):
        """A readable directory holding the newest complete copy, or None."""

    @abstractmethod
    def clone(self, replica_dir, target, snapshot=None, name=None):
        """Zero-copy restore of a copy (default the newest) at ``target``
        (dir: hard-link tree; zfs: clone). Returns the path of the files.
        ``name`` (zfs): the dataset to create, e.g. an instance's delegate
        dataset; default a scratch name (for ``destroy_clone``)."""

    @abstractmethod
    def destroy_clone(self, target, name=None):
        """Remove what ``clone`` made (``name``: the one ``clone`` was given)."""

    @abstractmethod
    def prune(self, replica_dir, keep):
        """Keep the ``keep`` newest copies; return the names removed."""

    @abstractmethod
    def destroy(self, replica_dir):
        """Remove every copy of this dataset (the instance is gone)."""

    def verify(self, replica_dir, files):
        """Compare the current copy with ``files`` ({relative path: sha256},
        as in a SyncResult); return a list of problems (empty: all good).
        DatasetError if there is no copy, or a path or symlink would lead
        outside it."""
        path = self.current_path(replica_dir)
        if path is None:
            raise DatasetError(f"no complete copy in {replica_dir}")
        return tree.verify_tree(path, files)

"""The one program lookup (fsutil.find_program) and the error it raises."""

import os

import pytest

from sdcadm import fsutil
from sdcadm.datasets.zfspool import zfs_program
from sdcadm.errors import DatasetError, LabError


def test_a_program_on_path_is_found_as_an_absolute_path():
    path = fsutil.find_program("sh", LabError)
    assert os.path.isabs(path) and os.access(path, os.X_OK)


def test_a_missing_program_raises_the_callers_error_with_what_to_install(monkeypatch):
    monkeypatch.setattr(fsutil, "which", lambda name: None)
    with pytest.raises(DatasetError) as err:
        zfs_program("zpool")
    assert "zpool is not installed; the zfs dataset backend needs it" in str(err.value)
    assert "apt-get install zfs-fuse" in err.value.hint


def test_an_unknown_program_still_gets_a_hint(monkeypatch):
    monkeypatch.setattr(fsutil, "which", lambda name: None)
    with pytest.raises(LabError, match="frobnicate is not installed") as err:
        fsutil.find_program("frobnicate", LabError)
    assert err.value.hint

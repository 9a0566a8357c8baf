"""fsutil: flushing a fresh copy."""

import os



def test_fsync_new_flushes_only_files_not_shared_with_an_older_copy(tmp_path):
    from sdcadm.fsutil import fsync_new
    old = tmp_path / "old"
    (old / "d").mkdir(parents=True)
    (old / "d" / "kept").write_bytes(b"k")
    new = tmp_path / "new"
    (new / "d" / "e").mkdir(parents=True)
    os.link(old / "d" / "kept", new / "d" / "kept")          # a hard link: durable already
    (new / "d" / "e" / "written").write_bytes(b"w")
    (new / "top").write_bytes(b"t")
    os.symlink("top", new / "link")
    inodes = {os.stat(old / "d" / "kept").st_ino}
    assert fsync_new(str(new), inodes) == 2
    assert fsync_new(str(new)) == 3

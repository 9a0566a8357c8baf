"""Put one local file on another server, through any shell, and prove it arrived.

rsync (``transport/rsync.py``) pulls trees; pushing a single file (a headnode
bundle, a platform image) to a server we reach over SSH is this: the bytes
go through the command's stdin into a temporary name beside the destination
(created with its final mode before a byte is written), the server's own
``sha256sum`` of what it received is compared with the sender's, and only a
match is renamed into place. A failed or interrupted push leaves at most the
temporary file, which the next push overwrites.
"""

import os

from sdcadm.errors import TransportError

DEFAULT_TIMEOUT = 600.0


class PushMismatch(TransportError):
    """A file pushed to a server arrived with other content than was sent."""


def push_file(shell, local, remote, sha256, *, mode="600", timeout=DEFAULT_TIMEOUT):
    """Copy file ``local`` to path ``remote`` on the server ``shell`` runs
    commands on; ``sha256``: the hex digest ``local`` must have there.
    Returns the bytes sent. Raises ``PushMismatch`` (the destination left as
    it was) when the server's digest differs."""
    remote = str(remote)
    parent, name = os.path.split(remote)
    tmp = os.path.join(parent, f".{name}.tmp")
    shell.run(["mkdir", "-p", parent])
    shell.run(["install", "-m", mode, "/dev/null", tmp])
    with open(local, "rb") as f:
        shell.run_bytes(["dd", f"of={tmp}", "bs=1M", "status=none"], input=f, timeout=timeout)
        size = f.tell()
    got = shell.run(["sha256sum", tmp], timeout=timeout).stdout.split()[:1]
    if got != [sha256]:
        shell.run(["rm", "-f", tmp], check=False)
        raise PushMismatch(f"{local} sent to {shell.address}:{remote} arrived with sha256 "
                           f"{got[0] if got else '(none)'}, not {sha256}",
                           hint="check the disk and free space of that server, then run the "
                                "same command again")
    shell.run(["mv", "-f", tmp, remote])
    return size

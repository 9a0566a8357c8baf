"""rsync over SSH, driven through the ``sh`` package with argument lists.

``pull(transport, remote_path, dest)`` copies a directory tree from the server
``transport`` (an ``SSHTransport``) reaches into a local directory. The SSH
client is OpenSSH with ``transport.ssh_argv()`` (same port, user, identity and
known_hosts; ``StrictHostKeyChecking=yes``: host keys verified, never added).
``--stats`` gives the bytes that crossed the wire; ``--info=progress2`` feeds
progress events when an observer is given. Files that vanish between rsync's
listing and their transfer (exit 24) are an error unless the caller accepts
them (``accept_vanished``: a copy of a live directory); they are then named in
``RsyncStats.vanished``. rsync dies with the process that
started it (PDEATHSIG), so a killed sync leaves no orphan writing behind it.

``gate=True`` makes the one SSH command rsync runs on the source first answer
"did anything change since the copy whose fingerprint is ``known``" (the
``--rsync-path`` is a constant ``sh`` script, values as positional
parameters): it fingerprints the source tree (``find``: path, type, inode,
links, size, mtime and ctime to the nanosecond, mode, owner, link target of
every entry; sha256 of that listing). Equal to ``known``: it exits before
rsync starts and ``pull`` returns ``RsyncStats(unchanged=True)`` -- a
nothing-changed cycle costs that one round trip and no file list. Else rsync
runs as usual and the stats carry the fingerprint, unless an entry changed
within ``GATE_MARGIN`` s of it (a filesystem with coarse timestamps could then change a
file again without changing its times: such a fingerprint is not given, and
the next cycle copies). Any change after a fingerprint moves some ctime,
size, name or inode, which the next fingerprint sees; a source without GNU
find gets no fingerprint and every cycle copies, as without the gate.
"""

import logging
import os
import re
import shlex
import shutil
from dataclasses import dataclass, replace

import sh

from sdcadm.errors import AuthError, DatasetError, HostKeyError, TransportError, Unreachable
from sdcadm.progress import Progress, notify
from sdcadm.transport.local import die_with_parent

log = logging.getLogger(__name__)

_UNREACHABLE_CODES = {5, 10, 12, 30, 35, 255}
_PROGRESS_RE = re.compile(r"^\s*([\d,]+)\s+(\d+)%")
_VANISHED_RE = re.compile(r'^file has vanished: "(.*)"$')
VANISHED = 24   # rsync: "some files vanished before they could be transferred"


@dataclass(frozen=True)
class RsyncStats:
    """What ``--stats`` reported (bytes; 0 when a line was missing)."""

    files: int = 0
    transferred_files: int = 0
    total_size: int = 0
    transferred_size: int = 0
    literal: int = 0
    matched: int = 0
    sent: int = 0
    received: int = 0
    vanished: tuple = ()   # paths (relative to the source) gone before they were sent
    fingerprint: str | None = None   # gate: the source's, taken just before this copy
    unchanged: bool = False          # gate: the source matched ``known``; nothing was copied

    @property
    def wire_bytes(self):
        return self.sent + self.received


_STATS_LINES = {
    "Number of files": "files",
    "Number of regular files transferred": "transferred_files",
    "Total file size": "total_size",
    "Total transferred file size": "transferred_size",
    "Literal data": "literal",
    "Matched data": "matched",
    "Total bytes sent": "sent",
    "Total bytes received": "received",
}


def parse_stats(text):
    """RsyncStats from rsync's ``--stats`` output (pure; numbers may carry
    thousands separators)."""
    values = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        field = _STATS_LINES.get(key.strip())
        if not sep or field is None:
            continue
        m = re.match(r"\s*([\d,.]+)", rest)
        if m:
            values[field] = int(re.sub(r"[,.]", "", m.group(1)))
    return RsyncStats(**values)


def parse_vanished(stderr, remote_path):
    """The paths rsync reported as vanished (pure), relative to ``remote_path``
    when under it. rsync names them as ``file has vanished: "<path>"``."""
    top = str(remote_path).rstrip("/") + "/"
    found = []
    for line in stderr.splitlines():
        m = _VANISHED_RE.match(line.strip())
        if m:
            path = m.group(1)
            found.append(path[len(top):] if path.startswith(top) else path)
    return tuple(found)


GATE_MARGIN = 2   # seconds: an entry changed this close to a fingerprint voids it
# The remote side of ``pull(gate=True)``: $1 = the known fingerprint (may be
# empty), $2 = the source directory, $3 = the margin, then rsync's own server
# arguments.
GATE_SCRIPT = (
    'known=$1 dir=$2 margin=$3; shift 3; '
    'if now=$(date +%s) && find "$dir" -maxdepth 0 -printf "" 2>/dev/null; then '
    'fp=$(LC_ALL=C find "$dir" -printf "%C@ %y %i %n %s %T@ %m %U %G %P\\t%l\\n" 2>&1 '
    '| sha256sum | cut -c1-64); '
    'if [ -n "$known" ] && [ "$fp" = "$known" ]; then echo "sdcadm-unchanged $fp" >&2; exit 0; fi; '
    'if [ -z "$(find "$dir" -newerct "@$((now - margin))" -print -quit 2>/dev/null)" ]; then '
    'echo "sdcadm-fingerprint $fp" >&2; fi; '
    'fi; '
    'exec rsync "$@"')
_GATE_RE = re.compile(r"^sdcadm-(unchanged|fingerprint) ([0-9a-f]{64})$")


def gate_rsync_path(remote_path, known, margin=GATE_MARGIN):
    """The ``--rsync-path`` of a gated pull (pure)."""
    return shlex.join(["sh", "-c", GATE_SCRIPT, "sdcadm-gate", known or "",
                       str(remote_path).rstrip("/") + "/", str(int(margin))])


def parse_gate(stderr, known):
    """(unchanged, fingerprint) from a gated pull's stderr (pure). Unchanged
    only when the source said so for exactly ``known``."""
    unchanged, fingerprint = False, None
    for line in stderr.splitlines():
        m = _GATE_RE.match(line.strip())
        if not m:
            continue
        if m.group(1) == "unchanged":
            unchanged = bool(known) and m.group(2) == known
        else:
            fingerprint = m.group(2)
    return unchanged, fingerprint


def parse_progress(chunk):
    """Bytes done from the last ``--info=progress2`` record in ``chunk``, or None."""
    done = None
    for record in re.split(r"[\r\n]", chunk):
        m = _PROGRESS_RE.match(record)
        if m:
            done = int(m.group(1).replace(",", ""))
    return done


def remote_spec(host, path):
    """``host:path/`` (contents of the directory); IPv6 hosts bracketed."""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{str(path).rstrip('/')}/"


def rsync_args(ssh_argv, host, remote_path, dest, *, link_dest=None, progress=False,
               delete=True, extra=()):
    """The arguments after ``rsync`` (pure)."""
    # --modify-window=-1: compare mtimes to the nanosecond. The default (whole
    # seconds) skips a same-size rewrite made within the second of the copy
    # we hold, and the restore data would silently keep the old content.
    args = ["-a", "--numeric-ids", "--modify-window=-1", "--stats", "-e", shlex.join(ssh_argv)]
    if delete:
        args.append("--delete")
    if progress:
        args += ["--info=progress2", "--no-inc-recursive"]
    if link_dest:
        args.append(f"--link-dest={os.path.abspath(link_dest)}")
    args += list(extra)
    args += [remote_spec(host, remote_path), str(dest).rstrip("/") + "/"]
    return args


def rsync_errors(stderr, limit=5):
    """rsync's own lines from stderr (``rsync: ...``/``rsync error: ...``)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    mine = [line for line in lines if line.startswith("rsync")] or lines
    return "; ".join(mine[-limit:])


def map_exit(code, stderr, host):
    """The typed error for rsync's exit ``code`` (pure), None for 0."""
    if code == 0:
        return None
    detail = rsync_errors(stderr) or f"exit {code}"
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return HostKeyError(f"rsync from {host}: host key verification failed",
                            hint="the server's key is not in (or differs from) the known_hosts "
                                 "file sdcadm uses (ssh.known_hosts)")
    if "Permission denied (publickey" in stderr:
        return AuthError(f"rsync from {host}: authentication failed",
                         hint="check ssh.identity and the server's authorized_keys")
    if code in _UNREACHABLE_CODES:
        return Unreachable(f"rsync from {host} failed (exit {code}): {detail}",
                           hint="check that the server is up and its sshd answers")
    if code in (23, 24):
        what = "some files vanished" if code == 24 else "some files could not be copied"
        return DatasetError(f"rsync from {host}: partial transfer, {what} (exit {code}): {detail}",
                            hint="the copy was not kept; check the path and permissions on the "
                                 "source, then sync again")
    return TransportError(f"rsync from {host} failed (exit {code}): {detail}")


def rsync_program():
    path = shutil.which("rsync")
    if not path:
        raise DatasetError("rsync is not installed", hint="apt-get install rsync")
    return path


def pull(transport, remote_path, dest, *, link_dest=None, observer=None, extra=(),
         accept_vanished=False, gate=False, known=None, gate_margin=GATE_MARGIN):
    """Copy ``remote_path`` (a directory on ``transport``'s server) into
    ``dest``. Returns RsyncStats; raises Unreachable, HostKeyError,
    AuthError, DatasetError (partial transfer) or TransportError.

    ``accept_vanished``: exit 24 (files vanished while rsync ran, and nothing
    else went wrong: rsync reports other failures as 23) is a success whose
    stats name the vanished files; ``dest`` holds everything else.

    ``gate``: see the module doc (``known``: the fingerprint of the copy
    ``link_dest`` holds; ``gate_margin``: seconds, see GATE_MARGIN -- only
    a test on a filesystem with nanosecond times may lower it)."""
    if gate:
        extra = [f"--rsync-path={gate_rsync_path(remote_path, known, gate_margin)}", *extra]
    args = rsync_args(transport.ssh_argv(shared=True), transport.host, remote_path, dest,
                      link_dest=link_dest, progress=observer is not None, extra=extra)
    out = []
    record = []  # sh hands over unbuffered output a character at a time
    step = f"rsync {transport.host}:{remote_path}"

    def on_out(chunk):
        out.append(chunk)
        if observer is None:
            return
        record.append(chunk)
        if "\r" in chunk or "\n" in chunk:
            done = parse_progress("".join(record))
            record.clear()
            if done is not None:
                notify(observer, Progress("rsync", step, done=done))

    env = {k: v for k, v in os.environ.items() if not k.startswith("RSYNC_")}
    env["LC_ALL"] = "C"
    log.debug("rsync %s", shlex.join(args))
    rsync = sh.Command(rsync_program())
    try:
        result = rsync(*args, _ok_code=list(range(256)), _return_cmd=True, _env=env,
                       _preexec_fn=die_with_parent, _out=on_out, _out_bufsize=0,
                       _decode_errors="replace")
    except sh.ErrorReturnCode as e:  # killed by a signal
        raise TransportError(f"rsync from {transport.address} was killed ({e.exit_code})",
                             hint="sync again") from None
    stderr = result.stderr.decode(errors="replace") if isinstance(result.stderr, bytes) else result.stderr
    vanished, unchanged, fingerprint = (), False, None
    if gate:
        unchanged, fingerprint = parse_gate(stderr, known)
        if unchanged:
            log.debug("rsync %s: unchanged since fingerprint %s", step, known)
            return RsyncStats(unchanged=True, fingerprint=known)
    if accept_vanished and result.exit_code == VANISHED:
        vanished = parse_vanished(stderr, remote_path) or ("?",)
    else:
        error = map_exit(result.exit_code, stderr, transport.address)
        if error is not None:
            raise error
    stats = replace(parse_stats("".join(out)), vanished=vanished, fingerprint=fingerprint)
    log.debug("rsync done: %s", stats)
    return stats

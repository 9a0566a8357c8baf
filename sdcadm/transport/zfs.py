"""The ``zfs`` command line, run through a shell (``LocalShell`` or ``SSHTransport``).

Only what zfs-fuse has: ``zfs get -H -p`` (never ``list -p``), ``send -i/-I``,
``recv -F``, ``hold``/``release`` (``zfs holds`` is broken there: the hold
count is read from ``userrefs``). zfs's stderr is mapped to typed errors.

``send_recv()`` moves a stream from ``zfs send`` on one shell to ``zfs recv``
on a local one. The sender runs as a local process (``ssh host 'zfs send ...'``
for a remote shell, through the OpenSSH client with the same identity and
verified known_hosts); Python relays its output into ``zfs recv`` with
``splice(2)`` (no copy through user space) and counts the bytes. Measured on
the lab (2 vCPUs, loopback): paramiko channel ~140-180 MB/s and it failed
with "Key-exchange timed out" on a 512 MiB stream at rekey time; OpenSSH
client + splice ~145-185 MB/s with no such failure; zfs-fuse itself receives
at ~90 MB/s, so the OpenSSH pipe is never the bottleneck. Python stays in the
middle on purpose: if it is killed, ``zfs recv`` sees the stream end and
zfs aborts the receive (with zfs-fuse, killing only the ``zfs recv`` client
does NOT stop the daemon from completing it).
"""

import errno
import fcntl
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass

from sdcadm.errors import (
    AuthError,
    HostKeyError,
    TransportError,
    Unreachable,
    ZfsBusy,
    ZfsError,
    ZfsExists,
    ZfsHasClones,
    ZfsHoldExists,
    ZfsNoSuchHold,
    ZfsNotFound,
    ZfsReceiveDiverged,
    ZfsStreamError,
)
from sdcadm.progress import Progress, notify
from sdcadm.transport.interface import Shell

log = logging.getLogger(__name__)

SNAPSHOT_PROPS = ("guid", "createtxg", "creation", "userrefs")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE = 1 << 20
_PROGRESS_EVERY = 0.5  # seconds between progress events of a stream


@dataclass(frozen=True)
class Snapshot:
    """A zfs snapshot as ``zfs get -H -p`` describes it (the plain data the
    pure planning of ``datasets/plan.py`` decides on)."""

    name: str          # full name: pool/fs@snap
    guid: str
    createtxg: int
    creation: int = 0  # unix seconds
    userrefs: int = 0

    @property
    def short(self):
        return self.name.partition("@")[2]


# -- errors: zfs's stderr mapped to the typed errors of sdcadm.errors -------------

_PATTERNS = [  # (stderr fragment, class, hint) -- first match wins
    ("has been modified", ZfsReceiveDiverged,
     "the replica was changed since its last snapshot; sdcadm receives with -F, "
     "which rolls such changes back -- if this persists, sync with --reseed"),
    ("does not match incremental source", ZfsReceiveDiverged,
     "the replica's newest snapshot is not the stream's base; sync with --reseed"),
    ("destination has snapshots", ZfsReceiveDiverged,
     "the replica has snapshots the source does not; sync with --reseed"),
    ("must specify -F", ZfsExists, None),
    ("dataset does not exist", ZfsNotFound, None),
    ("could not find any snapshots", ZfsNotFound, None),
    ("no such pool", ZfsNotFound, "zpool list shows the pools; check datasets.zfs_pool"),
    ("no such tag on this dataset", ZfsNoSuchHold, None),
    ("tag already exists on this dataset", ZfsHoldExists, None),
    ("dataset already exists", ZfsExists, None),
    ("already exists", ZfsExists, None),
    ("has dependent clones", ZfsHasClones, "destroy the clones first (restored instances use them)"),
    ("has children", ZfsBusy, None),
    ("dataset is busy", ZfsBusy, "a hold, a clone or a process using its mountpoint keeps it"),
    ("pool or dataset is busy", ZfsBusy, None),
    ("invalid backup stream", ZfsStreamError, "the stream was cut short; sync again"),
    ("incomplete stream", ZfsStreamError, "the stream was cut short; sync again"),
    ("checksum mismatch", ZfsStreamError, "the stream was damaged in transit; sync again"),
    ("out of space", ZfsError, "free space in the pool (zpool list) or prune old copies"),
    ("no space left", ZfsError, "free space in the pool (zpool list) or prune old copies"),
    ("connect to zfs-fuse", ZfsError, "start the zfs-fuse daemon (run: zfs-fuse)"),
    ("permission denied", ZfsError, "zfs needs root"),
]


def map_error(argv, returncode, stderr, host="localhost"):
    """The typed error for a failed zfs command (pure)."""
    text = (stderr or "").strip()
    message = f"{' '.join(str(a) for a in argv[:2])} on {host} exited {returncode}: {text or 'no message'}"
    low = " ".join(text.split()).lower()  # zfs-fuse wraps its messages over lines
    if returncode == 127 or "command not found" in low:
        return ZfsError(message, argv=argv, stderr=stderr,
                        hint="zfs is not installed there (apt-get install zfs-fuse, or OpenZFS)")
    for fragment, cls, hint in _PATTERNS:
        if fragment.lower() in low:
            return cls(message, argv=argv, stderr=stderr, hint=hint)
    return ZfsError(message, argv=argv, stderr=stderr)


def map_ssh_error(host, returncode, stderr):
    """OpenSSH client's own failures (exit 255), or None if it is not one."""
    if returncode != 255:
        return None
    text = (stderr or "").strip()
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return HostKeyError(f"{host}: host key verification failed: {text}",
                            hint="check the known_hosts file sdcadm uses (ssh.known_hosts)")
    if "Permission denied" in text:
        return AuthError(f"{host}: authentication failed: {text}",
                         hint="check ssh.identity and the server's authorized_keys")
    return Unreachable(f"{host}: ssh failed: {text or 'exit 255'}",
                       hint="check that the server is up and sshd answers")


def _props(props):
    args = []
    for key, value in (props or {}).items():
        args += ["-o", f"{key}={value}"]
    return args


def _value(text):
    return None if text == "-" else text


def parse_snapshots(out, dataset):
    """Snapshot list (oldest first) from ``zfs get -H -p -o
    name,property,value guid,createtxg,creation,userrefs`` output; lines of
    other datasets are ignored."""
    props = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0].startswith(dataset + "@"):
            props.setdefault(parts[0], {})[parts[1]] = _value(parts[2])
    snaps = []
    for name, p in props.items():
        if p.get("guid") is None:
            continue
        snaps.append(Snapshot(name=name, guid=p["guid"], createtxg=int(p.get("createtxg") or 0),
                              creation=int(p.get("creation") or 0),
                              userrefs=int(p.get("userrefs") or 0)))
    return sorted(snaps, key=lambda s: s.createtxg)


# An incremental stream that changes nothing is exactly two 312-byte records:
# BEGIN (type 0, no payload, DMU_BACKUP_MAGIC 0x2F5bacbac; little-endian) and
# END (type 5). Any change adds a record (OBJECT, FREEOBJECTS, WRITE, FREE...).
EMPTY_STREAM_HEAD = "0000000000000000" + "accbbaf502000000"   # hex of BEGIN's first 16 bytes
EMPTY_STREAM_END = "05000000"                                 # hex of END's type, at byte 312
UNCHANGED = "sdcadm-unchanged"

# $1 zfs, $2 dataset, $3 new snapshot, $4 hold tag, $5 snapshot to keep held
# ("" = release nothing), $6 "probe" or "": whether to ask if anything changed
# since $5, then "-o prop=value" pairs for the new snapshot. The probe reads
# the first 625 bytes of `zfs send -i $5 $3` (the sender stops there): an
# empty stream releases the new snapshot again (its deferred destroy removes
# it) and says UNCHANGED.
# Sets p to the hex of the first 625 bytes of `zfs send -i $from $to`, then
# tests it for an empty stream (sh snippet; $z, $from, $to set by the caller).
_EMPTY_STREAM = (
    'p=$("$z" send -i "$from" "$to" 2>/dev/null | head -c 625 | od -An -v -tx1 | tr -d " \\n"); '
    '[ ${#p} -eq 1248 ] '
    f'&& [ "$(printf %s "$p" | cut -c1-32)" = {EMPTY_STREAM_HEAD} ] '
    f'&& [ "$(printf %s "$p" | cut -c625-632)" = {EMPTY_STREAM_END} ]')
_SNAPSHOT_HELD = (
    'z=$1 ds=$2 snap=$3 tag=$4 keep=$5 probe=$6; shift 6; '
    '"$z" snapshot "$@" "$snap" && "$z" hold "$tag" "$snap" && "$z" destroy -d "$snap" || exit; '
    'if [ -n "$probe" ] && [ -n "$keep" ]; then from=$keep to=$snap; '
    f'if {_EMPTY_STREAM} && "$z" release "$tag" "$snap"; then echo {UNCHANGED}; fi; '
    'fi; '
    'if [ -n "$keep" ]; then '
    '"$z" list -H -t snapshot -o name -r "$ds" | while IFS= read -r old; do '
    'case "$old" in "$ds@sdcadm-sync-"*) ;; *) continue ;; esac; '
    '[ "$old" = "$snap" ] || [ "$old" = "$keep" ] || "$z" release "$tag" "$old" 2>/dev/null; '
    'done; fi; '
    '"$z" get -H -p -r -d 1 -o name,property,value ' + ",".join(SNAPSHOT_PROPS) + ' "$ds"')


# $1 zfs, $2 snapshot of the dataset (the base), $3 a scratch snapshot name:
# whether the dataset changed since $2 (snapshot, probe, destroy).
_CHANGED_SINCE = (
    'z=$1 from=$2 to=$3; "$z" snapshot "$to" || exit; '
    f'if {_EMPTY_STREAM}; then r={UNCHANGED}; else r=changed; fi; '
    '"$z" destroy "$to" || exit; echo "$r"')


# -- the wrapper -----------------------------------------------------------------

class Zfs:
    """``zfs`` subcommands through ``shell`` (``send_recv`` also needs its
    ``command_argv``; everything else only ``run``)."""

    def __init__(self, shell: Shell, binary="zfs"):
        self.shell = shell
        self.binary = binary

    def __repr__(self):
        return f"Zfs({self.shell!r})"

    @property
    def host(self):
        return self.shell.address

    def _run(self, *args):
        argv = [self.binary, *args]
        result = self.shell.run(argv, check=False)
        if result.returncode != 0:
            raise map_error(argv, result.returncode, result.stderr, self.host)
        return result.stdout

    # -- reading ---------------------------------------------------------------
    def get(self, names, props=SNAPSHOT_PROPS):
        """``{name: {prop: value or None}}`` via ``zfs get -H -p``."""
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            return {}
        out = self._run("get", "-H", "-p", "-o", "name,property,value", ",".join(props), *names)
        found = {n: {} for n in names}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                found.setdefault(parts[0], {})[parts[1]] = _value(parts[2])
        return found

    def get_one(self, name, prop):
        return self.get(name, (prop,)).get(name, {}).get(prop)

    def exists(self, name):
        try:
            self.get(name, ("type",))
        except ZfsNotFound:
            return False
        return True

    def list_snapshot_names(self, dataset):
        """Names of ``dataset``'s own snapshots (not its children's)."""
        out = self._run("list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset)
        return [n for n in out.splitlines() if n.startswith(dataset + "@")]

    def snapshots(self, dataset):
        """``dataset``'s snapshots as Snapshot, oldest first (createtxg).

        One command (``zfs get -r -d 1``: the dataset, its snapshots and its
        children; only ``dataset@...`` is kept) -- over SSH every command
        costs a round trip and a login shell."""
        out = self._run("get", "-H", "-p", "-r", "-d", "1", "-o", "name,property,value",
                        ",".join(SNAPSHOT_PROPS), dataset)
        return parse_snapshots(out, dataset)

    def snapshot_held(self, dataset, short, tag, props=None, release_except=None, probe=False):
        """In one round trip: snapshot ``dataset@short`` (with user ``props``),
        hold it with ``tag``, mark it for deferred destroy (zfs destroys it
        when its last hold is released), then -- if ``release_except`` (a
        short name) is given -- release ``tag`` from every other
        ``sdcadm-sync-*`` snapshot of ``dataset`` but that one, and list
        ``dataset``'s snapshots (returned, as ``snapshots()``). The script is
        a constant; every value reaches it as a positional parameter, never
        as shell text.

        ``probe`` (with ``release_except``, the receiver's base): returns
        (snapshots, unchanged) -- unchanged: the incremental stream from the
        base to the new snapshot was empty, and the new snapshot was released
        again (gone, unless another receiver holds it)."""
        keep = f"{dataset}@{release_except}" if release_except else ""
        argv = ["sh", "-c", _SNAPSHOT_HELD, "sh", self.binary, dataset, f"{dataset}@{short}", tag,
                keep, "probe" if probe else "", *_props(props)]
        result = self.shell.run(argv, check=False)
        if result.returncode != 0:
            raise map_error([self.binary, "snapshot", f"{dataset}@{short}"], result.returncode,
                            result.stderr, self.host)
        snaps = parse_snapshots(result.stdout, dataset)
        if not probe:
            return snaps
        return snaps, UNCHANGED in result.stdout.splitlines()

    def unchanged_since(self, snapshot, scratch):
        """True if ``snapshot``'s dataset has not changed since it was taken:
        snapshot it as ``scratch``, see whether the stream between the two is
        empty, destroy ``scratch`` (one command; a scratch left by a killed
        call is the caller's to destroy)."""
        scratch = f"{snapshot.partition('@')[0]}@{scratch}"
        result = self.shell.run(["sh", "-c", _CHANGED_SINCE, "sh", self.binary, snapshot, scratch],
                                check=False)
        if result.returncode != 0:
            raise map_error([self.binary, "snapshot", scratch], result.returncode, result.stderr,
                            self.host)
        return result.stdout.strip() == UNCHANGED

    def list_names(self, dataset, depth=None):
        """Filesystems at and under ``dataset``."""
        args = ["list", "-H", "-o", "name", "-t", "filesystem", "-r"]
        if depth is not None:
            args += ["-d", str(depth)]
        return self._run(*args, dataset).splitlines()

    # -- changing --------------------------------------------------------------
    def snapshot(self, name, props=None):
        self._run("snapshot", *_props(props), name)

    def create(self, name, props=None, parents=False):
        self._run("create", *(["-p"] if parents else []), *_props(props), name)

    def destroy(self, name, recursive=False, busy_timeout=0.0):
        """``busy_timeout``: seconds to retry while zfs says "busy" -- zfs-fuse
        reports a filesystem busy for a moment after it was mounted or read."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._run("destroy", *(["-r"] if recursive else []), name)
                return
            except ZfsHasClones:
                raise
            except ZfsBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def hold(self, tag, snapshot):
        self._run("hold", tag, snapshot)

    def release(self, tag, snapshot):
        self._run("release", tag, snapshot)

    def set(self, name, prop, value):
        self._run("set", f"{prop}={value}", name)

    def inherit(self, name, prop):
        self._run("inherit", prop, name)

    def clone(self, snapshot, name, props=None, parents=False):
        self._run("clone", *(["-p"] if parents else []), *_props(props), snapshot, name)

    def rename(self, old, new):
        self._run("rename", old, new)

    def rollback(self, snapshot, destroy_newer=False):
        self._run("rollback", *(["-r"] if destroy_newer else []), snapshot)

    def mount(self, name):
        self._run("mount", name)

    def unmount(self, name, force=False):
        self._run("unmount", *(["-f"] if force else []), name)

    # -- streams ---------------------------------------------------------------
    def send_argv(self, snapshot, base=None, intermediates=False):
        argv = [self.binary, "send"]
        if base:
            argv += ["-I" if intermediates else "-i", base]
        return [*argv, snapshot]

    def recv_argv(self, target, force=True):
        return [self.binary, "recv", *(["-F"] if force else []), target]


# -- send | recv -------------------------------------------------------------------

def _drain(stream, into):
    for chunk in iter(lambda: stream.read(65536), b""):
        into.extend(chunk)
        del into[:-65536]


def _grow_pipe(fd):
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # a smaller pipe only costs a few more system calls


def _relay(src_fd, dst_fd, observer, what, tap=None):
    """Move everything from ``src_fd`` to ``dst_fd``; return the byte count.
    BrokenPipeError when the reader went away. ``tap(bytes)`` is given every
    byte moved, in order (then nothing is spliced)."""
    moved, last = 0, 0.0  # the first chunk is reported at once
    use_splice = tap is None and hasattr(os, "splice")
    while True:
        if use_splice:
            try:
                n = os.splice(src_fd, dst_fd, _PIPE_SIZE)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                use_splice = False
                continue
        else:
            data = os.read(src_fd, _PIPE_SIZE)
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dst_fd, view):]
            if tap is not None and n:   # after the write: the receiver works meanwhile
                tap(data)
        if n == 0:
            return moved
        moved += n
        now = time.monotonic()
        if observer is not None and now - last >= _PROGRESS_EVERY:
            last = now
            notify(observer, Progress("send", what, done=moved))


def send_recv(source, target, snapshot, target_name, *, base=None, intermediates=False,
              force=True, observer=None, tap=None):
    """``source``'s ``zfs send [-i base] snapshot | zfs recv [-F] target_name``
    on ``target`` (whose shell must be local: it spawns both processes).
    Returns the number of stream bytes moved; raises typed errors (the
    receive's own error first: it says more than the sender's broken pipe).
    ``tap(bytes)``: sees the stream as it passes (``datasets/zstream.py``)."""
    local = target.shell
    send_cmd = source.shell.command_argv(source.send_argv(snapshot, base, intermediates))
    recv_cmd = target.recv_argv(target_name, force)
    what = f"{'incremental' if base else 'full'} {snapshot} -> {target_name}"
    log.info("zfs stream: %s", what)
    sender = local.spawn(send_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    receiver = None
    errs = {"send": bytearray(), "recv": bytearray()}
    threads = []
    moved = 0
    relay_error = None
    try:
        receiver = local.spawn(recv_cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        for name, proc in (("send", sender), ("recv", receiver)):
            t = threading.Thread(target=_drain, args=(proc.stderr, errs[name]), daemon=True)
            t.start()
            threads.append(t)
        _grow_pipe(sender.stdout.fileno())
        _grow_pipe(receiver.stdin.fileno())
        notify(observer, Progress("send", what, done=0))
        try:
            moved = _relay(sender.stdout.fileno(), receiver.stdin.fileno(), observer, what, tap)
        except OSError as e:  # the receiver exited early (BrokenPipe) or worse
            relay_error = e
        receiver.stdin.close()
        if relay_error is not None:
            sender.kill()
        rc_recv = receiver.wait()
        rc_send = sender.wait()
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for t in threads:
            t.join(timeout=5)
        sender.stdout.close()
    notify(observer, Progress("send", what, done=moved, total=moved))
    send_err, recv_err = errs["send"].decode(errors="replace"), errs["recv"].decode(errors="replace")
    over_ssh = send_cmd[0] != source.binary
    ssh_error = map_ssh_error(source.host, rc_send, send_err) if over_ssh else None
    if ssh_error is not None:
        raise ssh_error
    if rc_recv != 0:
        error = map_error(recv_cmd, rc_recv, recv_err, target.host)
        if rc_send != 0 and type(error) is ZfsError:  # nothing better from recv: the sender's reason
            raise map_error(source.send_argv(snapshot, base, intermediates), rc_send, send_err,
                            source.host)
        raise error
    if rc_send != 0:
        raise map_error(source.send_argv(snapshot, base, intermediates), rc_send, send_err,
                        source.host)
    if relay_error is not None:
        raise TransportError(f"zfs stream {what} failed: {relay_error}")
    log.info("zfs stream done: %s, %d bytes", what, moved)
    return moved

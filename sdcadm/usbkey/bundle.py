"""The headnode bundle: ``usbkey-base.tgz``, what a server needs to act as a headnode.

RFD 67 keeps on every headnode's USB key what the first headnode was booted
from. Ours is the *usbkey directory* (config ``usbkey_dir``) and the bundle is
that directory as a gzip'd tar whose first member, ``manifest.json``, gives
the sha256, size and mode of every other member. Only these top-level parts
are taken, each for a reason (``PARTS``); anything else in the directory is
left out (and said so by ``build``).

Reading a bundle (``verify``, ``seed``) is one streaming pass that trusts
nothing: the manifest must come first and be valid; every member must be a
regular file named in it, under a known part, with a safe relative name (no
``/x``, no ``..``), exactly its size and sha256, seen once; nothing named in
the manifest may be missing; sizes and counts are bounded (a small archive
that expands to terabytes is refused as soon as it passes the bound).
Symlinks, hard links, devices and FIFOs are refused whatever their target.
``seed`` extracts into a staging directory beside the target and swaps it in
with one atomic rename (``renameat2(RENAME_EXCHANGE)`` where the filesystem
has it): a refused or interrupted seed leaves the target as it was.

The manifest is an integrity record, not a signature: the bundle travels
over SSH (authenticated by host keys) and carries the DC's secrets, so the
server it seeds cannot hold a key to check a signature with before it has it.
"""

import ctypes
import errno
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import time
import zlib
from pathlib import Path

from sdcadm.errors import SdcadmError
from sdcadm.fsutil import canonical_json, fsync_dir, safe_relative, syncfs

FORMAT = "sdcadm-usbkey/1"
MANIFEST = "manifest.json"
BUNDLE_NAME = "usbkey-base.tgz"

# Top-level parts of a usbkey directory, and why a headnode needs each.
PARTS = {
    "images": "the core services' images (<uuid>.json, <uuid>.file): a headnode provisions "
              "and restores instances without reaching the server that imported them",
    "platforms": "the platform images (`sdcadm platform install`): a headnode boots the "
                 "other servers",
    "config": "the DC-wide configuration template (store endpoints, SSH, restore data "
              "settings); never a server's own UUID or hostname",
    "catalog": "the core-services catalog the DC runs (services, dependencies, HA)",
    "secrets": "the agent token and the restore-data key: a headnode calls every agent and "
               "signs and checks restore data",
}

MAX_MANIFEST_BYTES = 4 << 20
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 1 << 40      # 1 TiB: far above any real usbkey, far below "fill the disk"
_CHUNK = 1 << 20
_SHA256 = frozenset("0123456789abcdef")


class BundleError(SdcadmError):
    """A headnode bundle is unusable (refused; nothing was changed)."""

    def __init__(self, path, problem, *, hint=None):
        self.path, self.problem = str(path), problem
        super().__init__(f"headnode bundle {path}: {problem}",
                         hint=hint or "build a new one on a healthy headnode with "
                                      "`sdcadm usbkey build` and send it again")


# -- building ---------------------------------------------------------------------

def scan(root):
    """``({name: {"sha256", "size", "mode"}}, [left out])`` of the usbkey
    directory ``root``: regular files under ``PARTS``; a symlink or special
    file there is an error (a bundle never carries one)."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(root, "is not a directory", hint="check usbkey_dir in the configuration")
    files, left_out = {}, []
    for top in sorted(os.listdir(root)):
        if top not in PARTS:
            left_out.append(top)
            continue
        for path in sorted(_walk(root / top)):
            name = path.relative_to(root).as_posix()
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(root, f"{name} is not a regular file (links and special "
                                        "files are never bundled)",
                                  hint="replace it with the file itself, or remove it")
            files[name] = {"sha256": _sha256_path(path), "size": st.st_size,
                           "mode": stat.S_IMODE(st.st_mode) & 0o755}
    return files, left_out


def _walk(path):
    if not path.is_dir() or path.is_symlink():
        yield path
        return
    for entry in os.scandir(path):
        yield from _walk(Path(entry.path))


def _sha256_path(path):
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def build(root, out, *, source, clock=time.time):
    """Write the bundle of usbkey directory ``root`` to ``out`` (atomically,
    mode 0600: it holds the DC's secrets); return (manifest, left out)."""
    files, left_out = scan(root)
    manifest = {"format": FORMAT, "created": round(clock(), 3), "source": source,
                "files": files}
    raw = canonical_json(manifest).encode()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            tar.addfile(_info(MANIFEST, len(raw), 0o644, manifest["created"]), io.BytesIO(raw))
            for name, entry in files.items():
                with open(Path(root) / name, "rb") as member:
                    tar.addfile(_info(name, entry["size"], entry["mode"], manifest["created"]),
                                member)
            tar.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return manifest, left_out


def _info(name, size, mode, mtime):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# -- reading ---------------------------------------------------------------------

def manifest_problems(doc):
    """What is wrong with a bundle manifest (empty: nothing)."""
    if not isinstance(doc, dict):
        return [f"is not a JSON object (got {type(doc).__name__})"]
    problems = []
    if doc.get("format") != FORMAT:
        problems.append(f"format is {doc.get('format')!r}, this sdcadm reads {FORMAT!r}")
    files = doc.get("files")
    if not isinstance(files, dict):
        return problems + ["has no 'files' object"]
    if len(files) > MAX_MEMBERS:
        problems.append(f"lists {len(files)} files, more than {MAX_MEMBERS}")
    total = 0
    for name, entry in list(files.items())[:MAX_MEMBERS]:
        where = f"files[{name!r:.80}]"
        if not safe_relative(name) or name.split("/", 1)[0] not in PARTS or "/" not in name:
            problems.append(f"{where}: not a safe name under {', '.join(PARTS)}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: not an object")
            continue
        sha, size, mode = entry.get("sha256"), entry.get("size"), entry.get("mode")
        if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _SHA256):
            problems.append(f"{where}: sha256 is not 64 lower-case hex digits")
        if type(size) is not int or not 0 <= size <= MAX_TOTAL_BYTES:
            problems.append(f"{where}: size is not a byte count")
        else:
            total += size
        if type(mode) is not int or not 0 <= mode <= 0o777:
            problems.append(f"{where}: mode is not a permission (0 to 0o777)")
    if total > MAX_TOTAL_BYTES:
        problems.append(f"adds up to {total} bytes, more than {MAX_TOTAL_BYTES}")
    return problems


def read(path, sink=None):
    """Check the bundle at ``path`` in one pass; return its manifest.
    ``sink(name, mode, chunks)`` receives each member's data (as it is
    checked: a member refused after its data went to the sink must be undone
    by the caller, which ``seed`` does by dropping its staging directory)."""
    path = Path(path)
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
            return _read_members(path, tar, sink)
    except FileNotFoundError:
        raise BundleError(path, "does not exist") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise BundleError(path, f"is not a complete gzip'd tar (truncated or damaged: "
                                f"{e.__class__.__name__}: {str(e)[:120]})") from None


def _read_members(path, tar, sink):
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg():
        raise BundleError(path, f"its first member is not {MANIFEST}")
    if first.size > MAX_MANIFEST_BYTES:
        raise BundleError(path, f"its manifest is {first.size} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(tar.extractfile(first).read())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(path, f"its manifest is not JSON ({str(e)[:80]})") from None
    problems = manifest_problems(manifest)
    if problems:
        raise BundleError(path, "its manifest is invalid:\n    " + "\n    ".join(problems[:20]))
    files, seen = manifest["files"], set()
    while (member := tar.next()) is not None:
        name = member.name
        entry = files.get(name)
        if not member.isreg():
            raise BundleError(path, f"member {name!r:.120} is a {_kind(member)}: only regular "
                                    "files are accepted")
        if entry is None:
            raise BundleError(path, f"member {name!r:.120} is not in its manifest")
        if name in seen:
            raise BundleError(path, f"member {name!r:.120} appears twice")
        if member.size != entry["size"]:
            raise BundleError(path, f"member {name} is {member.size} bytes, its manifest says "
                                    f"{entry['size']}")
        seen.add(name)
        digest = hashlib.sha256()
        data = tar.extractfile(member)

        def chunks(data=data, digest=digest):
            for block in iter(lambda: data.read(_CHUNK), b""):
                digest.update(block)
                yield block

        if sink is None:
            for _ in chunks():
                pass
        else:
            try:
                sink(name, entry["mode"], chunks())
            except OSError as e:
                raise BundleError(path, f"cannot write {name}: {e.strerror or e}",
                                  hint="check the space and permissions where it is seeded"
                                  ) from None
        if digest.hexdigest() != entry["sha256"]:
            raise BundleError(path, f"member {name} does not match its sha256 in the manifest "
                                    "(tampered or damaged)")
    missing = sorted(set(files) - seen)
    if missing:
        raise BundleError(path, f"{len(missing)} file(s) of its manifest are missing, e.g. "
                                f"{missing[0]} (truncated?)")
    return manifest


def _kind(member):
    for test, kind in ((member.issym, "symlink"), (member.islnk, "hard link"),
                       (member.isdir, "directory"), (member.ischr, "character device"),
                       (member.isblk, "block device"), (member.isfifo, "FIFO")):
        if test():
            return kind
    return "special member"


def verify(path):
    """The manifest of the bundle at ``path`` once every member checked out."""
    return read(path)


# -- seeding ---------------------------------------------------------------------

def seed(path, target):
    """Replace directory ``target`` with the content of the bundle at ``path``,
    checked member by member, atomically; return the manifest. Refused (target
    untouched) on any problem."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.seed{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    _check_room(path, target.parent)
    staging.mkdir(mode=0o700)
    try:
        manifest = read(path, lambda name, mode, chunks: _write_member(staging, name, mode,
                                                                       chunks))
        syncfs(staging)
        swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _check_room(path, directory):
    """Refuse before writing when the bundle's manifest says it needs more than
    the free space (a small archive can claim terabytes)."""
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or first.size > MAX_MANIFEST_BYTES:
                return  # read() says what is wrong
            files = json.loads(tar.extractfile(first).read()).get("files")
            need = sum(e.get("size", 0) for e in files.values() if isinstance(e, dict)
                       and type(e.get("size")) is int)
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, AttributeError):
        return  # read() says what is wrong
    free = shutil.disk_usage(directory).free
    if need > free:
        raise BundleError(path, f"needs {need} bytes, {directory} has {free} free",
                          hint="free space there, or check the bundle (its manifest may lie)")


def _write_member(staging, name, mode, chunks):
    # The name was checked safe (relative, no ..) and every directory on the
    # way is one we made: nothing here can follow a link out of staging.
    dest = staging / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        for block in chunks:
            f.write(block)
    os.chmod(dest, mode)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def swap_in(staging, target):
    """Put ``staging`` at ``target``; the old content (if any) ends at ``staging``."""
    if not target.exists():
        os.rename(staging, target)
        fsync_dir(target.parent)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None and renameat2(_AT_FDCWD, bytes(staging), _AT_FDCWD,
                                           bytes(target), _RENAME_EXCHANGE) == 0:
        fsync_dir(target.parent)
        return
    if renameat2 is not None and ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS):
        err = ctypes.get_errno()
        raise OSError(err, f"cannot swap {staging} into {target}: {os.strerror(err)}")
    # No atomic exchange here: two renames (a crash in between leaves the old
    # content beside the target, named .<target>.old, and nothing at target).
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    os.rename(target, old)
    os.rename(staging, target)
    fsync_dir(target.parent)
    os.rename(old, staging)


# -- comparing -------------------------------------------------------------------

def drift(expected, actual):
    """File-by-file differences of two file tables (``manifest["files"]`` or
    ``scan()[0]``): ``[{"file", "change"}]`` with change missing, extra or
    changed (sha256 or mode)."""
    out = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if got is None:
            out.append({"file": name, "change": "missing"})
        elif want is None:
            out.append({"file": name, "change": "extra"})
        elif want["sha256"] != got["sha256"] or want["size"] != got["size"]:
            out.append({"file": name, "change": "changed"})
        elif want["mode"] != got["mode"]:
            out.append({"file": name, "change": "mode"})
    return out

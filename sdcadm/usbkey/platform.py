"""Platform images on a usbkey: ``platforms/<VERSION>/`` of one server.

A platform is the image a headnode boots the other servers from. ``sdcadm
platform install`` puts one on every headnode's usbkey (``procedures/
platform_install.py``); this module is what one server does with its own
usbkey directory:

    platforms/<VERSION>/platform.tgz     the file, byte for byte (mode 0644)
    platforms/<VERSION>/manifest.json    {"format", "version", "size", "sha256"}

VERSION is a UTC time stamp, ``20240101T000000Z``, checked strictly (it names
a directory, so nothing else gets through: no ``/``, no ``..``). The manifest
holds nothing that differs between headnodes (no time, no host name), so a
platform on every headnode is the same bytes on each: ``usbkey status`` sees
no drift, and a headnode bundle carries the platforms as any other part.

A platform file is trusted for nothing (``check_file``): one streaming pass
hashes it and reads it as a gzip'd tar whose members must be regular files or
directories (links of any kind, devices and FIFOs refused) with safe relative
names (no ``/x``, no ``..``), bounded in count, in size and in what they
expand to. ``add`` copies the file into a staging directory beside
``platforms/<VERSION>``, checks the *copy* (the original could change in
between), writes the manifest, flushes both, and swaps the staging directory
in with one rename: a refused or interrupted add leaves the usbkey as it was.
Adding a version already held with the same content changes nothing; a
damaged copy (its file no longer matches its manifest) is replaced; a version
held with other content is refused (a version names one file).
"""

import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import time
import zlib
from pathlib import Path

from sdcadm.errors import SdcadmError, UsageError
from sdcadm.fsutil import canonical_json, fsync_dir, safe_relative, sha256_file
from sdcadm.usbkey.bundle import swap_in

FORMAT = "sdcadm-platform/1"
PLATFORMS, FILE, MANIFEST = "platforms", "platform.tgz", "manifest.json"

MAX_FILE_BYTES = 16 << 30        # a SmartOS platform is ~0.5 GiB
MAX_EXPANDED_BYTES = 64 << 30    # what its members may add up to, unpacked
MAX_MEMBERS = 100_000
MAX_MANIFEST_BYTES = 64 << 10
MODE = 0o644
_CHUNK = 1 << 20
_VERSION = re.compile(r"\A[0-9]{8}T[0-9]{6}Z\Z")
_FILE_NAME = re.compile(r"\Aplatform-(.+)\.tgz\Z")
_HEX = frozenset("0123456789abcdef")
_GZIP_MAGIC = b"\x1f\x8b"


class PlatformError(SdcadmError):
    """A platform file or a usbkey's copy of one is unusable; nothing was changed."""


class InvalidVersion(UsageError):
    """A platform version is not a UTC time stamp like 20240101T000000Z."""


# -- names ------------------------------------------------------------------------

def check_version(version):
    """``version`` if it is a platform version (``20240101T000000Z``, a real
    time); InvalidVersion otherwise."""
    ok = isinstance(version, str) and _VERSION.match(version)
    if ok:
        try:
            time.strptime(version, "%Y%m%dT%H%M%SZ")
        except ValueError:
            ok = False
    if not ok:
        raise InvalidVersion(f"{str(version)[:80]!r} is not a platform version",
                             hint="a platform version is the UTC time stamp of its build, like "
                                  "20240101T000000Z (the VERSION of platform-VERSION.tgz)")
    return version


def version_in_name(path):
    """The VERSION of a file named ``platform-VERSION.tgz``, else None."""
    m = _FILE_NAME.match(Path(path).name)
    return m.group(1) if m else None


# -- checking a platform file ------------------------------------------------------

class _Hashing:
    """A read-only file object that hashes and counts what is read through it."""

    def __init__(self, raw, limit):
        self.raw, self.limit = raw, limit
        self.digest, self.size = hashlib.sha256(), 0

    def read(self, n=-1):
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        data = self.raw.read(n)
        self.size += len(data)
        if self.size > self.limit:
            raise _TooBig()
        self.digest.update(data)
        return data

    def drain(self):
        """Read the rest (what follows the tar's end), for the whole file's sha256."""
        while self.read(_CHUNK):
            pass


class _TooBig(Exception):
    pass


def check_file(path, *, label=None):
    """``{"size", "sha256", "members", "expanded"}`` of the platform file at
    ``path`` once it checked out; PlatformError saying what is wrong (named
    ``label``, default the path) otherwise."""
    label = label or str(path)

    def refuse(problem, hint="use the platform-VERSION.tgz file as it was built"):
        return PlatformError(f"platform file {label}: {problem}", hint=hint)

    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise refuse("does not exist", hint="check the path given to --from") from None
    except OSError as e:
        raise refuse(f"cannot be read ({e.strerror or e})",
                     hint="check its path and permissions") from None
    with raw:
        st = os.fstat(raw.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise refuse("is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise refuse(f"is {st.st_size} bytes, more than {MAX_FILE_BYTES}")
        if raw.read(2) != _GZIP_MAGIC:
            raise refuse("is not gzip'd (a platform is a gzip'd tar, platform-VERSION.tgz)")
        raw.seek(0)
        reader = _Hashing(raw, MAX_FILE_BYTES)
        try:
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:
                members, expanded = _check_members(tar, refuse)
            reader.drain()
        except _TooBig:
            raise refuse(f"grew past {MAX_FILE_BYTES} bytes while it was read") from None
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise refuse(f"is not a complete gzip'd tar (truncated or damaged: "
                         f"{e.__class__.__name__}: {str(e)[:120]})") from None
    return {"size": reader.size, "sha256": reader.digest.hexdigest(), "members": members,
            "expanded": expanded}


def _check_members(tar, refuse):
    count = expanded = files = 0
    for member in tar:  # streaming: each member's data is read (and so checked) in turn
        count += 1
        if count > MAX_MEMBERS:
            raise refuse(f"has more than {MAX_MEMBERS} members")
        name = _member_name(member.name)
        if name is None:
            raise refuse(f"member {member.name!r:.120} has an unsafe name (absolute, or "
                         "with a .. component)")
        if not (member.isreg() or member.isdir()):
            raise refuse(f"member {name!r:.120} is a {_kind(member)}: a platform holds "
                         "regular files and directories only")
        if member.isreg():
            files += 1
            expanded += member.size
            if expanded > MAX_EXPANDED_BYTES:
                raise refuse(f"expands to more than {MAX_EXPANDED_BYTES} bytes")
    if not files:
        raise refuse("holds no file")
    return count, expanded


def _member_name(name):
    """A member's name without ``./`` in front or ``/`` behind; "." for the
    archive's own top directory; None when it is unsafe."""
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if not name.startswith("/") else name
    if name in ("", "."):
        return "."
    return name if safe_relative(name) else None


def _kind(member):
    for test, kind in ((member.issym, "symlink"), (member.islnk, "hard link"),
                       (member.ischr, "character device"), (member.isblk, "block device"),
                       (member.isfifo, "FIFO")):
        if test():
            return kind
    return "special member"


# -- manifests -----------------------------------------------------------------------

def manifest_of(version, checked):
    """The manifest of ``version`` whose file ``check_file`` returned ``checked``."""
    return {"format": FORMAT, "version": version, "size": checked["size"],
            "sha256": checked["sha256"]}


def manifest_problems(doc, version):
    """What is wrong with a platform manifest read from ``platforms/<version>``."""
    if not isinstance(doc, dict):
        return [f"is not a JSON object (got {type(doc).__name__})"]
    problems = []
    if doc.get("format") != FORMAT:
        problems.append(f"format is {str(doc.get('format'))[:40]!r}, this sdcadm reads "
                        f"{FORMAT!r}")
    if doc.get("version") != version:
        problems.append(f"version is {str(doc.get('version'))[:40]!r}, its directory says "
                        f"{version!r}")
    sha, size = doc.get("sha256"), doc.get("size")
    if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _HEX):
        problems.append("sha256 is not 64 lower-case hex digits")
    if type(size) is not int or not 0 < size <= MAX_FILE_BYTES:
        problems.append(f"size is not a byte count up to {MAX_FILE_BYTES}")
    return problems


# -- what a usbkey holds ----------------------------------------------------------------

def held(usbkey, versions=None, *, verify=False):
    """``[{"version", "state", "size", "sha256", "problem"}]`` of the platforms
    under ``usbkey``: state ``ok`` (file and manifest agree; with ``verify``
    its sha256 too, else its size) or ``damaged`` (``problem`` says how).
    ``versions``: only these (each listed, ``missing`` when not held)."""
    top = Path(usbkey) / PLATFORMS
    try:
        names = sorted(n for n in os.listdir(top) if not n.startswith("."))
    except FileNotFoundError:
        names = []
    except NotADirectoryError:
        names = []
    if versions is not None:
        wanted = list(dict.fromkeys(versions))
        return [entry(top, v, verify=verify) if v in names
                else {"version": v, "state": "missing", "size": None, "sha256": None,
                      "problem": None} for v in wanted]
    return [entry(top, name, verify=verify) for name in names]


def entry(top, version, *, verify=False):
    """What ``platforms/<version>`` holds (see ``held``)."""
    out = {"version": version, "state": "damaged", "size": None, "sha256": None,
           "problem": None}
    if not _VERSION.match(version):
        out["problem"] = "its name is not a platform version"
        return out
    where = Path(top) / version
    try:
        if not stat.S_ISDIR(os.lstat(where).st_mode):
            out["problem"] = "is not a directory"
            return out
        doc = _read_manifest(where / MANIFEST)
    except FileNotFoundError:
        out["problem"] = f"has no {MANIFEST}"
        return out
    except (OSError, ValueError, UnicodeDecodeError) as e:
        out["problem"] = f"{MANIFEST} is unreadable ({str(e)[:80]})"
        return out
    problems = manifest_problems(doc, version)
    if problems:
        out["problem"] = f"{MANIFEST}: " + "; ".join(problems)
        return out
    out["size"], out["sha256"] = doc["size"], doc["sha256"]
    out["problem"] = _file_problem(where / FILE, doc, verify)
    if out["problem"] is None:
        out["state"] = "ok"
    return out


def _read_manifest(path):
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"{st.st_size} bytes, more than {MAX_MANIFEST_BYTES}")
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
        return json.loads(f.read(MAX_MANIFEST_BYTES + 1))


def _file_problem(path, doc, verify):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"has no {FILE}"
    if not stat.S_ISREG(st.st_mode):
        return f"{FILE} is not a regular file"
    if st.st_size != doc["size"]:
        return f"{FILE} is {st.st_size} bytes, its manifest says {doc['size']}"
    if verify:
        try:
            if sha256_file(path, follow_symlinks=False) != doc["sha256"]:
                return f"{FILE} does not match the sha256 of its manifest"
        except OSError as e:
            return f"{FILE} cannot be read ({e.strerror or e})"
    return None


# -- adding one ----------------------------------------------------------------------

def add(usbkey, version, source, *, sha256=None):
    """Put the platform file ``source`` on usbkey directory ``usbkey`` as
    ``version`` (checked, atomic; see the module docstring). ``sha256``: the
    digest it must have. Returns ``{"version", "size", "sha256", "changed",
    "replaced"}``; PlatformError (usbkey untouched) when refused."""
    check_version(version)
    top = Path(usbkey) / PLATFORMS
    current = held(usbkey, [version], verify=True)[0]
    if sha256 and current["state"] == "ok" and current["sha256"] == sha256:
        return _result(current, changed=False)
    try:
        checked = _add(top, version, source, sha256, current)
    except OSError as e:
        raise PlatformError(f"cannot write platform {version} under {top}: "
                            f"{e.strerror or e}",
                            hint="check the free space and permissions of the usbkey "
                                 "directory, then run the same command again") from None
    if checked is None:
        return _result(current, changed=False)
    return {"version": version, "size": checked["size"], "sha256": checked["sha256"],
            "changed": True, "replaced": current["state"] == "damaged"}


def _add(top, version, source, sha256, current):
    """The checked copy swapped in (its ``check_file``), or None: already held."""
    top.mkdir(parents=True, exist_ok=True)
    staging = top / f".{version}.add{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        os.chmod(staging, 0o755)
        _copy(source, staging / FILE)
        checked = check_file(staging / FILE, label=str(source))
        if sha256 and checked["sha256"] != sha256:
            raise PlatformError(f"platform file {source} has sha256 {checked['sha256']}, "
                                f"expected {sha256}",
                                hint="it changed or was damaged on the way; send it again")
        if current["state"] == "ok":
            if current["sha256"] == checked["sha256"]:
                return None
            raise conflict(top / version, current["sha256"], checked["sha256"])
        _write_new(staging / MANIFEST, canonical_json(manifest_of(version, checked)).encode())
        fsync_dir(staging)
        swap_in(staging, top / version)   # the old copy, if any, ends at staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return checked


def conflict(where, held_sha, new_sha):
    return PlatformError(
        f"{where} holds another platform of that version (sha256 {held_sha[:16]}..., the "
        f"file given has {new_sha[:16]}...): a version names one file",
        hint=f"check the file you gave; if the copy held is the wrong one, remove {where} "
             "and run the same command again")


def _result(current, changed):
    return {"version": current["version"], "size": current["size"],
            "sha256": current["sha256"], "changed": changed, "replaced": False}


def _copy(source, dest):
    try:
        src = open(source, "rb")
    except OSError as e:
        raise PlatformError(f"platform file {source} cannot be read ({e.strerror or e})",
                            hint="check the path given to --from and its permissions") from None
    with src:
        size = os.fstat(src.fileno()).st_size
        free = shutil.disk_usage(dest.parent).free
        if size > free:
            raise PlatformError(f"platform file {source} is {size} bytes, {dest.parent} has "
                                f"{free} free", hint="free space on the usbkey first")
        with _create(dest) as out:
            copied = 0
            for block in iter(lambda: src.read(_CHUNK), b""):
                copied += len(block)
                if copied > MAX_FILE_BYTES:
                    raise PlatformError(f"platform file {source} grew past {MAX_FILE_BYTES} "
                                        "bytes while it was copied")
                out.write(block)
            out.flush()
            os.fsync(out.fileno())


def _create(path):
    # In a staging directory this process made: O_EXCL|O_NOFOLLOW, no way out of it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, MODE)
    os.fchmod(fd, MODE)   # whatever the umask: every headnode's copy has the same mode
    return os.fdopen(fd, "wb")


def _write_new(path, data):
    with _create(path) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

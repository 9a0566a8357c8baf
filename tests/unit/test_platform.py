"""Platforms on a usbkey (`sdcadm platform ...`): versions, hostile files and
manifests, atomic and idempotent adds, the install plan, and the whole install
procedure between two usbkeys with a local shell standing in for SSH."""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from sdcadm.cli.output import format_bytes
from sdcadm.config import load_config
from sdcadm.errors import Unreachable
from sdcadm.model import Server
from sdcadm.procedures import ProcedureContext, ProcedureFailed, run_procedures
from sdcadm.procedures.console import QuietConsole
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.platform_plan import PlatformUnreachable, listing_rows, \
    plan_platform, refusal
from sdcadm.procedures.platform_install import PlatformInstall
from sdcadm.procedures.platforms import parse_held
from sdcadm.transport.local import LocalShell
from sdcadm.transport.push import PushMismatch, push_file
from sdcadm.usbkey import platform as pf
from sdcadm.usbkey.bundle import drift, scan
from tests.conftest import store_at

V = "20240101T000000Z"
V2 = "20240202T101010Z"


def tgz(path, members=None, *, raw=None):
    """A gzip'd tar at ``path``: ``members`` is [(TarInfo fields, data)]."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for fields, data in members or [({"name": f"platform-{V}/i86pc/amd64/boot_archive"},
                                         b"boot" * 100)]:
            info = tarfile.TarInfo(fields.pop("name"))
            for k, v in fields.items():
                setattr(info, k, v)
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    Path(path).write_bytes(raw if raw is not None else buf.getvalue())
    return Path(path)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- versions ---------------------------------------------------------------------------

@pytest.mark.parametrize("good", [V, "19991231T235959Z"])
def test_a_version_is_a_utc_time_stamp(good):
    assert pf.check_version(good) == good


@pytest.mark.parametrize("bad", ["", "latest", "../20240101T000000Z", "2024/0101T000000Z",
                                 "20240101T000000Z/..", "20240101T000000z", "20241301T000000Z",
                                 "20240101T250000Z", "20240101T000000Z\n", "20240101000000Z",
                                 " 20240101T000000Z", None, 20240101])
def test_anything_else_is_refused_as_a_usage_error(bad):
    with pytest.raises(pf.InvalidVersion, match="is not a platform version") as e:
        pf.check_version(bad)
    assert e.value.exit_code == 2 and "20240101T000000Z" in e.value.hint


def test_version_in_the_file_name():
    assert pf.version_in_name(f"/x/platform-{V}.tgz") == V
    assert pf.version_in_name("/x/boot.tgz") is None


# -- checking a platform file ----------------------------------------------------------------

def test_a_good_file_checks_out(tmp_path):
    path = tgz(tmp_path / "p.tgz", [({"name": "./", "type": tarfile.DIRTYPE}, None),
                                    ({"name": "./platform/root.password"}, b"x"),
                                    ({"name": "platform/i86pc/", "type": tarfile.DIRTYPE}, None),
                                    ({"name": "platform/i86pc/boot_archive"}, b"b" * 5000)])
    checked = pf.check_file(path)
    assert checked == {"size": path.stat().st_size, "sha256": sha(path), "members": 4,
                       "expanded": 5001}


@pytest.mark.parametrize("members, problem", [
    ([({"name": "/etc/passwd"}, b"x")], "has an unsafe name"),
    ([({"name": "platform/../../etc/passwd"}, b"x")], "has an unsafe name"),
    ([({"name": "../x"}, b"x")], "has an unsafe name"),
    ([({"name": "platform/link", "type": tarfile.SYMTYPE, "linkname": "/etc/shadow"}, None)],
     "is a symlink"),
    ([({"name": "platform/link", "type": tarfile.SYMTYPE, "linkname": "boot_archive"}, None)],
     "is a symlink"),
    ([({"name": "a"}, b"x"), ({"name": "b", "type": tarfile.LNKTYPE, "linkname": "a"}, None)],
     "is a hard link"),
    ([({"name": "dev", "type": tarfile.CHRTYPE}, None)], "is a character device"),
    ([({"name": "fifo", "type": tarfile.FIFOTYPE}, None)], "is a FIFO"),
    ([({"name": "platform", "type": tarfile.DIRTYPE}, None)], "holds no file"),
])
def test_hostile_members_are_refused_naming_them(tmp_path, members, problem):
    with pytest.raises(pf.PlatformError, match=problem):
        pf.check_file(tgz(tmp_path / "p.tgz", members))


def test_not_gzip_truncated_or_not_a_tar_is_refused(tmp_path):
    good = tgz(tmp_path / "good.tgz").read_bytes()
    for name, data, problem in (
            ("plain.tar", b"ustar" * 200, "is not gzip'd"),
            ("empty.tgz", b"", "is not gzip'd"),
            ("cut.tgz", good[:len(good) // 2], "is not a complete gzip'd tar"),
            ("garbage.tgz", gzip.compress(b"not a tar at all" * 64), "is not a complete gzip'd tar")):
        with pytest.raises(pf.PlatformError, match=problem):
            pf.check_file(tgz(tmp_path / name, raw=data))
    with pytest.raises(pf.PlatformError, match="does not exist"):
        pf.check_file(tmp_path / "nosuch.tgz")
    with pytest.raises(pf.PlatformError, match="cannot be read"):
        pf.check_file(tmp_path)
    with pytest.raises(pf.PlatformError, match="is not a regular file"):
        pf.check_file("/dev/null")


def test_size_bounds_hold_for_what_the_file_is_and_what_it_expands_to(tmp_path, monkeypatch):
    # A small archive may declare (and expand to) far more than it weighs.
    path = tgz(tmp_path / "p.tgz", [({"name": "a"}, b"\0" * 300_000),
                                    ({"name": "b"}, b"\0" * 300_000)])
    monkeypatch.setattr(pf, "MAX_EXPANDED_BYTES", 500_000)
    with pytest.raises(pf.PlatformError, match="expands to more than 500000 bytes"):
        pf.check_file(path)
    monkeypatch.setattr(pf, "MAX_FILE_BYTES", 100)
    with pytest.raises(pf.PlatformError, match="more than 100"):
        pf.check_file(path)
    monkeypatch.setattr(pf, "MAX_FILE_BYTES", 16 << 30)
    monkeypatch.setattr(pf, "MAX_EXPANDED_BYTES", 64 << 30)
    monkeypatch.setattr(pf, "MAX_MEMBERS", 1)
    with pytest.raises(pf.PlatformError, match="more than 1 members"):
        pf.check_file(path)


# -- manifests ---------------------------------------------------------------------------

GOOD = {"format": pf.FORMAT, "version": V, "size": 10, "sha256": "a" * 64}


@pytest.mark.parametrize("change, problem", [
    ({"format": "sdcadm-platform/9"}, "format is"),
    ({"version": V2}, "its directory says"),
    ({"version": "../../etc"}, "its directory says"),
    ({"sha256": "A" * 64}, "sha256 is not"),
    ({"sha256": "a" * 63}, "sha256 is not"),
    ({"sha256": None}, "sha256 is not"),
    ({"size": 1 << 60}, "size is not"),
    ({"size": -1}, "size is not"),
    ({"size": 0}, "size is not"),
    ({"size": True}, "size is not"),
    ({"size": "10"}, "size is not"),
])
def test_manifest_problems(change, problem):
    assert pf.manifest_problems(GOOD, V) == []
    problems = pf.manifest_problems({**GOOD, **change}, V)
    assert len(problems) == 1 and problem in problems[0], problems
    assert pf.manifest_problems([GOOD], V) == ["is not a JSON object (got list)"]


# -- a usbkey's platforms: add, held --------------------------------------------------------

def test_add_is_checked_atomic_deterministic_and_idempotent(tmp_path):
    src = tgz(tmp_path / f"platform-{V}.tgz")
    usbkey = tmp_path / "usbkey"
    result = pf.add(usbkey, V, src)
    assert result == {"version": V, "size": src.stat().st_size, "sha256": sha(src),
                      "changed": True, "replaced": False}
    where = usbkey / "platforms" / V
    assert sorted(os.listdir(usbkey / "platforms")) == [V]   # no staging left behind
    assert (where / "platform.tgz").read_bytes() == src.read_bytes()
    assert json.loads((where / "manifest.json").read_text()) == {
        "format": pf.FORMAT, "version": V, "size": src.stat().st_size, "sha256": sha(src)}
    assert {oct(p.stat().st_mode & 0o777) for p in where.iterdir()} == {"0o644"}
    mtimes = {p.name: p.stat().st_mtime_ns for p in where.iterdir()}
    assert pf.add(usbkey, V, src)["changed"] is False
    assert pf.add(usbkey, V, src, sha256=sha(src))["changed"] is False
    assert {p.name: p.stat().st_mtime_ns for p in where.iterdir()} == mtimes
    assert pf.held(usbkey, verify=True) == [{"version": V, "state": "ok", "size": src.stat().st_size,
                                             "sha256": sha(src), "problem": None}]
    # Two headnodes given the same file hold the same bytes: no usbkey drift.
    other = tmp_path / "other"
    old = os.umask(0o077)
    try:
        pf.add(other, V, src)
    finally:
        os.umask(old)
    assert drift(scan(usbkey)[0], scan(other)[0]) == []


def test_add_refuses_without_touching_the_usbkey(tmp_path):
    src = tgz(tmp_path / "a.tgz")
    usbkey = tmp_path / "usbkey"
    pf.add(usbkey, V, src)
    before = scan(usbkey)[0]
    other = tgz(tmp_path / "b.tgz", [({"name": "x"}, b"another build")])
    with pytest.raises(pf.PlatformError, match="holds another platform of that version"):
        pf.add(usbkey, V, other)
    with pytest.raises(pf.PlatformError, match="expected " + "0" * 64):
        pf.add(usbkey, V2, src, sha256="0" * 64)
    hostile = tgz(tmp_path / "h.tgz", [({"name": "../../etc/passwd"}, b"x")])
    with pytest.raises(pf.PlatformError, match="unsafe name"):
        pf.add(usbkey, V2, hostile)
    with pytest.raises(pf.InvalidVersion):
        pf.add(usbkey, "../../etc", src)
    assert scan(usbkey)[0] == before and sorted(os.listdir(usbkey / "platforms")) == [V]


def test_held_says_how_a_copy_is_damaged_and_add_repairs_it(tmp_path):
    src = tgz(tmp_path / "a.tgz")
    usbkey = tmp_path / "usbkey"
    pf.add(usbkey, V, src)
    where = usbkey / "platforms" / V
    data = bytearray((where / "platform.tgz").read_bytes())
    data[-1] ^= 0xFF   # same size, other content: only a sha256 check sees it
    (where / "platform.tgz").write_bytes(bytes(data))
    assert pf.held(usbkey)[0]["state"] == "ok"
    damaged = pf.held(usbkey, verify=True)[0]
    assert damaged["state"] == "damaged" and "does not match the sha256" in damaged["problem"]
    result = pf.add(usbkey, V, src)
    assert result["changed"] and result["replaced"]
    assert pf.held(usbkey, verify=True)[0]["state"] == "ok"

    (where / "platform.tgz").write_bytes(b"short")
    assert "is 5 bytes, its manifest says" in pf.held(usbkey)[0]["problem"]
    (where / "platform.tgz").unlink()
    (where / "platform.tgz").symlink_to(src)
    assert pf.held(usbkey)[0]["problem"] == "platform.tgz is not a regular file"
    (where / "manifest.json").write_text("{" * 100)
    assert "manifest.json is unreadable" in pf.held(usbkey)[0]["problem"]
    (where / "manifest.json").write_bytes(b" " * (pf.MAX_MANIFEST_BYTES + 1))
    assert "more than" in pf.held(usbkey)[0]["problem"]
    (where / "manifest.json").write_text(json.dumps({**GOOD, "size": 1 << 60}))
    assert "size is not" in pf.held(usbkey)[0]["problem"]
    (usbkey / "platforms" / "junk").mkdir()
    (usbkey / "platforms" / f".{V2}.add123").mkdir()   # an add under way: not listed
    listed = pf.held(usbkey)
    assert [(e["version"], e["state"]) for e in listed] == [(V, "damaged"), ("junk", "damaged")]
    assert pf.held(usbkey, [V2]) == [{"version": V2, "state": "missing", "size": None,
                                      "sha256": None, "problem": None}]
    assert pf.held(tmp_path / "nosuch") == []


# -- the plan -------------------------------------------------------------------------------

def test_plan_sends_where_missing_or_damaged_and_leaves_the_rest():
    ok = {"version": V, "state": "ok", "sha256": "a" * 64}
    plan = plan_platform(V, "a" * 64, 10, {
        "hn1": ok, "hn2": {"version": V, "state": "missing"},
        "hn3": {"version": V, "state": "damaged", "problem": "x"},
        "hn4": "hn4: connection refused"})
    assert (plan.send, plan.repair, plan.present) == (("hn2", "hn3"), ("hn3",), ("hn1",))
    assert plan.unreachable == (("hn4", "hn4: connection refused"),)
    refused = refusal(plan, skip_unreachable=False)
    assert isinstance(refused, PlatformUnreachable) and refused.exit_code == 3
    assert "hn4: hn4: connection refused" in refused.message and "--skip-unreachable" in refused.hint
    assert refusal(plan, skip_unreachable=True) is None

    clash = plan_platform(V, "a" * 64, 10, {"hn1": {**ok, "sha256": "b" * 64}, "hn2": "down"})
    refused = refusal(clash, skip_unreachable=True)
    assert type(refused) is NotViable and "hn1 holds another platform" in refused.message


def test_listing_rows_per_version_with_who_holds_and_boots_it():
    servers = [Server(uuid="u1", hostname="hn0", admin_ip="10.0.0.1", headnode=True,
                      boot_platform=V, current_platform="lab-1"),
               Server(uuid="u2", hostname="cn0", admin_ip="10.0.0.2", boot_platform=V,
                      current_platform=V)]
    ok = {"version": V, "state": "ok", "size": 10, "sha256": "a" * 64}
    rows = listing_rows({"hn0": [ok], "hn1": [{**ok, "version": V2}, {**ok, "state": "damaged"}],
                         "hn2": "unreachable"}, servers)
    assert [(r["version"], r["headnodes"], r["damaged"], r["missing"], r["boot"], r["current"])
            for r in rows] == [
        (V, ["hn0"], ["hn1"], [], ["cn0", "hn0"], ["cn0"]),
        (V2, ["hn1"], [], ["hn0"], [], []),
        ("lab-1", [], [], ["hn0", "hn1"], [], ["hn0"])]


@pytest.mark.parametrize("text", ['{"a": 1}', "[1]", '[{"version": 1, "state": "ok"}]',
                                  '[{"version": "x", "state": "evil"}]', "not json"])
def test_a_garbled_answer_from_a_headnode_is_not_believed(text):
    with pytest.raises(ValueError):
        parse_held(text)


# -- pushing a file -------------------------------------------------------------------------

class FakeShell:
    address = "10.0.0.2:22"

    def __init__(self, digest):
        self.digest, self.calls = digest, []

    def run(self, argv, input=None, check=True, timeout=None):
        self.calls.append(argv)
        from sdcadm.transport.interface import Result

        return Result(0, f"{self.digest}  {argv[-1]}\n" if argv[0] == "sha256sum" else "", "")

    def run_bytes(self, argv, input=None, check=True, timeout=None):
        self.calls.append(argv)
        input.read()
        return None


def test_push_file_writes_beside_checks_the_digest_there_then_renames(tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"platform bytes")
    shell = FakeShell(sha(src))
    assert push_file(shell, src, "/r/var/sdcadm/f.tgz", sha(src), mode="644") == 14
    assert shell.calls == [["mkdir", "-p", "/r/var/sdcadm"],
                           ["install", "-m", "644", "/dev/null", "/r/var/sdcadm/.f.tgz.tmp"],
                           ["dd", "of=/r/var/sdcadm/.f.tgz.tmp", "bs=1M", "status=none"],
                           ["sha256sum", "/r/var/sdcadm/.f.tgz.tmp"],
                           ["mv", "-f", "/r/var/sdcadm/.f.tgz.tmp", "/r/var/sdcadm/f.tgz"]]
    shell = FakeShell("0" * 64)
    with pytest.raises(PushMismatch, match="arrived with sha256 0000"):
        push_file(shell, src, "/r/f.tgz", sha(src))
    assert shell.calls[-1] == ["rm", "-f", "/r/.f.tgz.tmp"]


# -- the whole install, two usbkeys, a local shell for SSH ----------------------------------------

@pytest.fixture
def dc(tmp_path, monkeypatch):
    """hn0 (this headnode) and hn1 (another headnode), each a root under tmp_path;
    cn0 a compute node (never sent a platform)."""
    for name in list(os.environ):
        if name.startswith("SDCADM_"):
            monkeypatch.delenv(name)
    store_path = tmp_path / "dc.sqlite"
    store = store_at(store_path, create=True)
    for i, (host, headnode) in enumerate((("hn0", True), ("hn1", True), ("cn0", False))):
        (tmp_path / host / "usbkey").mkdir(parents=True)
        store.put_server(Server(uuid=f"00000000-0000-4000-8000-00000000000{i}", hostname=host,
                                admin_ip=f"10.0.0.{i + 1}", headnode=headnode, setup=True))
    cfg = tmp_path / "sdcadm.yaml"
    cfg.write_text(f"store:\n  path: {store_path}\nlog_dir: {tmp_path / 'logs'}\n"
                   f"root: {tmp_path / 'hn0'}\nhostname: hn0\n"
                   f"server_uuid: 00000000-0000-4000-8000-000000000000\n"
                   f"restore_data:\n  source_root_template: '{tmp_path}/{{hostname}}'\n")
    config = load_config(cfg, environ={})
    down = set()

    def transport_for(server):
        if server.hostname in down:
            raise Unreachable("connection refused")
        return LocalShell()

    yield {"dir": tmp_path, "config": config, "store": store, "down": down,
           "transport_for": transport_for}
    store.close()


def install(dc, *args, **kwargs):
    proc = PlatformInstall(*args, transport_for=dc["transport_for"],
                           remote_sdcadm=str(Path(sys.executable).parent / "sdcadm"), **kwargs)
    ctx = ProcedureContext(config=dc["config"], store=dc["store"])
    return proc, run_procedures([proc], ctx, yes=True, console=QuietConsole())


def test_install_from_a_file_reaches_every_headnode_once(dc):
    src = tgz(dc["dir"] / f"platform-{V}.tgz")
    dc["down"].add("hn1")
    with pytest.raises(PlatformUnreachable, match="hn1: connection refused"):
        install(dc, V, str(src))
    assert not (dc["dir"] / "hn0" / "usbkey" / "platforms").exists()   # nothing changed

    dc["down"].clear()
    proc, result = install(dc, V, str(src))
    assert result.state == "succeeded", result.error
    assert proc.summarize()[1:] == [
        f"hn0 (here): add it to {dc['dir'] / 'hn0' / 'usbkey'} from {src}",
        "hn1: send it over SSH, check its sha256 there, add it to its usbkey"]
    for host in ("hn0", "hn1"):
        copy = dc["dir"] / host / "usbkey" / "platforms" / V / "platform.tgz"
        assert sha(copy) == sha(src), host
    assert not (dc["dir"] / "cn0" / "usbkey" / "platforms").exists()
    assert not (dc["dir"] / "hn1" / "var" / "sdcadm" / f"platform-{V}.tgz").exists()
    assert drift(scan(dc["dir"] / "hn0" / "usbkey")[0], scan(dc["dir"] / "hn1" / "usbkey")[0]) == []

    proc, again = install(dc, V)   # no --from: this headnode holds it now
    assert again.state == "nothing-to-do"
    assert proc.nothing_to_do.startswith("already there on every headnode (hn0, hn1)")


def test_install_repairs_a_damaged_copy_and_refuses_what_it_cannot_do(dc):
    with pytest.raises(NotViable, match="hn0 does not hold platform") as e:
        install(dc, V)
    assert f"--from platform-{V}.tgz" in e.value.hint
    src = tgz(dc["dir"] / f"platform-{V}.tgz")
    with pytest.raises(NotViable, match=f"is named for platform {V}, not {V2}"):
        install(dc, V2, str(src))
    install(dc, V, str(src))
    (dc["dir"] / "hn1" / "usbkey" / "platforms" / V / "platform.tgz").write_bytes(b"x" * 10)
    proc, result = install(dc, V)
    assert result.state == "succeeded" and proc.plan.repair == ("hn1",)
    assert sha(dc["dir"] / "hn1" / "usbkey" / "platforms" / V / "platform.tgz") == sha(src)
    other = tgz(dc["dir"] / "other.tgz", [({"name": "x"}, b"another build")])
    with pytest.raises(pf.PlatformError, match="holds another platform of that version"):
        install(dc, V, str(other))


# -- the commands ---------------------------------------------------------------------------

def cli(*args):
    from click.testing import CliRunner

    from sdcadm.cli.main import cli as group

    return CliRunner().invoke(group, list(args))


def test_add_and_held_on_this_servers_usbkey(tmp_path):
    src = tgz(tmp_path / f"platform-{V}.tgz")
    usbkey = str(tmp_path / "usbkey")
    added = cli("platform", "add", V, str(src), "--dir", usbkey)
    assert added.exit_code == 0, added.output
    assert added.output == (f"{usbkey}: platform {V} added ({src.stat().st_size} bytes, sha256 "
                            f"{sha(src)[:16]}...)\n")
    again = cli("platform", "add", V, str(src), "--dir", usbkey, "-j")
    assert json.loads(again.output)["changed"] is False
    held = cli("platform", "held", "--dir", usbkey, "--verify", V, V2)
    assert held.output.splitlines() == [
        f"{V}    ok        {src.stat().st_size:>12}  {sha(src)[:16]}",
        f"{V2}    missing              -  -"]
    bad = cli("platform", "held", "--dir", usbkey, "../etc")
    assert bad.exit_code == 2 and "is not a platform version" in bad.output
    bad = cli("platform", "install", "latest", "-y")
    assert bad.exit_code == 2 and "is not a platform version" in bad.output


def test_ls_shows_who_holds_and_boots_each_platform(dc, monkeypatch):
    src = tgz(dc["dir"] / f"platform-{V}.tgz")
    pf.add(dc["dir"] / "hn0" / "usbkey", V, src)
    store = dc["store"]
    hn1 = store.find_server("hn1")
    store.put_server(Server(**{**hn1.__dict__, "headnode": False, "boot_platform": V}))
    cn0 = store.find_server("cn0")
    store.put_server(Server(**{**cn0.__dict__, "boot_platform": V2, "current_platform": V2}))
    monkeypatch.setenv("SDCADM_CONFIG", str(dc["dir"] / "sdcadm.yaml"))
    listed = cli("platform", "ls")
    assert listed.exit_code == 0, listed.output
    size = format_bytes(src.stat().st_size)
    assert listed.output.splitlines() == [
        "VERSION           SIZE    HEADNODES    MISSING    BOOT    CURRENT",
        f"{V}  {size:<6}  hn0          -          hn1     -",
        f"{V2}  -       -            hn0        cn0     cn0"]


def test_a_failed_install_finishes_by_running_the_same_command_again(dc):
    src = tgz(dc["dir"] / f"platform-{V}.tgz")
    blocker = dc["dir"] / "hn1" / "usbkey" / "platforms"
    blocker.write_text("not a directory")    # hn1's usbkey cannot take it
    with pytest.raises(ProcedureFailed, match="cannot write platform") as e:
        install(dc, V, str(src))
    assert "run the same command again" in e.value.hint
    assert sha(dc["dir"] / "hn0" / "usbkey" / "platforms" / V / "platform.tgz") == sha(src)
    blocker.unlink()
    proc, result = install(dc, V, str(src))
    assert result.state == "succeeded" and result.resumed
    assert [s["name"] for s in result.procedures[0]["steps"]] == [f"send platform {V} to hn1"]
    assert sha(dc["dir"] / "hn1" / "usbkey" / "platforms" / V / "platform.tgz") == sha(src)

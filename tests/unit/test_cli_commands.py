"""The CLI commands against a real temporary sqlite store and config file."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click
import pytest
from click.testing import CliRunner

from sdcadm.cli.main import COMMANDS, cli
from sdcadm.model import Instance, Server, Service
from tests.conftest import FakeClock, heartbeat_at, isolate_cli, store_at

NOW = 1_700_000_000.0
HN0, HN1, CN0 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
SAPI0, BINDER0, BINDER1, MORAY0 = (f"10000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3, 4))
IMAGE = "20000000-0000-4000-8000-000000000001"


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        code = self.status if self.path == "/ping" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def _http_server(status):
    handler = type(f"Handler{status}", (_Handler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server


@pytest.fixture
def http_ports():
    ok, failing = _http_server(200), _http_server(500)
    yield ok.server_address[1], failing.server_address[1]
    for server in (ok, failing):
        server.shutdown()
        server.server_close()


@pytest.fixture
def dc(tmp_path, monkeypatch, http_ports):
    """hn0 (primary, up), hn1 (headnode, fenced, silent), cn0 (not set up,
    boot != current platform, up); sapi0 and binder0 on hn0, binder1 on hn1,
    moray0 (stopped) on cn0. Clock frozen at NOW."""
    ok_port, failing_port = http_ports
    path = tmp_path / "dc.sqlite"
    clock = FakeClock(NOW)
    store = store_at(path, clock=clock, create=True)
    store.put_server(Server(uuid=HN0, hostname="hn0", admin_ip="127.0.0.1", headnode=True,
                            boot_platform="P1", current_platform="P1", agent_port=5309))
    store.put_server(Server(uuid=HN1, hostname="hn1", admin_ip="127.0.0.2", headnode=True,
                            boot_platform="P1", current_platform="P1", fenced=True))
    store.put_server(Server(uuid=CN0, hostname="cn0", admin_ip="127.0.0.3", setup=False,
                            boot_platform="P2", current_platform="P1"))
    heartbeat_at(store, clock, HN0, NOW - 2)
    heartbeat_at(store, clock, HN1, NOW - 100)
    heartbeat_at(store, clock, CN0, NOW - 3)
    store.put_service(Service(name="sapi", image=IMAGE))
    for uuid, alias, service, server, port, state in [
            (SAPI0, "sapi0", "sapi", HN0, ok_port, "running"),
            (BINDER0, "binder0", "binder", HN0, failing_port, "running"),
            (BINDER1, "binder1", "binder", HN1, ok_port, "running"),
            (MORAY0, "moray0", "moray", CN0, ok_port, "stopped")]:
        store.create_instance(Instance(uuid=uuid, alias=alias, service=service, server_uuid=server,
                                       image=IMAGE, admin_ip="127.0.0.1", port=port, state=state))
    store.move_instance(BINDER0, 1)  # generation 2
    store.close()
    config = tmp_path / "sdcadm.yaml"
    config.write_text(f"store:\n  path: {path}\nagent:\n  heartbeat_timeout: 15\n")
    isolate_cli(monkeypatch, config, NOW)
    return tmp_path


def sdcadm(*args):
    return CliRunner().invoke(cli, list(args))


# -- server ls ---------------------------------------------------------------------

def test_server_ls_table(dc):
    result = sdcadm("server", "ls")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "HOSTNAME    UUID                                  STATUS       FLAGS    ADMIN-IP\n"
        f"cn0         {CN0}  running      ---B-    127.0.0.3\n"
        f"hn0         {HN0}  running      SHP--    127.0.0.1\n"
        f"hn1         {HN1}  unreachable  SH--F    127.0.0.2\n")
    assert result.stderr == ""


def test_server_ls_no_header_subset_and_descending_sort(dc):
    result = sdcadm("server", "ls", "-H", "-o", "hostname,status", "-s", "-hostname")
    assert result.stdout == "hn1\tunreachable\nhn0\trunning\ncn0\trunning\n"


def test_server_ls_multiple_sort_keys(dc):
    result = sdcadm("server", "ls", "-H", "-o", "hostname", "-s", "status,-hostname")
    assert result.stdout == "hn0\ncn0\nhn1\n"


def test_server_ls_long(dc):
    result = sdcadm("server", "ls", "-l", "-o", "hostname,heartbeat_age,boot_platform")
    assert result.stdout.splitlines()[1:] == [
        "cn0         3s               P2", "hn0         2s               P1",
        "hn1         1m40s            P1"]
    long = sdcadm("server", "ls", "-l").stdout.splitlines()[0].split()
    assert long == ["HOSTNAME", "UUID", "STATUS", "FLAGS", "ADMIN-IP", "BOOT-PLATFORM",
                    "CURRENT-PLATFORM", "HEARTBEAT-AGE"]


def test_server_ls_json(dc):
    result = sdcadm("server", "ls", "-j")
    data = json.loads(result.stdout)
    assert [s["hostname"] for s in data] == ["cn0", "hn0", "hn1"]
    hn0 = data[1]
    for key in ("hostname", "uuid", "status", "flags", "admin_ip", "headnode", "agent_url",
                "fenced", "boot_platform", "current_platform", "last_heartbeat"):
        assert key in hn0
    assert hn0["agent_url"] == "http://127.0.0.1:5309" and hn0["headnode"] is True
    assert hn0["primary"] is True and hn0["heartbeat_age"] == 2.0
    assert data[0]["agent_url"] is None


def test_primary_without_sapi_is_first_headnode_by_hostname(dc):
    store = store_at(dc / "dc.sqlite")
    store.delete_instance(SAPI0)
    store.close()
    flags = sdcadm("server", "ls", "-H", "-o", "hostname,flags").stdout
    assert flags == "cn0\t---B-\nhn0\tSHP--\nhn1\tSH--F\n"


def test_unknown_field_is_usage_error(dc):
    result = sdcadm("server", "ls", "-o", "hostname,nope")
    assert result.exit_code == 2
    assert "unknown field 'nope'" in result.stderr and "valid fields: hostname, uuid" in result.stderr
    assert result.stdout == ""


# -- insts ---------------------------------------------------------------------------

def test_insts_table(dc):
    result = sdcadm("insts")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "INSTANCE                              SERVICE    HOSTNAME    ALIAS    STATE    GEN\n"
        f"{BINDER0}  binder     hn0         binder0  running  2\n"
        f"{BINDER1}  binder     hn1         binder1  running  1\n"
        f"{MORAY0}  moray      cn0         moray0   stopped  1\n"
        f"{SAPI0}  sapi       hn0         sapi0    running  1\n")


@pytest.mark.parametrize("filters, aliases", [
    (["binder"], ["binder0", "binder1"]),
    (["svc=binder", "server=hn0"], ["binder0"]),
    ([f"server={HN1}"], ["binder1"]),
    (["server=hn0"], ["binder0", "sapi0"]),
    (["sapi", "moray"], ["moray0", "sapi0"]),
    (["alias=moray0"], ["moray0"]),
    (["state=stopped"], ["moray0"]),
    ([SAPI0], ["sapi0"]),
    ([f"uuid={BINDER1}"], ["binder1"]),
    (["vmapi"], []),  # in the catalog, no instances
])
def test_insts_filters(dc, filters, aliases):
    result = sdcadm("insts", "-H", "-o", "alias", *filters)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == aliases


def test_insts_json_keys(dc):
    data = json.loads(sdcadm("insts", "-j", "sapi").stdout)
    assert len(data) == 1
    sapi = data[0]
    for key in ("uuid", "alias", "service", "server_uuid", "hostname", "state", "generation",
                "url", "admin_ip"):
        assert key in sapi
    assert sapi["hostname"] == "hn0" and sapi["server_uuid"] == HN0
    assert sapi["url"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("args, out", [
    (["-o", "alias,gen", "-s", "-gen,alias"], "binder0\t2\nbinder1\t1\nmoray0\t1\nsapi0\t1\n"),
    (["-o", "alias,hostname", "-s", "hostname,alias"],
     "moray0\tcn0\nbinder0\thn0\nsapi0\thn0\nbinder1\thn1\n"),
    (["-o", "alias,params,delegate_dataset", "state=running", "server=hn0"],
     "binder0\t{}\tfalse\nsapi0\t{}\tfalse\n"),
    (["-o", "alias", "-s", "server_uuid,alias", "binder", "moray"],
     "\n".join(sorted(["binder0", "binder1", "moray0"],
                      key=lambda a: ({"binder0": HN0, "binder1": HN1, "moray0": CN0}[a], a))) + "\n"),
])
def test_insts_fields_sorts_and_filters_together(dc, args, out):
    """The listing is read by column: fields, sorts and filters that need
    columns not shown (server_uuid for hostname, state for a filter) still work."""
    result = sdcadm("insts", "-H", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == out


def test_insts_json_is_every_field_of_every_record(dc):
    rows = json.loads(sdcadm("insts", "-j").stdout)
    store = store_at(dc / "dc.sqlite")
    hostnames = {s.uuid: s.hostname for s in store.list_servers()}
    assert rows == [dict(i.__dict__, hostname=hostnames[i.server_uuid], url=i.url)
                    for i in store.list_instances()]
    assert json.loads(sdcadm("insts", "-j", "-o", "url,alias", "moray").stdout) == [
        {"url": store.get_instance(MORAY0).url, "alias": "moray0"}]


def test_insts_unknown_service(dc):
    result = sdcadm("insts", "nosuchsvc")
    assert result.exit_code == 1
    assert "sdcadm: error: unknown service 'nosuchsvc'" in result.stderr
    assert "hint: known services:" in result.stderr and "sapi" in result.stderr
    assert "Traceback" not in result.output


def test_insts_unknown_server(dc):
    result = sdcadm("insts", "server=hn9")
    assert result.exit_code == 1
    assert "sdcadm: error: no server named 'hn9'" in result.stderr
    assert "known servers: cn0, hn0, hn1" in result.stderr


@pytest.mark.parametrize("arg", ["uuid=nope", "image=ABC", "server_uuid=12"])
def test_insts_bad_uuid_is_usage_error(dc, arg):
    result = sdcadm("insts", arg)
    assert result.exit_code == 2
    assert "is not a UUID" in result.stderr


def test_insts_unknown_filter_key(dc):
    result = sdcadm("insts", "colour=red")
    assert result.exit_code == 2
    assert "unknown filter 'colour'" in result.stderr


# -- svcs ----------------------------------------------------------------------------

def test_svcs(dc):
    result = sdcadm("svcs", "-H")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "binder\ttrue\ttrue\t2\ttrue" in lines
    assert "sapi\tfalse\ttrue\t1\ttrue" in lines
    assert [line.split("\t")[0] for line in lines] == sorted(line.split("\t")[0] for line in lines)
    header = sdcadm("svcs").stdout.splitlines()[0].split()
    assert header == ["NAME", "HA", "DD", "INSTANCES", "CRITICAL"]
    data = json.loads(sdcadm("svcs", "-j").stdout)
    assert {"name", "ha", "delegate_dataset", "instances", "critical"} <= set(data[0])


# -- check-health ----------------------------------------------------------------------

def test_check_health_all_healthy(dc):
    result = sdcadm("check-health", "sapi")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("INSTANCE                              SERVICE    HOSTNAME    ALIAS    HEALTHY\n"
                             f"{SAPI0}  sapi       hn0         sapi0    true\n")


def test_check_health_failures(dc):
    result = sdcadm("check-health")
    assert result.exit_code == 1
    table, blocks = result.stdout.split("\n\n")
    assert table.splitlines()[1:] == [
        f"{BINDER0}  binder     hn0         binder0  false",
        f"{BINDER1}  binder     hn1         binder1  false",
        f"{MORAY0}  moray      cn0         moray0   false",
        f"{SAPI0}  sapi       hn0         sapi0    true"]
    lines = blocks.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"instance binder0 ({BINDER0}) on hn0: HTTP 500")
    assert lines[1] == (f"instance binder1 ({BINDER1}) on hn1: its server hn1 is fenced")
    assert lines[2] == (f"instance moray0 ({MORAY0}) on cn0: its state is stopped, not running")
    assert "sdcadm: error: 3 of 4 instances are not healthy" in result.stderr


def test_check_health_quiet_and_json(dc):
    quiet = sdcadm("check-health", "-q", "binder")
    assert quiet.exit_code == 1
    assert quiet.stdout.splitlines()[0].startswith("instance binder0")
    assert len(quiet.stdout.splitlines()) == 2
    data = json.loads(sdcadm("check-health", "-j").stdout)
    by_alias = {r["alias"]: r for r in data}
    assert by_alias["sapi0"]["healthy"] is True and by_alias["sapi0"]["error"] is None
    assert by_alias["binder0"]["healthy"] is False and "HTTP 500" in by_alias["binder0"]["error"]


def test_check_health_unreachable_server_and_refused(dc):
    store = store_at(dc / "dc.sqlite")
    store.set_fenced(HN1, False, store.get_server(HN1).generation)
    sapi = store.get_instance(SAPI0)
    store.move_instance(SAPI0, sapi.generation, port=1)  # nothing listens on port 1
    store.close()
    data = {r["alias"]: r for r in json.loads(sdcadm("check-health", "-j").stdout)}
    assert data["binder1"]["error"] == "its server hn1 is unreachable (last heartbeat 100s ago)"
    assert not data["sapi0"]["healthy"] and "127.0.0.1:1" in data["sapi0"]["error"]


def test_check_health_unknown_service(dc):
    result = sdcadm("check-health", "nosuch")
    assert result.exit_code == 1 and "unknown service 'nosuch'" in result.stderr


# -- configuration and store problems --------------------------------------------------

def test_missing_store_is_a_clear_error(dc, tmp_path, monkeypatch):
    config = tmp_path / "other.yaml"
    config.write_text(f"store:\n  path: {tmp_path}/absent/dc.sqlite\n")
    monkeypatch.setenv("SDCADM_CONFIG", str(config))
    result = sdcadm("server", "ls")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"sdcadm: error: the DC store {tmp_path}/absent/dc.sqlite "
                                    "does not exist\n  hint: ")
    assert "Traceback" not in result.output


def test_malformed_config_names_the_key(dc, tmp_path, monkeypatch):
    config = tmp_path / "bad.yaml"
    config.write_text("store:\n  pathh: /x\nagent:\n  heartbeat_timeout: soon\n")
    monkeypatch.setenv("SDCADM_CONFIG", str(config))
    result = sdcadm("insts")
    assert result.exit_code == 1
    assert "store.pathh" in result.stderr and "agent.heartbeat_timeout" in result.stderr
    assert "Traceback" not in result.output


def test_config_option_and_invalid_yaml(dc, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("store: [unclosed\n")
    result = sdcadm("--config", str(config), "server", "ls")
    assert result.exit_code == 1 and "not valid YAML" in result.stderr


def test_unknown_sdcadm_env_var_is_reported(dc, monkeypatch):
    monkeypatch.setenv("SDCADM_DEBUG", "1")
    result = sdcadm("server", "ls")
    assert result.exit_code == 1 and "SDCADM_DEBUG is not a configuration key" in result.stderr


# -- main(): exit codes -----------------------------------------------------------------

def test_debug_shows_traceback_for_errors(dc):
    result = sdcadm("--debug", "insts", "server=hn9")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "sdcadm: error: no server named" in result.stderr


def test_usage_errors_exit_2(dc):
    result = sdcadm("server", "ls", "--bogus")
    assert result.exit_code == 2
    assert "sdcadm: error: No such option" in result.stderr
    assert "hint: see 'sdcadm server ls --help'" in result.stderr
    assert sdcadm("nosuchcommand").exit_code == 2
    assert sdcadm("server").exit_code == 2  # group without subcommand: help, exit 2


def test_keyboard_interrupt_exits_130(dc, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("sdcadm.cli.server.server_columns", interrupted)
    assert sdcadm("server", "ls").exit_code == 130


def test_internal_error_is_one_line_without_debug(dc, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr("sdcadm.cli.server.server_columns", broken)
    result = sdcadm("server", "ls")
    assert result.exit_code == 1
    assert "sdcadm: error: internal error: RuntimeError: boom" in result.stderr
    assert "Traceback" not in result.stderr


def test_version():
    from sdcadm import __version__

    result = sdcadm("--version")
    assert result.exit_code == 0 and result.stdout == f"sdcadm {__version__}\n"


# -- every command is documented ----------------------------------------------------------

def _walk(command, path):
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from _walk(command.get_command(ctx, name), path + [name])


def test_every_registered_command_exists():
    ctx = click.Context(cli)
    for name in COMMANDS:
        assert cli.get_command(ctx, name) is not None, name


def test_every_command_and_option_has_help():
    missing = []
    for path, command in _walk(cli, ["sdcadm"]):
        if not (command.help or command.short_help):
            missing.append(" ".join(path))
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert missing == []


def test_help_runs_for_every_command():
    for path, _ in _walk(cli, ["sdcadm"]):
        result = sdcadm(*path[1:], "--help")
        assert result.exit_code == 0, (path, result.output)
        assert result.stdout.startswith("Usage: sdcadm")


# -- the installed binary (console script -> main()) ---------------------------------------

def test_installed_binary_output_and_exit_codes(dc):
    import os
    import subprocess
    import sys
    from pathlib import Path

    binary = Path(sys.executable).with_name("sdcadm")
    if not binary.exists():
        pytest.skip("the sdcadm console script is not installed (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    env["SDCADM_CONFIG"] = str(dc / "sdcadm.yaml")

    def run(*args):
        return subprocess.run([str(binary), *args], capture_output=True, text=True, env=env,
                              timeout=60)

    ok = run("insts", "-H", "-o", "alias")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "binder0\nbinder1\nmoray0\nsapi0\n", "")
    bad = run("insts", "uuid=nope")
    assert bad.returncode == 2 and bad.stderr.startswith("sdcadm: error: ") and not bad.stdout
    env["SDCADM_CONFIG"] = str(dc / "absent.yaml")
    missing = run("server", "ls")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def test_restore_without_a_reachable_store_says_what_to_do(tmp_path):
    from click.testing import CliRunner

    from sdcadm.cli.main import cli

    cfg = tmp_path / "sdcadm.yaml"
    cfg.write_text(f"store:\n  path: {tmp_path / 'gone.sqlite'}\n"
                   "server_uuid: 11111111-1111-4111-8111-111111111111\n")
    result = CliRunner().invoke(cli, ["service", "restore", "--all", "--dead", "hn0", "-y"],
                                env={"SDCADM_CONFIG": str(cfg)})
    assert result.exit_code == 1
    assert "cannot restore: the DC store is unreachable" in result.output
    assert "store.path" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "gone.sqlite").exists()

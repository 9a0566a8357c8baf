"""`sdcadm dc init` creates the DC once, on a real sqlite store; anything
else is refused and changes nothing."""

import json

import pytest
from click.testing import CliRunner

from sdcadm.cli.main import cli
from sdcadm.model import ADMIN_NETWORK, Server
from tests.conftest import isolate_cli, store_at

ME = "00000000-0000-4000-8000-0000000000a1"
OTHER = "00000000-0000-4000-8000-0000000000b2"


@pytest.fixture
def here(tmp_path, monkeypatch):
    config = tmp_path / "sdcadm.yaml"
    config.write_text(f"server_uuid: {ME}\nhostname: hn0\nstore:\n  path: {tmp_path / 'dc.sqlite'}\n"
                      "agent:\n  listen: 10.9.9.2\n  port: 5310\n")
    isolate_cli(monkeypatch, config)
    return tmp_path


def sdcadm(*args):
    return CliRunner().invoke(cli, list(args))


def contents(here):
    store = store_at(here / "dc.sqlite")
    try:
        return store.list_servers(), store.get_network(ADMIN_NETWORK), store.revision()
    finally:
        store.close()


def test_init_then_again(here):
    result = sdcadm("dc", "init", "--admin-net", "10.9.9.0/24", "-j")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == ["network", "address", "server"]
    servers, network, revision = contents(here)
    assert [(s.hostname, s.admin_ip, s.headnode, s.setup, s.agent_port) for s in servers] == [
        ("hn0", "10.9.9.2", True, True, 5310)]
    assert network.cidr == "10.9.9.0/24" and network.allocations == {"10.9.9.2": ME}
    again = sdcadm("dc", "init", "--admin-net", "10.9.9.0/24")
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert contents(here)[2] == revision


def test_another_dc_or_network_is_refused_unchanged(here):
    assert sdcadm("dc", "init", "--admin-net", "10.9.9.0/24").exit_code == 0
    before = contents(here)
    other = sdcadm("dc", "init", "--admin-net", "10.8.0.0/16", "--admin-ip", "10.8.0.2")
    assert other.exit_code == 1 and "admin network is 10.9.9.0/24" in other.stderr
    store = store_at(here / "dc.sqlite")
    store.put_server(Server(uuid=OTHER, hostname="hn1", admin_ip="10.9.9.3"))
    store.close()
    before = contents(here)
    taken = sdcadm("dc", "init", "--admin-net", "10.9.9.0/24")
    assert taken.exit_code == 1 and "already holds a DC (servers hn1)" in taken.stderr
    assert contents(here) == before


@pytest.mark.parametrize("args, message", [
    (["--admin-net", "10.9.9.1/24"], "is not a network"),
    (["--admin-net", "banana"], "is not a network"),
    (["--admin-net", "10.9.9.0/24", "--admin-ip", "10.1.1.1"], "is not a host address"),
    (["--admin-net", "10.9.9.0/24", "--admin-ip", "10.9.9.255"], "is not a host address"),
    (["--admin-net", "10.9.9.0/24", "--admin-ip", "nope"], "is not an address"),
    (["--admin-net", "10.9.9.0/24", "--reserve", "10.9.8.1"], "not a host address"),
    (["--admin-net", "10.9.9.0/24", "--reserve", "10.9.9.0"], "not a host address"),
    (["--admin-net", "10.9.9.0/24", "--reserve", "gateway"], "is not an address"),
    (["--admin-net", "10.9.9.0/24", "--reserve", "10.9.9.2"], "own admin address"),
])
def test_bad_arguments_are_usage_errors_and_create_nothing(here, args, message):
    result = sdcadm("dc", "init", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (here / "dc.sqlite").exists()


def test_a_config_without_this_servers_identity_is_refused(tmp_path, monkeypatch):
    config = tmp_path / "sdcadm.yaml"
    config.write_text(f"store:\n  path: {tmp_path / 'dc.sqlite'}\n")
    isolate_cli(monkeypatch, config)
    result = sdcadm("dc", "init", "--admin-net", "10.9.9.0/24")
    assert result.exit_code == 1 and "'server_uuid' is required" in result.stderr
    assert not (tmp_path / "dc.sqlite").exists()


def test_reserved_addresses_are_never_handed_out(here):
    result = sdcadm("dc", "init", "--admin-net", "10.9.9.0/30", "--reserve", "10.9.9.1", "-j")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == ["network", "address", "reserve", "server"]
    _, network, revision = contents(here)
    assert network.reservations == {"10.9.9.1": "reserved by dc init"}
    again = sdcadm("dc", "init", "--admin-net", "10.9.9.0/30", "--reserve", "10.9.9.1")
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert contents(here)[2] == revision
    store = store_at(here / "dc.sqlite")
    try:   # a /30 has two host addresses: this headnode's and the reserved one
        with pytest.raises(Exception, match="no free address"):
            store.allocate_ip(ADMIN_NETWORK, OTHER)
    finally:
        store.close()


def test_reserving_an_allocated_address_is_refused_unchanged(here):
    assert sdcadm("dc", "init", "--admin-net", "10.9.9.0/24").exit_code == 0
    store = store_at(here / "dc.sqlite")
    store.allocate_ip(ADMIN_NETWORK, OTHER, "10.9.9.7")
    store.close()
    before = contents(here)
    result = sdcadm("dc", "init", "--admin-net", "10.9.9.0/24", "--reserve", "10.9.9.7")
    assert result.exit_code == 1 and "allocated in the DC already" in result.stderr
    assert contents(here) == before
    later = sdcadm("dc", "init", "--admin-net", "10.9.9.0/24", "--reserve", "10.9.9.8", "-j")
    assert later.exit_code == 0 and json.loads(later.stdout)["done"] == ["reserve"]
    assert contents(here)[1].reservations == {"10.9.9.8": "reserved by dc init"}

"""Self-registration of a new server by its agent (sdcadm/agent/register.py), on a real store."""

import threading

import pytest

from sdcadm.agent.register import NotRegistrable, Registration, admin_address, new_server_record, \
    register
from sdcadm.config import config_from
from sdcadm.errors import Conflict, NotFound
from sdcadm.model import ADMIN_NETWORK, Network, Server, server_flags
from tests.conftest import store_at

ME = "5e5e5e5e-0000-4000-8000-000000000001"
HN = "5e5e5e5e-0000-4000-8000-000000000002"


@pytest.fixture
def dc(tmp_path):
    store = store_at(tmp_path / "dc.sqlite", create=True)
    store.put_network(Network(ADMIN_NETWORK, "127.50.0.0/24"))
    store.allocate_ip(ADMIN_NETWORK, HN, "127.50.0.1")
    store.put_server(Server(HN, "hn0", "127.50.0.1", headnode=True))
    yield store
    store.close()


class Handle:
    def __init__(self, store):
        self.store = store

    def get(self):
        return self.store


def test_an_unknown_server_registers_not_set_up_with_its_address_allocated(dc):
    assert register(dc, new_server_record(ME, "cn7", "127.50.0.7", 5309)) == "registered"
    me = dc.get_server(ME)
    assert (me.hostname, me.admin_ip, me.setup, me.headnode, me.agent_port) == \
        ("cn7", "127.50.0.7", False, False, 5309)
    assert server_flags(me) == "-----"  # no S: `server ls` shows it not set up
    assert dc.get_network(ADMIN_NETWORK).allocations["127.50.0.7"] == ME


def test_a_known_server_is_left_as_it_is(dc):
    dc.allocate_ip(ADMIN_NETWORK, ME, "127.50.0.7")
    dc.put_server(Server(ME, "cn7", "127.50.0.7", setup=True, fenced=True))
    before = (dc.revision(), dc.get_server(ME))
    # even with another hostname and address in its configuration
    assert register(dc, new_server_record(ME, "other", "127.50.0.9", 5309)) == "known"
    assert (dc.revision(), dc.get_server(ME)) == before


def test_no_admin_network_means_no_dc_yet_and_nothing_is_written(tmp_path):
    store = store_at(tmp_path / "empty.sqlite", create=True)
    try:
        rev = store.revision()
        with pytest.raises(NotFound):
            register(store, new_server_record(ME, "cn7", "127.50.0.7", 5309))
        assert store.revision() == rev and store.list_servers() == []
    finally:
        store.close()


def test_a_taken_address_is_refused_and_changes_nothing(dc):
    rev = dc.revision()
    with pytest.raises(Conflict, match="127.50.0.1") as exc:
        register(dc, new_server_record(ME, "cn7", "127.50.0.1", 5309))
    assert "agent.listen" in exc.value.hint
    assert dc.revision() == rev and [s.hostname for s in dc.list_servers()] == ["hn0"]


def test_an_address_outside_the_admin_network_is_refused(dc):
    with pytest.raises(Conflict, match="not in network admin"):
        register(dc, new_server_record(ME, "cn7", "10.0.0.7", 5309))
    assert [s.hostname for s in dc.list_servers()] == ["hn0"]


def test_a_taken_hostname_is_refused_and_the_address_released(dc):
    with pytest.raises(Conflict, match="hn0"):
        register(dc, new_server_record(ME, "hn0", "127.50.0.7", 5309))
    assert "127.50.0.7" not in dc.get_network(ADMIN_NETWORK).allocations
    assert [s.uuid for s in dc.list_servers()] == [HN]


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "localhost", ""])
def test_a_wildcard_or_name_says_nothing_of_the_admin_address(listen):
    with pytest.raises(NotRegistrable, match="agent.listen") as exc:
        admin_address(listen)
    assert "admin address" in exc.value.hint


def _config(listen="127.50.0.7"):
    return config_from({"server_uuid": ME, "agent": {"listen": listen, "port": 5309}}, "test")


def test_the_thread_retries_until_the_dc_exists_then_ends(tmp_path):
    store = store_at(tmp_path / "late.sqlite", create=True)
    try:
        reg = Registration(_config(), Handle(store), "cn7", interval=0.01)
        assert reg.attempt() is False and "dc init" in reg.last_error and reg.state == "pending"
        assert reg.retry_in >= 10.0  # an operator must act: not retried at the heartbeat rate
        store.put_network(Network(ADMIN_NETWORK, "127.50.0.0/24"))
        stop = threading.Event()
        reg.retry_in = 0.01
        reg.run(stop)  # returns once registered
        assert reg.state == "registered" and reg.last_error is None
        assert store.get_server(ME).setup is False
    finally:
        store.close()


def test_a_wildcard_listen_is_refused_for_good_and_writes_nothing(dc):
    reg = Registration(_config("0.0.0.0"), Handle(dc), "cn7", interval=0.01)
    rev = dc.revision()
    assert reg.attempt() is True and reg.state == "refused" and "wildcard" in reg.last_error
    assert dc.revision() == rev

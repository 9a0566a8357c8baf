"""`sdcadm server delete|unfence`: what is refused (nothing changed) and what
a delete removes, on a real sqlite store through the CLI; the pure rules."""

import pytest
from click.testing import CliRunner

from sdcadm.cli.main import cli
from sdcadm.model import ADMIN_NETWORK, Instance, Network, RestoreStatus, Server, Service
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.server_plan import check_unfence, plan_server_delete
from tests.conftest import FakeClock, heartbeat_at, isolate_cli, store_at

NOW = 1_700_000_000.0
HN0, HN1, HN2 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
SAPI0, BINDER0, BINDER1 = (f"10000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
IMAGE = "20000000-0000-4000-8000-000000000001"


@pytest.fixture
def dc(tmp_path, monkeypatch):
    """hn0 (silent, fenced) with binder0 (HA) and sapi0 restored to hn1;
    hn1, hn2 running; binder1 on hn1."""
    path = tmp_path / "dc.sqlite"
    clock = FakeClock(NOW)
    store = store_at(path, clock=clock, create=True)
    for uuid, name, ip in ((HN0, "hn0", "10.0.0.10"), (HN1, "hn1", "10.0.0.11"),
                           (HN2, "hn2", "10.0.0.12")):
        store.put_server(Server(uuid=uuid, hostname=name, admin_ip=ip, headnode=True))
    heartbeat_at(store, clock, HN0, NOW - 500)
    heartbeat_at(store, clock, HN1, NOW - 1)
    heartbeat_at(store, clock, HN2, NOW - 1)
    store.set_fenced(HN0, True, store.get_server(HN0).generation)
    store.put_network(Network(name=ADMIN_NETWORK, cidr="10.0.0.0/24"))
    store.allocate_ip(ADMIN_NETWORK, HN0, "10.0.0.10")
    store.put_service(Service(name="binder", image=IMAGE))
    for uuid, alias, service, server, ip, params in [
            (BINDER0, "binder0", "binder", HN0, "10.0.0.20", {}),
            (BINDER1, "binder1", "binder", HN1, "10.0.0.21", {}),
            (SAPI0, "sapi0", "sapi", HN1, "10.0.0.22", {"restored_from": HN0})]:
        store.create_instance(Instance(uuid=uuid, alias=alias, service=service,
                                       server_uuid=server, image=IMAGE, admin_ip=ip,
                                       params=params))
        store.allocate_ip(ADMIN_NETWORK, uuid, ip)
    store.put_restore_status(RestoreStatus(receiver=HN0, service="sapi", instance=SAPI0,
                                           last_success=NOW - 600))
    store.close()
    config = tmp_path / "sdcadm.yaml"
    config.write_text(f"store:\n  path: {path}\nagent:\n  heartbeat_timeout: 15\n"
                      f"log_dir: {tmp_path / 'log'}\n")
    isolate_cli(monkeypatch, config, NOW)
    return path


def sdcadm(*args):
    return CliRunner().invoke(cli, list(args))


def snapshot(path):
    store = store_at(path)
    try:
        return (store.list_servers(), store.list_instances(), store.get_network(ADMIN_NETWORK),
                store.list_restore_status())
    finally:
        store.close()


def test_a_fenced_server_with_ha_peers_needs_force(dc):
    before = snapshot(dc)
    result = sdcadm("server", "delete", "hn0", "-y")
    assert result.exit_code == 1
    assert "owns 1 HA peer(s) (binder0)" in result.stderr and "--force" in result.stderr
    assert snapshot(dc) == before


def test_delete_with_force_removes_the_server_its_peers_addresses_and_statuses(dc):
    result = sdcadm("server", "delete", "hn0", "--force", "-y")
    assert result.exit_code == 0, result.output
    servers, instances, network, statuses = snapshot(dc)
    assert [s.hostname for s in servers] == ["hn1", "hn2"]
    assert sorted(i.alias for i in instances) == ["binder1", "sapi0"]
    assert "10.0.0.10" not in network.allocations and "10.0.0.20" not in network.allocations
    assert network.allocations["10.0.0.21"] == BINDER1
    assert statuses == []
    again = sdcadm("server", "delete", "hn0", "--force", "-y")
    assert again.exit_code == 1 and "no server" in again.stderr


def test_a_running_server_or_one_owning_a_singleton_is_refused(dc):
    before = snapshot(dc)
    result = sdcadm("server", "delete", "hn1", "--force", "-y")
    assert result.exit_code == 1
    assert "hn1 is running" in result.stderr
    assert "non-HA services (sapi0)" in result.stderr
    assert snapshot(dc) == before


def test_unfence_is_refused_while_its_instances_run_elsewhere(dc):
    before = snapshot(dc)
    result = sdcadm("server", "unfence", "hn0", "-y")
    assert result.exit_code == 1 and "restored elsewhere (sapi0)" in result.stderr
    assert snapshot(dc) == before
    quiet = sdcadm("server", "unfence", "hn2", "-y")
    assert quiet.exit_code == 0 and "not fenced" in quiet.output


# -- the pure rules ---------------------------------------------------------------------

def server(name, **kw):
    return Server(uuid=f"{name:0>8}-0000-4000-8000-000000000000", hostname=name,
                  admin_ip="10.0.0.1", headnode=True, **kw)


def test_the_last_headnode_is_never_deleted():
    only = server("hn0", fenced=True)
    with pytest.raises(NotViable, match="last headnode"):
        plan_server_delete(only, [only], [], [], [], lambda s: False, now=NOW,
                           heartbeat_timeout=15)


def test_an_unfenced_silent_server_owning_nothing_may_go():
    gone, other = server("hn9", last_heartbeat=NOW - 100), server("hn1")
    plan = plan_server_delete(gone, [gone, other], [], [], [], lambda s: False, now=NOW,
                              heartbeat_timeout=15)
    assert plan.server == gone and plan.peers == ()


def test_unfence_rules():
    hn0 = server("hn0", fenced=True)
    assert check_unfence(server("hn1"), []) is False
    assert check_unfence(hn0, []) is True
    moved = Instance(uuid=SAPI0, alias="sapi0", service="sapi", server_uuid=HN1, image=IMAGE,
                     admin_ip="10.0.0.2", params={"restored_from": hn0.uuid})
    with pytest.raises(NotViable, match="delete it"):
        check_unfence(hn0, [moved])


def test_delete_help_says_it_removes_the_etcd_member():
    """The help once said the member stayed; the procedure removes it (and
    the operator guide's runbooks rely on that)."""
    from click.testing import CliRunner

    from sdcadm.cli.main import cli

    out = CliRunner().invoke(cli, ["server", "delete", "--help"]).output
    assert "removes its etcd member" in " ".join(out.split())
    assert "not removed" not in out

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.errors import NotFound
from sdcadm.model import Instance, Server
from sdcadm.procedures.planning import (
    NotViable,
    check_restorable_servers,
    is_dead,
    next_free_alias,
    plan_migrate,
    plan_restore,
    select_services,
)

IMG = "99999999-9999-4999-8999-999999999999"
HN0 = Server("00000000-0000-4000-8000-000000000000", "hn0", "127.0.0.1", headnode=True, last_heartbeat=100)
HN1 = Server("11111111-1111-4111-8111-111111111111", "hn1", "127.0.0.2", headnode=True, last_heartbeat=100)
CAT = load_catalog()


def inst(n, service, server, alias=None):
    return Instance(f"aaaaaaaa-aaaa-4aaa-8aaa-{n:012d}", alias or f"{service}0", service,
                    server.uuid, IMG, f"127.0.1.{n}")


def test_next_free_alias():
    assert next_free_alias("vmapi", {"vmapi0"}) == "vmapi1"
    assert next_free_alias("vmapi", {"vmapi1"}) == "vmapi0"
    assert next_free_alias("vmapi", {"vmapi0", "vmapi1", "vmapi10"}) == "vmapi2"
    assert next_free_alias("moray", {"morayx0", "moray"}) == "moray0"


def test_is_dead_needs_margin_or_fence():
    assert not is_dead(HN0, now=100 + 3 * 1.0 - 0.1, heartbeat_timeout=1.0)
    assert is_dead(HN0, now=100 + 3.1, heartbeat_timeout=1.0)
    fenced = Server(HN0.uuid, "hn0", "127.0.0.1", fenced=True, last_heartbeat=100)
    assert is_dead(fenced, now=100, heartbeat_timeout=1.0)


def test_select_services():
    assert select_services(CAT, ["vmapi", "sapi"], False, []) == ["sapi", "vmapi"]
    assert select_services(CAT, [], True, {"vmapi", "binder"}) == ["binder", "vmapi"]
    with pytest.raises(NotViable, match="--all"):
        select_services(CAT, [], False, [])
    with pytest.raises(NotViable, match="not both"):
        select_services(CAT, ["sapi"], True, [])
    with pytest.raises(NotFound):
        select_services(CAT, ["nosuch"], False, [])


def test_plan_migrate_orders_skips_and_aliases():
    src = [inst(1, "vmapi", HN0), inst(2, "sapi", HN0), inst(3, "binder", HN0),
           inst(4, "nat", HN0), inst(5, "manatee", HN0)]
    dst = [inst(6, "binder", HN1, "binder1")]
    items = plan_migrate(CAT, src, dst, src + dst, ["binder", "manatee", "sapi", "vmapi", "nat"])
    got = [(i.service, i.new_alias, i.skip_reason is not None) for i in items]
    assert got == [("binder", None, True), ("manatee", "manatee1", False), ("sapi", "sapi1", False),
                   ("vmapi", "vmapi1", False), ("nat", None, True)]
    assert items[2].stateful and not items[3].stateful


def test_plan_restore_skips_ha_and_orders():
    insts = [inst(1, "vmapi", HN0), inst(2, "sapi", HN0), inst(3, "binder", HN0), inst(4, "imgapi", HN1)]
    items = plan_restore(CAT, [HN0], insts, {"vmapi", "sapi", "binder", "imgapi"}, HN1.uuid)
    assert [i.service for i in items] == ["sapi", "vmapi"]
    assert not items[0].reuse_ip
    with pytest.raises(NotViable, match="surviving headnode"):
        plan_restore(CAT, [HN0], insts, {"sapi"}, HN0.uuid)


def test_restorable_servers():
    servers = [HN0, HN1]
    with pytest.raises(NotViable, match="no server is dead"):
        check_restorable_servers([], servers, now=101, heartbeat_timeout=1.0)
    assert check_restorable_servers(["hn0"], servers, now=101, heartbeat_timeout=1.0) == [HN0]
    with pytest.raises(NotFound):
        check_restorable_servers(["hn9"], servers, now=101, heartbeat_timeout=1.0)
    late = Server(HN0.uuid, "hn0", "127.0.0.1", last_heartbeat=90)
    assert check_restorable_servers([], [late, HN1], now=101, heartbeat_timeout=1.0) == [late]


def test_restore_levels_follow_dependencies_among_restored():
    from sdcadm.procedures.planning import restore_levels

    levels = restore_levels(CAT, ["vmapi", "sapi", "imgapi", "napi", "assets"])
    # moray (a dependency of all) is HA and up: sapi, napi, assets start at once
    assert levels == [["sapi", "assets", "napi"], ["imgapi"], ["vmapi"]]
    pos = {n: i for i, lvl in enumerate(levels) for n in lvl}
    for name in pos:
        for dep in CAT.get(name).depends_on:
            if dep in pos:
                assert pos[dep] < pos[name]
    assert restore_levels(CAT, []) == []

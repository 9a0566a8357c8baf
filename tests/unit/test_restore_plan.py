"""What a headnode pulls and prunes: pure planning over plain records."""

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.model import Image, Instance, Server, Service
from sdcadm.restore_data.plan import (
    STALE_INTERVALS,
    image_chain,
    is_ha,
    is_stale,
    plan_prune,
    plan_pulls,
    source_problem,
)

NOW = 1_700_000_000.0
TIMEOUT = 15.0
HN0, HN1, HN2, CN0 = (f"00000000-0000-4000-8000-00000000000{i}" for i in range(4))
IMG = "20000000-0000-4000-8000-000000000001"
CATALOG = load_catalog().services


def server(uuid, hostname, heartbeat=NOW - 1, fenced=False, headnode=True):
    return Server(uuid, hostname, f"127.0.0.{hostname[-1]}", headnode=headnode,
                  last_heartbeat=heartbeat, fenced=fenced)


def inst(n, service, where, dataset=True):
    return Instance(f"10000000-0000-4000-8000-{n:012d}", f"{service}{n}", service, where, IMG,
                    f"127.0.1.{n}", delegate_dataset=dataset)


SERVERS = [server(HN0, "hn0"), server(HN1, "hn1"), server(HN2, "hn2"),
           server(CN0, "cn0", headnode=False)]
INSTANCES = [
    inst(1, "binder", HN0), inst(2, "binder", HN1), inst(3, "binder", HN2),   # HA
    inst(4, "sapi", HN0), inst(5, "imgapi", HN0), inst(6, "vmapi", HN0, dataset=False),
    inst(7, "cloudapi", HN1),
]


def pulls(me, servers=SERVERS, instances=INSTANCES, services=(), **kw):
    plan = plan_pulls(me, servers, services, instances, CATALOG, now=NOW,
                      heartbeat_timeout=TIMEOUT, **kw)
    return {name: [(i.instance.alias, i.source.hostname if i.source else None, i.reachable)
                   for i in items] for name, items in plan.items()}


def test_headnode_pulls_non_ha_instances_of_other_servers():
    assert pulls(HN1) == {
        "imgapi": [("imgapi5", "hn0", True)],
        "sapi": [("sapi4", "hn0", True)],
        "vmapi": [("vmapi6", "hn0", True)],
    }
    # hn0 holds sapi/imgapi/vmapi itself: it pulls only what lives elsewhere.
    assert pulls(HN0) == {"cloudapi": [("cloudapi7", "hn1", True)]}


def test_ha_services_are_never_pulled():
    assert all("binder" not in pulls(me) for me in (HN0, HN1, HN2))


def test_only_restricts_to_the_named_services():
    assert pulls(HN1, only={"sapi", "binder"}) == {"sapi": [("sapi4", "hn0", True)]}
    assert pulls(HN1, only=set()) == {}


def test_source_with_expired_heartbeat_or_fenced_is_unreachable():
    servers = [server(HN0, "hn0", heartbeat=NOW - 100), server(HN1, "hn1"),
               server(HN2, "hn2", fenced=True)]
    instances = [inst(4, "sapi", HN0), inst(8, "imgapi", HN2)]
    plan = plan_pulls(HN1, servers, [], instances, CATALOG, now=NOW, heartbeat_timeout=TIMEOUT)
    (sapi,), (imgapi,) = plan["sapi"], plan["imgapi"]
    assert not sapi.reachable and "hn0 is unreachable (last heartbeat 100s ago)" in sapi.reason
    assert not imgapi.reachable and "hn2 is fenced" in imgapi.reason


def test_instance_on_an_unknown_server_is_unreachable():
    plan = plan_pulls(HN1, SERVERS, [], [inst(9, "sapi", "ffffffff-0000-4000-8000-000000000000")],
                      CATALOG, now=NOW, heartbeat_timeout=TIMEOUT)
    item = plan["sapi"][0]
    assert item.source is None and not item.reachable and "not in the DC store" in item.reason


def test_source_problem():
    assert source_problem(server(HN0, "hn0"), NOW, TIMEOUT) is None
    assert "hn0 is unreachable (no live heartbeat" in source_problem(server(HN0, "hn0", heartbeat=0),
                                                                     NOW, TIMEOUT)


def test_service_unknown_to_the_catalog_uses_its_params():
    services = [Service("custom", params={"ha": True}), Service("other", params={})]
    assert is_ha("custom", CATALOG, {s.name: s for s in services})
    assert not is_ha("other", CATALOG, {s.name: s for s in services})
    assert not is_ha("ghost", CATALOG, {})
    instances = [inst(1, "custom", HN0), inst(2, "other", HN0)]
    assert pulls(HN1, instances=instances, services=services) == {
        "other": [("other2", "hn0", True)]}


def test_plan_is_in_a_stable_order():
    instances = [inst(12, "sapi", HN0), inst(11, "sapi", HN2), inst(10, "imgapi", HN0)]
    plan = pulls(HN1, instances=instances)
    assert list(plan) == ["imgapi", "sapi"]
    assert [a for a, _, _ in plan["sapi"]] == ["sapi11", "sapi12"]


def test_prune_waits_for_the_grace_period():
    held = {"u1": "sapi", "u2": "sapi", "u3": "imgapi"}
    remove, vanished = plan_prune(held, {"u1"}, {}, now=100.0, grace=60)
    assert remove == [] and vanished == {"u2": 100.0, "u3": 100.0}
    remove, vanished = plan_prune(held, {"u1"}, vanished, now=159.0, grace=60)
    assert remove == [] and vanished == {"u2": 100.0, "u3": 100.0}
    remove, vanished = plan_prune(held, {"u1"}, vanished, now=160.0, grace=60)
    assert remove == [("imgapi", "u3"), ("sapi", "u2")] and vanished == {}


def test_an_instance_that_comes_back_is_forgiven():
    remove, vanished = plan_prune({"u2": "sapi"}, set(), {}, now=100.0, grace=60)
    assert vanished == {"u2": 100.0}
    remove, vanished = plan_prune({"u2": "sapi"}, {"u2"}, vanished, now=200.0, grace=60)
    assert remove == [] and vanished == {}
    # Gone again: the grace period starts over.
    remove, vanished = plan_prune({"u2": "sapi"}, set(), vanished, now=210.0, grace=60)
    assert remove == [] and vanished == {"u2": 210.0}


def test_zero_grace_prunes_at_once():
    assert plan_prune({"u": "sapi"}, set(), {}, now=1.0, grace=0)[0] == [("sapi", "u")]


def test_staleness():
    assert is_stale(None, NOW, 60)
    assert not is_stale(NOW - 60, NOW, 60)
    assert not is_stale(NOW - STALE_INTERVALS * 60, NOW, 60)
    assert is_stale(NOW - STALE_INTERVALS * 60 - 1, NOW, 60)


def _img(uuid, origin=None):
    return Image(uuid, "x", "1", "0" * 64, origin=origin)


def test_image_chain_follows_origins():
    images = {"a": _img("a", "b"), "b": _img("b", "c"), "c": _img("c")}
    assert [i.uuid for i in image_chain("a", images)] == ["a", "b", "c"]
    assert [i.uuid for i in image_chain("c", images)] == ["c"]


def test_image_chain_problems_are_named():
    with pytest.raises(KeyError, match="image b is not in the DC store"):
        image_chain("a", {"a": _img("a", "b")})
    with pytest.raises(ValueError, match="origin cycle"):
        image_chain("a", {"a": _img("a", "b"), "b": _img("b", "a")})

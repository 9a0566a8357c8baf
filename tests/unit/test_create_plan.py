"""What `sdcadm create` makes or refuses (pure planning)."""

from uuid import uuid4

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.model import Image, Instance, Server, Service
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.create_plan import (choose_image, instance_uuid, plan_create,
                                                   plan_post_setup)

NOW = 1000.0
CATALOG = load_catalog()
HN0 = Server(uuid="00000000-0000-4000-8000-000000000001", hostname="hn0", admin_ip="10.0.0.1",
             headnode=True, last_heartbeat=NOW)
HN1 = Server(uuid="00000000-0000-4000-8000-000000000002", hostname="hn1", admin_ip="10.0.0.2",
             headnode=True, last_heartbeat=NOW)
IMG = Image(uuid="20000000-0000-4000-8000-000000000001", name="binder", version="1",
            sha256="0" * 64)


def inst(alias, service, server, made_by_create=False):
    """An instance; as made by an earlier `create` (derived UUID), or by anything else."""
    uuid = instance_uuid(service, alias) if made_by_create else str(uuid4())
    return Instance(uuid=uuid, alias=alias, service=service,
                    server_uuid=server.uuid, image=IMG.uuid, admin_ip="10.0.0.9")


def plan(service, server, instances=(), **kw):
    return plan_create(CATALOG.get(service), server, list(instances), IMG, now=NOW,
                       heartbeat_timeout=15, **kw)


def test_next_free_alias_and_a_stable_uuid():
    p = plan("binder", HN1, [inst("binder0", "binder", HN0)])
    assert (p.alias, p.uuid, p.existing) == ("binder1", instance_uuid("binder", "binder1"), None)


def test_a_rerun_finds_what_the_first_run_made():
    made = inst("binder1", "binder", HN1, made_by_create=True)
    assert plan("binder", HN1, [inst("binder0", "binder", HN0), made]).existing == made
    assert plan("binder", HN1, [made], alias="binder1").existing == made


@pytest.mark.parametrize("service, instances, server, match", [
    ("binder", [inst("binder0", "binder", HN0)], HN0, "peers must be on distinct servers"),
    ("sapi", [inst("sapi0", "sapi", HN0)], HN1, "runs once and already has sapi0"),
    ("ufds", [inst("ufds0", "ufds", HN0)], HN1, "runs once"),
])
def test_what_runs_once_or_twice_on_one_server_is_refused(service, instances, server, match):
    with pytest.raises(NotViable, match=match):
        plan(service, server, instances)


def test_an_unfit_server_or_a_taken_alias_is_refused():
    silent = Server(uuid=HN1.uuid, hostname="hn1", admin_ip="10.0.0.2", last_heartbeat=NOW - 99,
                    setup=False)
    with pytest.raises(NotViable) as e:
        plan("assets", silent, [inst("assets0", "assets", HN0)], alias="assets0")
    for reason in ("not set up", "unreachable", "alias assets0 is taken"):
        assert reason in str(e.value)
    with pytest.raises(NotViable, match="fenced"):
        plan("assets", Server(uuid=HN1.uuid, hostname="hn1", admin_ip="x", fenced=True,
                              last_heartbeat=NOW))
    with pytest.raises(Exception, match="alias"):
        plan("assets", HN1, alias="../etc")


def test_choose_image():
    other = Image(uuid="20000000-0000-4000-8000-000000000002", name="binder", version="2",
                  sha256="1" * 64)
    assert choose_image("binder", None, [IMG]) == IMG
    assert choose_image("binder", Service("binder", other.uuid), [IMG, other]) == other
    assert choose_image("binder", None, [IMG, other], wanted=IMG.uuid) == IMG
    with pytest.raises(NotViable, match="--image"):
        choose_image("binder", None, [IMG, other])
    with pytest.raises(NotViable, match="import one first"):
        choose_image("sapi", None, [IMG])
    with pytest.raises(NotViable, match="not sapi"):
        choose_image("sapi", None, [IMG], wanted=IMG.uuid)


# -- post-setup ha-* -------------------------------------------------------------------------

HN2 = Server(uuid="00000000-0000-4000-8000-000000000003", hostname="hn2", admin_ip="10.0.0.3",
             headnode=True, last_heartbeat=NOW)
CN0 = Server(uuid="00000000-0000-4000-8000-000000000004", hostname="cn0", admin_ip="10.0.0.4",
             last_heartbeat=NOW)


def post_setup(service, instances, named=()):
    return plan_post_setup(CATALOG.get(service), [HN0, HN1, HN2, CN0], instances, IMG, named,
                           now=NOW, heartbeat_timeout=15)


def test_post_setup_adds_only_what_is_missing_on_the_headnodes():
    plans = post_setup("binder", [inst("binder0", "binder", HN0)])
    assert [(p.alias, p.server.hostname) for p in plans] == [("binder1", "hn1"),
                                                            ("binder2", "hn2")]
    done = [inst(f"binder{n}", "binder", s) for n, s in enumerate((HN0, HN1, HN2))]
    assert post_setup("binder", done) == []


def test_post_setup_on_named_servers_and_binder_sizes():
    plans = post_setup("moray", [], ["hn0", "cn0"])
    assert [p.server.hostname for p in plans] == ["hn0", "cn0"]
    with pytest.raises(NotViable, match="binder would run 2"):
        post_setup("binder", [], ["hn0", "hn1"])
    with pytest.raises(NotViable, match="no server 'hn9'"):
        post_setup("moray", [], ["hn9"])
    with pytest.raises(NotViable, match="not sapi"):
        post_setup("sapi", [])

import json

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.errors import LabError, NotFound, UsageError, ValidationError
from sdcadm.lab.layout import plan_lab
from sdcadm.lab.state import LabState, lab_dir, load_state, save_state

U = "11111111-1111-4111-8111-111111111111"


def test_properly_set_up_dc():
    cat = load_catalog()
    plan = plan_lab("127.99.99.0/24", 3, 2, cat)
    assert [s.hostname for s in plan.servers] == ["hn0", "hn1", "hn2", "cn0", "cn1"]
    assert [s.admin_ip for s in plan.servers][:2] == ["127.99.99.1", "127.99.99.2"]
    where = {}
    for i in plan.instances:
        where.setdefault(i.service, []).append(i.hostname)
    for ha in ("binder", "manatee", "moray"):
        assert where[ha] == ["hn0", "hn1", "hn2"]
    assert "nat" not in where and "manta" not in where
    singles = [n for n in cat.names() if cat.get(n).lab and not cat.get(n).ha]
    assert all(where[n] == ["hn0"] for n in singles)
    assert len(plan.instances) == 9 + len(singles)


def test_one_headnode_gets_one_copy_of_ha():
    plan = plan_lab("127.99.99.0/24", 1, 0, load_catalog(), services=["binder", "sapi"])
    assert [(i.alias, i.hostname) for i in plan.instances] == [("binder0", "hn0"), ("sapi0", "hn0")]


@pytest.mark.parametrize("net,match", [
    ("10.0.0.0/24", "not inside 127.0.0.0/8"),
    ("127.99.99.0/28", "too small"),
    ("127.99.99.1/24", "not a network"),
    ("banana", "not a network"),
])
def test_bad_networks(net, match):
    with pytest.raises(UsageError, match=match):
        plan_lab(net, 3, 2, load_catalog())


def test_bad_counts_and_services():
    with pytest.raises(UsageError, match="at least one headnode"):
        plan_lab("127.99.99.0/24", 0, 2, load_catalog())
    with pytest.raises(UsageError):
        plan_lab("127.99.99.0/24", 1, -1, load_catalog())
    with pytest.raises(NotFound, match="unknown service 'nosuch'"):
        plan_lab("127.99.99.0/24", 1, 0, load_catalog(), services=["nosuch"])


def test_lab_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert lab_dir(None, {}) == tmp_path / ".sdcadm-lab"
    assert lab_dir(None, {"SDCADM_LAB": "/x/y"}) == type(tmp_path)("/x/y")
    assert lab_dir("/a", {"SDCADM_LAB": "/x/y"}) == type(tmp_path)("/a")


def state(tmp_path):
    return LabState(dir=str(tmp_path), net="127.99.99.0/24",
                    servers=[{"hostname": "hn0", "uuid": U, "admin_ip": "127.99.99.1", "headnode": True}])


def test_state_round_trip(tmp_path):
    save_state(state(tmp_path))
    loaded = load_state(tmp_path)
    assert loaded.server("hn0")["uuid"] == U and loaded.server(U)["hostname"] == "hn0"
    with pytest.raises(NotFound, match="lab servers: hn0"):
        loaded.server("hn7")


def test_missing_corrupt_invalid_or_moved_state(tmp_path):
    with pytest.raises(LabError, match="no lab at"):
        load_state(tmp_path)
    (tmp_path / "lab.json").write_text("{")
    with pytest.raises(LabError, match="unreadable"):
        load_state(tmp_path)
    doc = state(tmp_path).to_dict()
    (tmp_path / "lab.json").write_text(json.dumps(dict(doc, net="10.0.0.0/8")))
    with pytest.raises(ValidationError, match="at net"):
        load_state(tmp_path)
    (tmp_path / "lab.json").write_text(json.dumps(dict(doc, dir="/elsewhere")))
    with pytest.raises(LabError, match="cannot be moved|not"):
        load_state(tmp_path)

import pytest
import yaml

from sdcadm.catalog import load_catalog, parse_catalog, startup_order
from sdcadm.errors import CatalogError, NotFound, ValidationError

RFD67_SERVICES = {
    "adminui", "amon", "amonredis", "assets", "binder", "ca", "cloudapi", "cmon", "cnapi", "cns",
    "dhcpd", "docker", "fwapi", "imgapi", "mahi", "manatee", "manta", "moray", "napi", "nat",
    "papi", "portolan", "rabbitmq", "sapi", "sdc", "ufds", "vmapi", "workflow",
}


def entry(name, deps=(), **kw):
    doc = {"name": name, "ha": False, "delegate_dataset": False, "critical": False,
           "singleton": True, "depends_on": list(deps), "migrate": {"policy": "normal"},
           "health": {"type": "http", "path": "/ping", "timeout": 2}}
    doc.update(kw)
    return doc


def test_packaged_catalog_has_every_rfd67_service():
    assert set(load_catalog().names()) == RFD67_SERVICES


def test_packaged_catalog_flags_match_rfd67():
    cat = load_catalog()
    assert {n for n in cat.names() if cat.get(n).ha} == {"binder", "manatee", "moray"}
    assert cat.get("nat").migrate_policy == "skip"
    assert not cat.get("nat").lab and not cat.get("manta").lab
    for dd in ("imgapi", "sapi", "cloudapi", "docker", "cmon", "manatee", "binder"):
        assert cat.get(dd).delegate_dataset, dd
    for no_dd in ("vmapi", "cnapi", "napi", "ufds", "workflow"):
        assert not cat.get(no_dd).delegate_dataset, no_dd


def test_startup_order_respects_every_dependency():
    cat = load_catalog()
    order = cat.startup_order()
    pos = {n: i for i, n in enumerate(order)}
    for name in order:
        for dep in cat.get(name).depends_on:
            assert pos[dep] < pos[name], (dep, name)
    assert cat.shutdown_order() == list(reversed(order))


def test_startup_order_of_a_subset_keeps_relative_order():
    cat = load_catalog()
    assert cat.startup_order(["vmapi", "binder", "sapi"]) == ["binder", "sapi", "vmapi"]


def test_ties_broken_by_file_order():
    cat = parse_catalog({"version": 1, "services": [entry("b"), entry("a"), entry("c", ["a"])]})
    assert cat.startup_order() == ["b", "a", "c"]


def test_cycle_is_a_clear_error():
    doc = {"version": 1, "services": [entry("a", ["c"]), entry("b", ["a"]), entry("c", ["b"])]}
    with pytest.raises(CatalogError, match=r"cycle.*a -> c -> b -> a"):
        parse_catalog(doc)


@pytest.mark.parametrize("doc,match", [
    ({"version": 1, "services": [entry("a", ["nope"])]}, "unknown service 'nope'"),
    ({"version": 1, "services": [entry("a", ["a"])]}, "depends on itself"),
    ({"version": 1, "services": [entry("a"), entry("a")]}, "listed twice"),
    ({"version": 1, "services": [entry("a", ha=True, singleton=True)]}, "both ha and singleton"),
])
def test_inconsistent_catalog(doc, match):
    with pytest.raises(CatalogError, match=match):
        parse_catalog(doc)


@pytest.mark.parametrize("doc", [
    {"version": 2, "services": [entry("a")]},
    {"version": 1, "services": []},
    {"version": 1, "services": [{**entry("a"), "ha": "yes"}]},
    {"version": 1, "services": [{**entry("a"), "bogus": 1}]},
    {"version": 1, "services": [{**entry("a"), "migrate": {"policy": "sometimes"}}]},
    {"version": 1, "services": [{**entry("Bad Name")}]},
    ["not", "a", "mapping"],
])
def test_schema_violations_are_validation_errors(doc):
    with pytest.raises(ValidationError):
        parse_catalog(doc, "test.yaml")


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [unclosed\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)


def test_custom_catalog_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "services": [entry("x"), entry("y", ["x"])]}))
    assert load_catalog(path).startup_order() == ["x", "y"]


def test_unknown_service_lists_known():
    with pytest.raises(NotFound, match="known services: binder"):
        load_catalog().get("nosuch")
    with pytest.raises(NotFound):
        startup_order(load_catalog().services, ["nosuch"])

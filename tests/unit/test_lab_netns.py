"""The pure parts of a netns lab: names, networks, command lines, fault rules."""

import json

import pytest

from sdcadm.errors import LabError, NotFound, UsageError, ValidationError
from sdcadm.lab import faults, netns
from sdcadm.lab.layout import check_net, plan_lab
from sdcadm.lab.state import LabState, load_state, save_state
from sdcadm.catalog import load_catalog

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"


def netns_state(tmp_path, **extra):
    servers = [{"hostname": "hn0", "uuid": U1, "admin_ip": "10.9.8.1", "headnode": True},
               {"hostname": "hn1", "uuid": U2, "admin_ip": "10.9.8.2", "headnode": True}]
    return LabState(dir=str(tmp_path), net="10.9.8.0/24", servers=servers, store="etcd",
                    isolation="netns", netns={"id": "abc123"}, **extra)


def test_names_are_the_labs_own_and_fit_interface_names():
    lid = netns.lab_id("/tmp/lab", 1.5)
    assert len(lid) == 6 and lid != netns.lab_id("/tmp/lab", 2.5) != netns.lab_id("/tmp/x", 1.5)
    assert netns.server_ns(lid, "hn0") == f"sdc-{lid}-hn0"
    assert netns.net_ns(lid) == f"sdc-{lid}-net"
    assert len(netns.host_link(lid)) <= 15  # IFNAMSIZ - 1


@pytest.mark.parametrize("net,expected", [
    ("127.99.99.0/24", "10.99.99.0/24"),
    ("127.201.7.0/24", "10.201.7.0/24"),
    ("192.168.50.0/24", "192.168.50.0/24"),
    ("172.20.0.0/16", "172.20.0.0/16"),
])
def test_lab_network_is_private(net, expected):
    assert str(netns.lab_network(net)) == expected
    assert str(check_net(net, "netns")) == expected


@pytest.mark.parametrize("net", ["8.8.8.0/24", "100.64.0.0/24"])
def test_a_public_network_is_refused(net):
    with pytest.raises(LabError, match="neither loopback nor a private"):
        netns.lab_network(net)


def test_loopback_isolation_still_wants_loopback():
    with pytest.raises(UsageError, match="not inside 127.0.0.0/8"):
        check_net("10.9.8.0/24")
    with pytest.raises(UsageError, match="too small"):
        check_net("127.9.8.0/28", "netns")


def test_plan_puts_servers_on_the_private_network():
    plan = plan_lab("127.9.8.0/24", 2, 1, load_catalog(), ["binder"], isolation="netns")
    assert plan.net == "10.9.8.0/24"
    assert [s.admin_ip for s in plan.servers] == ["10.9.8.1", "10.9.8.2", "10.9.8.3"]


def test_create_commands_build_a_bridge_with_a_host_leg_and_one_namespace_per_server():
    topo = netns.Topology("abc123", "10.9.8.0/24", (("hn0", "10.9.8.1"), ("cn0", "10.9.8.2")))
    assert topo.host_ip == "10.9.8.254"
    cmds = netns.create_commands(topo)
    assert cmds[0] == ["ip", "netns", "add", "sdc-abc123-net"]
    assert ["ip", "link", "add", "sdcabc123", "type", "veth", "peer", "name", "host",
            "netns", "sdc-abc123-net"] in cmds
    assert ["ip", "addr", "add", "10.9.8.254/24", "dev", "sdcabc123"] in cmds
    assert ["ip", "-n", "sdc-abc123-net", "link", "add", "cn0", "type", "veth", "peer", "name",
            "eth0", "netns", "sdc-abc123-cn0"] in cmds
    assert ["ip", "-n", "sdc-abc123-cn0", "addr", "add", "10.9.8.2/24", "dev", "eth0"] in cmds
    # every namespace is made before anything is put into it
    made = [c[3] for c in cmds if c[:3] == ["ip", "netns", "add"]]
    assert made == topo.namespaces()


def test_destroy_commands_remove_only_what_exists():
    topo = netns.Topology("abc123", "10.9.8.0/24", (("hn0", "10.9.8.1"), ("cn0", "10.9.8.2")))
    cmds = netns.destroy_commands(topo, {"sdc-abc123-hn0", "sdc-abc123-net", "other"},
                                  {"eth0", "sdcabc123"})
    assert cmds == [["ip", "netns", "del", "sdc-abc123-hn0"],
                    ["ip", "netns", "del", "sdc-abc123-net"],
                    ["ip", "link", "del", "sdcabc123"]]
    assert netns.destroy_commands(topo, set(), set()) == []


def test_enter_prefix_keeps_the_command_its_own():
    assert netns.enter_argv("sdc-abc123-hn0") == ["nsenter", "--net=/run/netns/sdc-abc123-hn0"]


def test_ruleset_cuts_a_port_from_everyone_or_from_some():
    text = faults.ruleset({"hn0": {"partition": {"from": None}},
                           "hn2": {"partition": {"from": ["hn1"]}},
                           "cn0": {"degrade": {"delay_ms": 0, "loss_pct": 5}}})
    assert text.startswith("add table bridge sdclab\ndelete table bridge sdclab\n")
    rules = [line.strip() for line in text.splitlines()]
    assert 'iifname "hn0" drop' in rules and 'oifname "hn0" drop' in rules
    assert 'iifname "hn2" oifname "hn1" drop' in rules
    assert 'iifname "hn1" oifname "hn2" drop' in rules
    # hn2 still reaches the others
    assert 'iifname "hn2" drop' not in rules and 'oifname "hn2" drop' not in rules
    assert 'iifname "cn0" numgen random mod 100 < 5 drop' in rules
    assert 'oifname "cn0" numgen random mod 100 < 5 drop' in rules


def test_no_fault_no_rule():
    text = faults.ruleset({})
    assert "drop" not in text and "policy accept" in text


def test_netem_on_both_ends_and_off_again():
    on = faults.tc_commands("abc123", "hn0", 200)
    assert on == [["ip", "netns", "exec", "sdc-abc123-net", "tc", "qdisc", "replace", "dev",
                   "hn0", "root", "netem", "delay", "200ms"],
                  ["ip", "netns", "exec", "sdc-abc123-hn0", "tc", "qdisc", "replace", "dev",
                   "eth0", "root", "netem", "delay", "200ms"]]
    off = faults.tc_commands("abc123", "hn0", 0)
    assert [c[4:7] for c in off] == [["tc", "qdisc", "del"]] * 2


def test_a_rate_alone_is_a_token_bucket_and_with_a_delay_netems_own_rate():
    alone = faults.tc_commands("abc123", "hn0", 0, 2000)
    assert [c[9:] for c in alone] == [["root", "tbf", "rate", "2000kbit", "burst",
                                       faults.TBF_BURST, "latency", faults.TBF_LATENCY]] * 2
    both = faults.tc_commands("abc123", "hn0", 50, 2000)
    assert [c[10:] for c in both] == [["netem", "delay", "50ms", "rate", "2000kbit"]] * 2
    assert faults.describe({"degrade": {"delay_ms": 0, "loss_pct": 5, "rate_kbit": 2000}}) == \
        "degraded (0 ms, 5% loss, 2000 kbit/s)"


def test_faults_need_a_netns_lab(tmp_path):
    state = netns_state(tmp_path)
    state.isolation, state.netns = "loopback", None
    for call in (lambda: faults.partition(state, "hn0"), lambda: faults.heal(state, "hn0"),
                 lambda: faults.degrade(state, "hn0", loss_pct=5)):
        with pytest.raises(LabError, match="--isolation netns"):
            call()
    assert state.faults == {}


@pytest.mark.parametrize("call,error,match", [
    (lambda s: faults.partition(s, "hn7"), NotFound, "no server 'hn7'"),
    (lambda s: faults.partition(s, "hn0", ["hn0"]), UsageError, "from itself"),
    (lambda s: faults.partition(s, "hn0", ["hn9"]), NotFound, "no server 'hn9'"),
    (lambda s: faults.partition(s, "hn0", []), UsageError, "names no server"),
    (lambda s: faults.degrade(s, "hn0"), UsageError, "--delay MS, --loss PCT and/or --rate"),
    (lambda s: faults.degrade(s, "hn0", rate_kbit=4), UsageError, "--rate 4 is out of range"),
    (lambda s: faults.degrade(s, "hn0", rate_kbit=64, clear=True), UsageError, "--clear takes"),
    (lambda s: faults.degrade(s, "hn0", loss_pct=101), UsageError, "out of range"),
    (lambda s: faults.degrade(s, "hn0", delay_ms=-1), UsageError, "out of range"),
    (lambda s: faults.degrade(s, "hn0", loss_pct=5, clear=True), UsageError, "--clear takes"),
])
def test_bad_fault_requests_change_nothing(tmp_path, call, error, match):
    state = netns_state(tmp_path)
    save_state(state)
    before = (tmp_path / "lab.json").read_text()
    with pytest.raises(error, match=match):
        call(state)
    assert state.faults == {}
    assert (tmp_path / "lab.json").read_text() == before


def test_netns_state_round_trips_and_is_validated(tmp_path):
    state = netns_state(tmp_path, faults={"hn0": {"partition": {"from": ["hn1"]}}})
    save_state(state)
    again = load_state(tmp_path)
    assert again.isolation == "netns" and again.faults == state.faults
    assert again.namespace("hn1") == "sdc-abc123-hn1"
    doc = json.loads((tmp_path / "lab.json").read_text())
    for bad in (dict(doc, faults={"hn0": {"partition": {}}}),
                dict(doc, faults={"zz": {}}),
                dict(doc, netns={"id": "../x"}),
                {k: v for k, v in doc.items() if k != "netns"}):
        (tmp_path / "lab.json").write_text(json.dumps(bad))
        with pytest.raises(ValidationError):
            load_state(tmp_path)


def test_a_loopback_lab_has_no_namespace(tmp_path):
    state = netns_state(tmp_path)
    state.isolation = "loopback"
    assert state.namespace("hn0") is None
    assert netns.topology_of(state) is None


def test_describe():
    assert faults.describe({}) == "healthy"
    assert faults.describe({"partition": {"from": None}}) == "partitioned from everyone"
    assert faults.describe({"partition": {"from": ["hn1", "hn2"]},
                            "degrade": {"delay_ms": 200, "loss_pct": 5}}) == \
        "partitioned from hn1, hn2; degraded (200 ms, 5% loss)"


def test_concurrency_counts_processes_whose_answers_overlap():
    from sdcadm.lab.probe import concurrency, spans

    a, b = "http://10.9.8.20:4380", "http://10.9.8.21:4380"
    hn0_side = [{"t": 1.0, "pids": {a: 100, b: 200}}, {"t": 2.0, "pids": {a: 100, b: None}},
                {"t": 3.0, "pids": {a: None, b: None}}]
    hn1_side = [{"t": 2.5, "pids": {a: 300, b: 201}}, {"t": 3.5, "pids": {a: 300, b: 201}}]
    assert spans(hn0_side + hn1_side)[a] == {100: [1.0, 2.0], 300: [2.5, 3.5]}
    # a: 100 stopped (2.0) before 300 started (2.5); b: 200 seen at 1.0 only, 201 from 2.5
    assert concurrency(hn0_side + hn1_side) == {a: 1, b: 1}
    late = hn0_side + hn1_side + [{"t": 3.0, "pids": {a: 100, b: None}}]  # 100 still at 3.0
    assert concurrency(late) == {a: 2, b: 1}
    assert concurrency([]) == {}


def test_partition_drill_is_ok_only_with_one_copy_at_a_time_and_the_stop_first():
    from sdcadm.lab.drill import DrillResult, render

    def result(**kw):
        return DrillResult(lab="/l", dead="hn0", restored_on="hn1", fault="partition",
                           fencing_verified=True, max_concurrent_singletons=1,
                           partitioned_side_stopped_s=1.6, stopped_before_restore=True, **kw)

    assert result().ok
    none_seen = result()
    none_seen.max_concurrent_singletons = 0  # no singleton to probe: nothing twice
    assert none_seen.ok
    twice = result()
    twice.max_concurrent_singletons = 2
    assert not twice.ok
    late = result()
    late.stopped_before_restore = False
    assert not late.ok
    text = "\n".join(render(result()))
    assert "hn0 partitioned" in text and "max concurrent singletons:      1" in text
    assert "1.60s after the cut (before the restore: true)" in text
    kill = DrillResult(lab="/l", dead="hn0", restored_on="hn1", fencing_verified=True)
    assert kill.ok and "max concurrent" not in "\n".join(render(kill))


# -- the default isolation ----------------------------------------------------------------------

def which_all(tool):
    return f"/usr/bin/{tool}"


@pytest.mark.parametrize("euid, environ, which, expected, why", [
    (0, {}, which_all, "netns", "root"),
    (1000, {}, which_all, "loopback", "not root"),
    (0, {}, lambda t: None if t == "nft" else which_all(t), "loopback", "nft not installed"),
    (0, {"SDCADM_LAB_ISOLATION": "loopback"}, which_all, "loopback", "$SDCADM_LAB_ISOLATION"),
    (1000, {"SDCADM_LAB_ISOLATION": "netns"}, which_all, "netns", "$SDCADM_LAB_ISOLATION"),
])
def test_a_new_lab_is_netns_as_root_with_its_tools_unless_told(euid, environ, which, expected,
                                                                why):
    isolation, reason = netns.default_isolation(euid, environ, which)
    assert isolation == expected and why in reason


def test_an_unknown_isolation_in_the_environment_is_refused():
    with pytest.raises(UsageError, match="is not an isolation") as e:
        netns.default_isolation(0, {"SDCADM_LAB_ISOLATION": "vlan"}, which_all)
    assert "loopback or netns" in e.value.hint


def test_the_partition_drill_refuses_a_loopback_lab_before_building_anything(tmp_path):
    from click.testing import CliRunner

    from sdcadm.cli.main import cli

    out = CliRunner().invoke(cli, ["lab", "drill", "--dir", str(tmp_path / "d"), "--fault",
                                   "partition", "--isolation", "loopback"])
    assert out.exit_code != 0 and "needs a netns lab" in out.output, out.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("isolation, sides, message", [
    ("loopback", "hn0", "share the host's network"),
    ("netns", "nope", "no server 'nope'"),
    ("netns", ",", "names no side"),
])
def test_watch_from_a_side_that_is_not_one_is_refused_before_probing(tmp_path, isolation, sides,
                                                                     message):
    from click.testing import CliRunner

    from sdcadm.cli.main import cli

    state = netns_state(tmp_path)
    if isolation == "loopback":
        servers = [dict(s, admin_ip=s["admin_ip"].replace("10.", "127.", 1))
                   for s in state.servers]
        state = LabState(dir=str(tmp_path), net="127.9.8.0/24", servers=servers, store="etcd")
    save_state(state)
    out = CliRunner().invoke(cli, ["lab", "watch", "--dir", str(tmp_path), "--from", sides,
                                   "--duration", "0"])
    assert out.exit_code != 0 and message in out.output, out.output

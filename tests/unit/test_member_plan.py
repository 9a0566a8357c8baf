"""Which etcd members change when a server becomes a headnode (pure), what a
joining member is started with, and how clients learn members."""

from types import SimpleNamespace

import pytest

from sdcadm.errors import UsageError
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.member_plan import initial_cluster, member_of_server, \
    plan_joins, ports_of
from sdcadm.store.etcd_client import learned_places
from sdcadm.store.etcd_member import check_initial_cluster, member_argv


def member(name, ip, mid):
    return {"id": mid, "name": name, "peer_urls": [f"http://{ip}:2380"],
            "client_urls": [f"http://{ip}:2379"] if name else []}


HN = [member("hn0", "10.0.0.1", "a1"), member("hn1", "10.0.0.2", "a2"),
      member("hn2", "10.0.0.3", "a3")]
UP = {f"http://10.0.0.{i}:2379": True for i in (1, 2, 3)}
CN0 = SimpleNamespace(hostname="cn0", admin_ip="10.0.0.9")


def test_a_new_member_joins_with_this_headnodes_ports_on_its_own_address():
    (join,) = plan_joins([CN0], HN, UP, 2380, 2379)
    assert (join.name, join.peer_url, join.client_url, join.existing) == \
        ("cn0", "http://10.0.0.9:2380", "http://10.0.0.9:2379", None)
    assert initial_cluster(HN, "cn0", join.peer_url) == (
        "hn0=http://10.0.0.1:2380,hn1=http://10.0.0.2:2380,hn2=http://10.0.0.3:2380,"
        "cn0=http://10.0.0.9:2380")


def test_a_member_down_refuses_the_join_before_anything_changes():
    with pytest.raises(NotViable) as e:
        plan_joins([CN0], HN, {**UP, "http://10.0.0.1:2379": False}, 2380, 2379)
    assert "the etcd member hn0 does not answer" in e.value.message
    assert "sdcadm server delete HOST" in e.value.hint


def test_a_member_added_but_never_started_refuses_unless_it_is_this_servers():
    stray = member("", "10.0.0.8", "b8")
    with pytest.raises(NotViable) as e:
        plan_joins([CN0], HN + [stray], UP, 2380, 2379)
    assert "member b8 (http://10.0.0.8:2380) was added to the cluster but never started" \
        in e.value.message
    # an earlier run added cn0's member and stopped before starting it: resumed
    ours = member("", "10.0.0.9", "c9")
    (join,) = plan_joins([CN0], HN + [ours], UP, 2380, 2379)
    assert join.existing is ours
    assert initial_cluster(HN + [ours], "cn0", join.peer_url).endswith(
        ",cn0=http://10.0.0.9:2380")


def test_a_servers_member_is_found_by_name_or_address():
    assert member_of_server(HN, "hn1", "192.0.2.1")["id"] == "a2"
    assert member_of_server(HN, "renamed", "10.0.0.3")["id"] == "a3"
    assert member_of_server(HN, "cn0", "10.0.0.9") is None


def test_ports_come_from_this_headnodes_member_or_the_defaults():
    assert ports_of("http://10.0.0.1:12380", "10.0.0.1:12379") == (12380, 12379)
    assert ports_of(None, None) == (2380, 2379)


def test_a_joining_member_starts_in_the_existing_cluster():
    argv = member_argv("/usr/bin/etcd", "cn0", "/var/lib/etcd", "http://10.0.0.9:2380",
                       "http://10.0.0.9:2379", "hn0=http://10.0.0.1:2380,cn0=http://10.0.0.9:2380",
                       "/var/log/etcd.log")
    assert argv[argv.index("--initial-cluster-state") + 1] == "existing"
    assert argv[argv.index("--data-dir") + 1] == "/var/lib/etcd"
    assert "--initial-cluster-token" not in argv


@pytest.mark.parametrize("cluster, why", [
    ("hn0=http://10.0.0.1:2380", "does not list this member"),
    ("hn0=http://10.0.0.1:2380,cn0", "is not NAME=PEER_URL"),
    ("cn0=http://10.0.0.8:2380", "does not list this member"),
])
def test_a_wrong_initial_cluster_is_refused(cluster, why):
    with pytest.raises(UsageError) as e:
        check_initial_cluster("cn0", "http://10.0.0.9:2380", cluster)
    assert why in e.value.message


def test_clients_learn_members_not_configured_and_keep_the_configured():
    configured = [("http", "10.0.0.1", 2379), ("http", "10.0.0.2", 2379)]
    urls = ["http://10.0.0.2:2379", "http://10.0.0.9:2379", "not a url:x"]
    assert learned_places(configured, urls) == configured + [("http", "10.0.0.9", 2379)]
    # hn0 removed from the cluster: still configured, still tried
    assert learned_places(configured, ["http://10.0.0.2:2379"]) == configured


class MemberList:
    """Stands in for the etcd3gw client that just answered: its member list."""

    def __init__(self, urls):
        self.urls, self.calls = urls, 0

    def get_url(self, path):
        return path

    def post(self, url, data):
        self.calls += 1
        return {"members": [{"clientURLs": [u]} for u in self.urls]}


def test_a_client_adds_learned_members_and_keeps_using_the_one_that_answered():
    from sdcadm.store.etcd_client import DISCOVER_EVERY, EtcdClient

    client = EtcdClient(["10.0.0.1:2379", "10.0.0.2:2379"], timeout=1.0)
    client.current = 1
    answered = MemberList(["http://10.0.0.2:2379", "http://10.0.0.9:2379"])
    client.learn_members(answered, clock=lambda: 100.0)
    assert client.endpoints == ["10.0.0.1:2379", "10.0.0.2:2379", "http://10.0.0.9:2379"]
    assert client.current == 1 and len(client._clients()) == 3
    # not again before DISCOVER_EVERY; then the list follows the cluster
    answered.urls = ["http://10.0.0.2:2379"]
    client.learn_members(answered, clock=lambda: 100.0 + DISCOVER_EVERY / 2)
    assert answered.calls == 1
    client.learn_members(answered, clock=lambda: 100.0 + DISCOVER_EVERY)
    assert client.endpoints == ["10.0.0.1:2379", "10.0.0.2:2379"] and client.current == 1

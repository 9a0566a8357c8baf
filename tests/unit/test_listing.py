"""The listing cache's pure parts: the picture fed key-values (store/etcd_listing.py),
the agent's query parsing and refusals (agent/listing.py), and the CLI's choice
between the agent and the store (cli/listing.py). The cache against a real etcd:
tests/integration/test_store_etcd_listing.py; through a lab's agents:
tests/integration/test_lab_share_nothing.py."""

import json
import types

import pytest

from sdcadm.agent.listing import Listings, parse_query
from sdcadm.cli.listing import Listing, agent_url
from sdcadm.config import config_from
from sdcadm.errors import RequestError, SdcadmError, StoreError, Unreachable
from sdcadm.model import Instance, Server
from sdcadm.store.etcd_keys import Keys, encode
from sdcadm.store.etcd_listing import ListingCache, Picture

S1 = "11111111-1111-4111-8111-111111111111"
S2 = "22222222-2222-4222-8222-222222222222"
IMG = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
KEYS = Keys("/dc/")


def kv(key, value):
    return {"key": key, "value": encode(value), "create_revision": 1, "mod_revision": 1,
            "lease": 0}


def server_kv(uuid, hostname):
    return kv(KEYS.server(uuid), {"uuid": uuid, "hostname": hostname, "admin_ip": "10.0.0.1"})


def inst_kv(n, server, service="sapi", alias=None):
    inst = Instance(uuid=f"aaaaaaaa-aaaa-4aaa-8aaa-{n:012d}", alias=alias or f"{service}{n}",
                    service=service, server_uuid=server, image=IMG, admin_ip=f"10.1.0.{n}")
    return kv(KEYS.instance(inst.uuid), inst.to_dict())


@pytest.fixture
def picture():
    p = Picture(KEYS)
    p.load(10, [server_kv(S1, "hn0"), server_kv(S2, "cn0")],
           [{"key": KEYS.heartbeat(S1)}],
           [inst_kv(2, S1, "napi"), inst_kv(1, S2)], kv(KEYS.revision, 7))
    return p


def test_a_loaded_picture_lists_as_the_store_does(picture):
    assert picture.model_revision == 7 and picture.etcd_revision == 10
    assert [(d["server"]["hostname"], d["alive"]) for d in picture.server_docs()] == [
        ("cn0", False), ("hn0", True)]
    assert picture.columns(["alias", "server_uuid"]) == {
        "alias": ["napi2", "sapi1"], "server_uuid": [S1, S2]}
    assert picture.columns(["alias"], service="sapi") == {"alias": ["sapi1"]}
    assert picture.columns(["alias"], server_uuid=S1) == {"alias": ["napi2"]}
    assert picture.columns(["alias"], service="sapi", server_uuid=S1) == {"alias": []}


def test_changes_apply_and_clear_only_what_they_change(picture):
    docs, stamp = picture.server_docs(), picture.stamp
    picture.apply(KEYS.heartbeat(S1), kv(KEYS.heartbeat(S1), {"at": 1}))   # a live server beats
    assert picture.server_docs() is docs and picture.stamp == stamp
    picture.apply(KEYS.heartbeat(S1), None)                                # its lease ran out
    assert [d["alive"] for d in picture.server_docs()] == [False, False]
    assert picture.columns(["server_uuid", "generation"]) == {"server_uuid": [S1, S2],
                                                               "generation": [1, 1]}
    moved = inst_kv(1, S1)
    moved["value"] = moved["value"].replace('"generation":1', '"generation":2')
    picture.apply(moved["key"], moved)   # same place in the order, new record
    assert picture.columns(["server_uuid", "generation"]) == {"server_uuid": [S1, S1],
                                                               "generation": [1, 2]}
    picture.apply(inst_kv(3, S1, alias="aaa3")["key"], inst_kv(3, S1, alias="aaa3"))
    assert picture.columns(["alias"])["alias"] == ["napi2", "aaa3", "sapi1"]
    picture.apply(inst_kv(2, S1, "napi")["key"], None)
    picture.apply(KEYS.server(S2), None)
    picture.apply(KEYS.revision, kv(KEYS.revision, 9))
    picture.apply(KEYS.dir("placed", S1) + "x", kv("x", {}))               # not listed: ignored
    assert picture.model_revision == 9
    assert [d["server"]["hostname"] for d in picture.server_docs()] == ["hn0"]
    assert picture.columns(["alias"])["alias"] == ["aaa3", "sapi1"]


def test_a_damaged_record_in_a_change_is_a_store_error_naming_its_key(picture):
    bad = {"key": KEYS.instance("x"), "value": "{not json", "mod_revision": 11}
    with pytest.raises(StoreError, match="does not hold JSON"):
        picture.apply(bad["key"], bad)


def test_an_unknown_field_is_refused(picture):
    with pytest.raises(SdcadmError, match="unknown instance field"):
        picture.columns(["alias", "password"])


class Lines:
    """A watch answer's lines, as requests' iter_lines gives them."""

    def __init__(self, *chunks):
        self.chunks = chunks

    def iter_lines(self):
        return (json.dumps(c).encode() for c in self.chunks)


def test_a_compacted_or_cancelled_watch_makes_the_cache_read_everything_again():
    store = types.SimpleNamespace(client=None, keys=KEYS)
    for chunk in ({"result": {"compact_revision": "40", "canceled": True}},
                  {"error": {"message": "boom"}}):
        cache = ListingCache(store)
        with pytest.raises(StoreError, match="cancelled"):
            cache._stream(Lines({"result": {"created": True}}, chunk))


def test_a_stream_applies_events_and_resumes_after_the_last_one():
    store = types.SimpleNamespace(client=None, keys=KEYS)
    cache = ListingCache(store)
    cache.picture.load(5, [], [], [], kv(KEYS.revision, 1))
    event = {"type": "PUT", "kv": {"key": _b64(KEYS.revision), "value": _b64("2"),
                                   "mod_revision": "8"}}
    delete = {"type": "DELETE", "kv": {"key": _b64(KEYS.heartbeat(S1)), "mod_revision": "9"}}
    cache._stream(Lines({"result": {"created": True, "header": {"revision": "12"}}},
                        {"result": {"header": {"revision": "12"}, "events": [event, delete]}}))
    assert cache.following and cache.picture.model_revision == 2
    # after the last event applied (9), not after the header's revision (12)
    assert cache.picture.etcd_revision == 9


def _b64(text):
    import base64

    return base64.b64encode(text.encode()).decode()


# -- the agent's side ---------------------------------------------------------------

@pytest.mark.parametrize("query, message", [
    ("min_revision=-1", "whole number"),
    ("min_revision=1e9", "whole number"),
    ("min_revision=" + "9" * 19, "whole number"),
    ("min_revision=1&min_revision=2", "given twice"),
    ("password=x", "unknown query parameter"),
    ("server_uuid=../../etc", "UUID"),
    ("a" * 5000, "over 4096 bytes"),
    ("fields", "malformed"),
    ("&".join(f"f{i}=1" for i in range(20)), "malformed"),
])
def test_a_bad_query_is_refused_with_the_reason(query, message):
    with pytest.raises(RequestError, match=message) as refused:
        parse_query(query)
    assert refused.value.status == 400


def test_a_good_query_parses():
    assert parse_query("") == {}
    assert parse_query(f"fields=alias,uuid&service=sapi&server_uuid={S1}&min_revision=3") == {
        "fields": ["alias", "uuid"], "service": "sapi", "server_uuid": S1, "min_revision": 3}


class Stores:
    def __init__(self, store=None, error=None):
        self.store, self.error = store, error

    def get(self):
        if self.error:
            raise self.error
        return self.store


def test_the_agent_has_no_listing_on_sqlite_and_says_why_when_the_store_is_down():
    with pytest.raises(RequestError, match="read it directly") as refused:
        Listings(Stores(types.SimpleNamespace(backend="sqlite"))).servers("")
    assert refused.value.status == 404
    with pytest.raises(RequestError, match="does not answer") as refused:
        Listings(Stores(error=StoreError("no etcd endpoint answers"))).servers("")
    assert refused.value.status == 503
    with pytest.raises(RequestError, match="unknown instance field") as refused:
        Listings(Stores(types.SimpleNamespace(backend="etcd"))).instances("fields=alias,secret")
    assert refused.value.status == 400


# -- the CLI's side -----------------------------------------------------------------

class Client:
    url = "http://127.0.0.1:5309"

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def listing(self, path):
        self.asked.append(path)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Store:
    backend = "etcd"

    def __init__(self):
        self.calls = []

    def list_servers(self):
        self.calls.append("list_servers")
        return [Server(S1, "hn0", "10.0.0.1")]

    def hostnames(self, of_instances=False):
        self.calls.append(("hostnames", of_instances))
        return {S1: "hn0"}

    def instance_columns(self, fields, service=None, server_uuid=None):
        self.calls.append("instance_columns")
        return {f: ["from-store"] for f in fields}


def test_the_agents_answer_is_used_and_the_store_never_opened():
    opened = []
    answer = {"revision": 3, "servers": [{"server": {"uuid": S1, "hostname": "hn0",
                                                     "admin_ip": "10.0.0.1"}, "alive": True}]}
    listing = Listing(lambda: opened.append(1), Client(answer), clock=lambda: 1000.0)
    servers = listing.list_servers()
    assert [(s.hostname, s.last_heartbeat) for s in servers] == [("hn0", 1000.0)]
    assert listing.hostnames() == {S1: "hn0"} and not opened


@pytest.mark.parametrize("answer", [
    Unreachable("the agent at http://127.0.0.1:5309 does not answer"),
    {"revision": 3, "columns": {"alias": ["a", "b"], "uuid": ["x"]}},   # lengths differ
    {"revision": 3},                                                    # no columns
    {"revision": 3, "columns": {"alias": "ab", "uuid": "xy"}},          # not lists
    ["not", "a", "dict"],
])
def test_an_agent_that_cannot_answer_or_answers_wrong_leaves_it_to_the_store(answer):
    store, client = Store(), Client(answer)
    listing = Listing(lambda: store, client)
    assert listing.instance_columns(["alias", "uuid"]) == {"alias": ["from-store"],
                                                           "uuid": ["from-store"]}
    assert listing.instance_columns(["alias"]) == {"alias": ["from-store"]}
    assert len(client.asked) == 1, "the agent was asked again after it failed"


def test_listing_agent_makes_a_failing_agent_the_error():
    listing = Listing(lambda: Store(), Client(Unreachable("no answer")), mode="agent")
    with pytest.raises(SdcadmError, match="listing at http://127.0.0.1:5309 failed"):
        listing.list_servers()


def test_the_query_names_service_and_server_escaped():
    client = Client({"revision": 1, "columns": {"alias": []}})
    Listing(lambda: Store(), client).instance_columns(["alias"], service="a&b=c", server_uuid=S1)
    assert client.asked == [f"/v1/listing/instances?fields=alias&service=a%26b%3Dc&server_uuid={S1}"]


def test_a_wildcard_listen_address_is_reached_on_loopback():
    def url(listen):
        return agent_url(config_from({"agent": {"listen": listen, "port": 6000}}, "t"))

    assert url("0.0.0.0") == "http://127.0.0.1:6000"
    assert url("10.0.0.5") == "http://10.0.0.5:6000"
    assert url("::1") == "http://[::1]:6000"


def test_a_bad_listing_setting_is_a_config_error():
    from sdcadm.errors import ConfigError

    with pytest.raises(ConfigError, match="'listing' must be auto, store or agent"):
        from sdcadm.config import load_config

        load_config(None, environ={"SDCADM_LISTING": "fast"})


def test_without_the_agent_hostnames_are_the_stores_two_columns_not_its_servers():
    store = Store()
    listing = Listing(lambda: store, None)
    assert listing.hostnames(of_instances=True) == {S1: "hn0"}
    assert store.calls == [("hostnames", True)]    # no Server built per server


def test_an_agent_that_cannot_answer_leaves_hostnames_to_the_stores_two_columns():
    store = Store()
    client = Client(Unreachable("the agent at http://127.0.0.1:5309 does not answer"))
    listing = Listing(lambda: store, client)
    assert listing.hostnames(of_instances=True) == {S1: "hn0"}
    assert client.asked == ["/v1/listing/servers"] and store.calls == [("hostnames", True)]

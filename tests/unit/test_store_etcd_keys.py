"""The etcd store's key layout and record codec (pure: no etcd needed)."""

import pytest

from sdcadm.errors import StoreError
from sdcadm.model import Service
from sdcadm.store.etcd_keys import Keys, decode, encode, record


def test_every_record_has_its_place_under_the_prefix():
    keys = Keys("/dc1/")
    assert keys.schema == "/dc1/meta/schema" and keys.revision == "/dc1/meta/revision"
    assert keys.server("u1") == "/dc1/servers/u1"
    assert keys.restore_status("r1", "i1") == "/dc1/restore-status/r1/i1"
    assert keys.dir("restore-status", "r1") == "/dc1/restore-status/r1/"
    assert keys.dir("servers") == "/dc1/servers/"


def test_a_slash_in_a_name_cannot_reach_another_records_keys():
    keys = Keys("/dc1/")
    assert keys.service("a/../locks/dc") == "/dc1/services/a%2F..%2Flocks%2Fdc"
    assert not keys.restore_status("r1/x", "i").startswith(keys.dir("restore-status", "r1"))


def test_records_round_trip_and_damage_names_the_key():
    service = Service("sapi", "img", {"ha": True})
    kv = {"key": "/dc1/services/sapi", "value": encode(service.to_dict())}
    assert record(Service, kv) == service
    for bad in ("{oops", "[1, 2]", '{"image": "x"}'):
        with pytest.raises(StoreError, match="/dc1/services/sapi") as exc:
            record(Service, {"key": "/dc1/services/sapi", "value": bad})
        assert "etcdctl put" in exc.value.hint
    assert decode({"key": "k", "value": "3"}) == 3

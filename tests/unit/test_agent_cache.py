import json

from sdcadm.agent.cache import StateCache, write_json_atomic
from sdcadm.model import Image, Instance

ME = "11111111-1111-1111-1111-111111111111"
INST = Instance(uuid="00000000-0000-0000-0000-000000000001", alias="sapi0", service="sapi",
                server_uuid=ME, image="33333333-3333-3333-3333-333333333333",
                admin_ip="127.99.99.10", port=8080)
IMG = Image(uuid=INST.image, name="sapi", version="1.0.0", sha256="a" * 64)


def test_round_trip(tmp_path):
    cache = StateCache(tmp_path / "sub" / "cache.json")
    assert cache.save(ME, [INST], {IMG.uuid: IMG}, 7, 123.0)
    assert StateCache(cache.path).load(ME) == ([INST], {IMG.uuid: IMG}, 123.0)
    assert [p.name for p in cache.path.parent.iterdir()] == ["cache.json"]  # no temp left


def test_unchanged_content_is_not_rewritten(tmp_path):
    cache = StateCache(tmp_path / "cache.json")
    assert cache.save(ME, [INST], {}, 7, 1.0)
    assert not cache.save(ME, [INST], {}, 7, 2.0)
    assert cache.save(ME, [INST], {}, 8, 3.0)


def test_missing_corrupt_foreign_or_invalid_cache_is_empty(tmp_path):
    path = tmp_path / "cache.json"
    assert StateCache(path).load(ME) == ([], {}, None)
    path.write_text("{not json")
    assert StateCache(path).load(ME) == ([], {}, None)
    StateCache(path).save("22222222-2222-2222-2222-222222222222", [INST], {}, 1, 1.0)
    assert StateCache(path).load(ME) == ([], {}, None)
    doc = {"version": 1, "server_uuid": ME, "instances": [{"uuid": "x"}], "images": {}}
    path.write_text(json.dumps(doc))
    assert StateCache(path).load(ME) == ([], {}, None)


def test_atomic_write_replaces(tmp_path):
    path = tmp_path / "f.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}

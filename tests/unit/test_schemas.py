import pytest

from sdcadm.errors import ValidationError
from sdcadm.model import Image, Instance, Network, Server, Service, Task
from sdcadm.schemas import problems, schema, validate

U = "11111111-1111-4111-8111-111111111111"
GOOD = {
    "server": Server(U, "hn0", "127.0.0.1").to_dict(),
    "service": Service("sapi", U).to_dict(),
    "instance": Instance(U, "sapi0", "sapi", U, U, "127.0.0.2").to_dict(),
    "image": Image(U, "sapi", "1.0.0", "a" * 64).to_dict(),
    "network": Network("admin", "127.0.0.0/24", {"127.0.0.1": U}).to_dict(),
    "task": Task(U, "restore").to_dict(),
}


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_model_records_validate(kind):
    validate(kind, GOOD[kind])


@pytest.mark.parametrize("kind,field,value", [
    ("server", "uuid", "not-a-uuid"),
    ("server", "admin_ip", "localhost"),
    ("instance", "generation", 0),
    ("instance", "state", "exploded"),
    ("instance", "server_uuid", "AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA"),
    ("image", "sha256", "xyz"),
    ("network", "cidr", "127.0.0.0"),
    ("task", "state", "maybe"),
    ("service", "name", "Has Spaces"),
])
def test_violations_name_the_field(kind, field, value):
    doc = dict(GOOD[kind], **{field: value})
    with pytest.raises(ValidationError) as exc:
        validate(kind, doc, "somewhere.json")
    assert f"at {field}:" in str(exc.value) and "somewhere.json" in str(exc.value)


def test_all_problems_listed():
    found = problems("instance", {"uuid": "x", "alias": 5})
    assert len(found) >= 3  # bad uuid, bad alias, missing required fields


def test_unknown_fields_rejected():
    assert problems("server", dict(GOOD["server"], extra=1))


def test_payload_schema_embeds_instance_and_image():
    validate("payload", {"instance": GOOD["instance"], "image": GOOD["image"]})
    with pytest.raises(ValidationError, match="instance.uuid"):
        validate("payload", {"instance": dict(GOOD["instance"], uuid="x"), "image": GOOD["image"]})


def test_unknown_schema():
    with pytest.raises(KeyError):
        schema("nope")

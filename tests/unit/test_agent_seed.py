"""Seeding a restored instance checks the copy it clones: a dataset copy or an
image changed since it was pulled is refused naming the file, and nothing of
it is left where the instance would run."""

import json

import pytest

from sdcadm.agent.provision import Layout
from sdcadm.agent.seed import SEED_KEY, Seeder
from sdcadm.errors import RestoreDataBroken
from sdcadm.model import Instance
from sdcadm.restore_data.access import RestoreData
from tests.unit.restore_dc import dc  # noqa: F401 (a fixture)
from tests.unit.restore_dc import HN1, IMG, SAPI


def restored(uuid=SAPI, service="sapi"):
    """The instance record `service restore` gives the receiving agent."""
    return Instance(uuid, f"{service}0", service, HN1, IMG, "127.0.1.9", delegate_dataset=True,
                    params={SEED_KEY: {"instance": uuid, "service": service}})


@pytest.fixture
def seeding(dc):
    dc.sync()
    layout = Layout(dc.config.root)
    seeder = Seeder(dc.config, layout)
    seeder._data = RestoreData(dc.config, dc.backend)
    manifest = json.loads(dc.layout.manifest("sapi").read_text())
    snap = manifest["instances"][SAPI]["dataset"]["snapshot"]
    replica = dc.layout.dataset_dir("sapi", SAPI) / "snapshots" / snap
    return seeder, layout, replica


def left_behind(layout, uuid=SAPI):
    """What a refused seed left in the instance's zone (nothing, or the names)."""
    zone = layout.zone(uuid)
    return sorted(p.name for p in zone.iterdir()) if zone.exists() else []


def test_a_good_copy_is_seeded(seeding):
    seeder, layout, _replica = seeding
    assert "seeded from sapi0's copy" in seeder.prepare(restored())
    assert (layout.data(SAPI) / "canary").read_bytes() == b"hello"
    assert (layout.data(SAPI) / "sub" / "deep").read_bytes() == b"x" * 1000
    assert (layout.images / f"{IMG}.file").is_file()
    assert left_behind(layout) == ["data"]          # no "unchecked" mark left
    assert seeder.prepare(restored()) == "images of sapi0 installed"   # idempotent


@pytest.mark.parametrize("tamper,named", [
    (lambda r: (r / "canary").write_bytes(b"HELLO"), "changed: canary"),    # in place, same size
    (lambda r: (r / "sub" / "deep").write_bytes(b"x" * 10), "changed: sub/deep"),  # truncated
    (lambda r: (r / "planted").write_bytes(b"?"), "extra: planted"),
    (lambda r: (r / "canary").unlink(), "missing: canary"),
])
def test_a_changed_dataset_copy_is_refused_naming_the_file(seeding, tamper, named):
    seeder, layout, replica = seeding
    tamper(replica)
    with pytest.raises(RestoreDataBroken) as exc:
        seeder.prepare(restored())
    message = str(exc.value)
    assert f"datasets/{SAPI}@{replica.name}: {named}" in message
    assert "refusing to restore sapi0 (sapi)" in message
    assert "sdcadm service sync-restore-data sapi" in message
    assert "another headnode" in message
    assert left_behind(layout) == []


def test_a_changed_image_is_refused_before_it_is_installed(seeding, dc):
    seeder, layout, _replica = seeding
    (dc.layout.service_dir("sapi") / "images" / f"{IMG}.file").write_bytes(b"not the image")
    with pytest.raises(RestoreDataBroken, match=f"changed: images/{IMG}.file"):
        seeder.prepare(restored())
    assert not (layout.images / f"{IMG}.file").exists()
    assert left_behind(layout) == []


def test_a_clone_cut_short_before_its_check_is_made_again(seeding):
    """A crash between cloning and checking leaves the data directory and its
    mark: the next attempt does not take it for a finished seed."""
    seeder, layout, replica = seeding
    layout.data(SAPI).mkdir(parents=True)
    (layout.data(SAPI) / "canary").write_bytes(b"half a clone, never checked")
    (layout.zone(SAPI) / ".data.unchecked").touch()
    assert "seeded from" in seeder.prepare(restored())
    assert (layout.data(SAPI) / "canary").read_bytes() == b"hello"
    assert left_behind(layout) == ["data"]
    (replica / "canary").write_bytes(b"HELLO")      # a finished seed is not checked again
    assert seeder.prepare(restored()) == "images of sapi0 installed"


def test_verify_copy_finds_what_seeding_would_refuse_and_leaves_no_clone(seeding, dc):
    _seeder, _layout, replica = seeding
    data = RestoreData(dc.config, dc.backend)
    assert data.verify_copy(data.instance_copy(SAPI)) == []
    (replica / "canary").write_bytes(b"HELLO")
    problems = data.verify_copy(data.instance_copy(SAPI))
    assert len(problems) == 1 and problems[0].startswith(f"datasets/{SAPI}@{replica.name}: "
                                                         "changed: canary ")
    scratch = dc.layout.scratch
    assert not scratch.exists() or list(scratch.iterdir()) == []


def test_the_agent_fails_an_instance_whose_copy_is_refused_and_says_why(seeding, dc):
    """The refusal reaches /v1/instances: state failed, the reason naming the
    file, and a failure kind a procedure can stop waiting on."""
    from sdcadm.agent.actions import Actions
    from sdcadm.agent.delegate_datasets import DirDelegateDatasets
    from sdcadm.agent.metrics import AgentMetrics

    seeder, layout, replica = seeding
    (replica / "canary").write_bytes(b"HELLO")
    actions = Actions(layout, dc.config.image_source, DirDelegateDatasets(), AgentMetrics(),
                      seeder=seeder)
    slots = {}
    actions.provision(slots, {IMG: dc.image}, restored(), now=0.0)
    slot = slots[SAPI]
    assert slot.state == "failed" and slot.failure == "restore-data-refused"
    assert slot.error.startswith("provisioning failed: refusing to restore sapi0 (sapi)")
    assert "changed: canary" in slot.error
    assert left_behind(layout) == []


def test_a_directory_that_is_not_an_unfinished_clone_is_never_cloned_over(seeding, dc):
    _seeder, layout, _replica = seeding
    data = RestoreData(dc.config, dc.backend)
    layout.data(SAPI).mkdir(parents=True)
    (layout.data(SAPI) / "precious").write_bytes(b"keep me")
    from sdcadm.errors import DatasetError

    with pytest.raises(DatasetError, match="exists already"):
        data.clone_dataset(data.instance_copy(SAPI), layout.data(SAPI))
    assert (layout.data(SAPI) / "precious").read_bytes() == b"keep me"

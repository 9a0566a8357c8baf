"""Copies of instances gone from the DC are pruned after their grace, never
because a store lists nothing."""

from sdcadm.model import Instance
from tests.unit.restore_dc import BINDER, DC, HN0, HN1, IMG, IMGAPI, SAPI, VMAPI


def test_copies_of_vanished_instances_are_pruned_after_grace(tmp_path):
    dc = DC(tmp_path, prune_grace=3600)
    (dc.data(SAPI) / "canary").write_bytes(b"hello")
    dc.store.create_instance(Instance("a0000000-0000-4000-8000-000000000009", "sapi1", "sapi",
                                      HN0, IMG, "127.0.1.9", delegate_dataset=True))
    dc.data("a0000000-0000-4000-8000-000000000009").mkdir(parents=True)
    assert dc.sync()[0].ok
    dc.store.delete_instance("a0000000-0000-4000-8000-000000000009")
    dc.store.delete_instance(IMGAPI)
    summary, _ = dc.sync()
    assert summary.pruned == ()
    assert dc.layout.dataset_dir("imgapi", IMGAPI).exists()
    assert dc.verify().ok                  # copies waiting to be pruned still verify
    dc.puller.config._values["restore_data"]["prune_grace"] = 0
    summary, _ = dc.sync()
    assert sorted(summary.pruned) == ["imgapi/" + IMGAPI, "sapi/a0000000-0000-4000-8000-000000000009"]
    assert not dc.layout.service_dir("imgapi").exists()
    assert dc.layout.vm_uuids("sapi") == [SAPI]
    assert dc.layout.dataset_uuids("sapi") == [SAPI]
    assert {r.alias for r in dc.store.list_restore_status(HN1)} == {"sapi0", "vmapi0"}
    assert dc.verify().ok
    dc.store.close()


def test_empty_store_never_prunes(tmp_path):
    dc = DC(tmp_path, prune_grace=0)
    (dc.data(SAPI) / "canary").write_bytes(b"hello")
    dc.sync()
    for uuid in (SAPI, IMGAPI, VMAPI, BINDER):
        dc.store.delete_instance(uuid)
    assert dc.sync()[0].pruned == ()
    assert dc.layout.service_dir("sapi").exists()
    dc.store.close()

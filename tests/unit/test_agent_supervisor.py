"""The supervisor's gathering and fencing rules, with a fake store (no processes:
every case here must end up starting nothing)."""

import threading
from dataclasses import replace

from sdcadm.agent.cache import StateCache
from sdcadm.agent.metrics import AgentMetrics
from sdcadm.agent.plan import Provision
from sdcadm.agent.provision import Layout
from sdcadm.agent.slot import Slot
from sdcadm.agent.supervisor import Supervisor
from sdcadm.errors import NotFound, StoreUnreachable
from sdcadm.model import Instance, Server

ME = "11111111-1111-1111-1111-111111111111"
IMG = "33333333-3333-3333-3333-333333333333"
INST = Instance(uuid="00000000-0000-0000-0000-000000000001", alias="sapi0", service="sapi",
                server_uuid=ME, image=IMG, admin_ip="127.99.99.10", port=8080)


class FakeStore:
    def __init__(self, instances=(), fenced=False, known=True):
        self.instances = {i.uuid: i for i in instances}
        self.server = Server(uuid=ME, hostname="hn0", admin_ip="127.99.99.1", fenced=fenced)
        self.known, self.down, self.writes = known, False, []

    def _check(self):
        if self.down:
            raise StoreUnreachable("down")

    def list_instances(self, server_uuid=None):
        self._check()
        return [i for i in self.instances.values() if i.server_uuid == server_uuid]

    def get_instance(self, uuid):
        self._check()
        if uuid not in self.instances:
            raise NotFound(uuid)
        return self.instances[uuid]

    def get_image(self, uuid):
        self._check()
        raise NotFound(uuid)

    def get_server(self, uuid):
        self._check()
        if not self.known:
            raise NotFound(uuid)
        return self.server

    def revision(self):
        self._check()
        return 1

    def assignment(self, server_uuid):
        self._check()
        return (self.server if self.known else None, self.list_instances(server_uuid=server_uuid),
                self.revision())

    def set_instance_states(self, updates):
        self._check()
        self.writes += updates
        return [True] * len(updates)


class Handle:
    def __init__(self, store):
        self.store = store

    def get(self):
        return self.store


def supervisor(tmp_path, store, clock):
    return Supervisor(ME, Layout(tmp_path / "root"), tmp_path / "images", Handle(store),
                      StateCache(tmp_path / "cache.json"), AgentMetrics(), lease=15.0,
                      clock=lambda: clock[0])


def test_a_fenced_server_provisions_nothing(tmp_path):
    store = FakeStore([INST], fenced=True)
    sup = supervisor(tmp_path, store, [100.0])
    sup.load()
    sup.run_once()
    assert not sup.may_start(100.0)
    assert sup.slots == {} and not (tmp_path / "root" / "zones").exists()
    assert [r["state"] for r in sup.instances()] == ["provisioning"]


def test_an_unregistered_server_provisions_nothing(tmp_path):
    sup = supervisor(tmp_path, FakeStore([INST], known=False), [100.0])
    sup.run_once()
    assert sup.slots == {} and sup.store_ok


def test_a_server_not_set_up_provisions_nothing(tmp_path):
    # registered by its agent, not yet taken into the DC by `sdcadm server setup`
    store = FakeStore([INST])
    store.server.setup = False
    sup = supervisor(tmp_path, store, [100.0])
    sup.run_once()
    assert not sup.may_start(100.0) and sup.store_ok
    assert sup.slots == {} and not (tmp_path / "root" / "zones").exists()
    store.server.setup = True  # set up: the same pass now provisions (may_start)
    sup.run_once()
    assert sup.may_start(100.0)


def test_ownership_lapses_after_the_lease_without_the_store(tmp_path):
    clock = [100.0]
    store = FakeStore([])
    sup = supervisor(tmp_path, store, clock)
    sup.run_once()
    assert sup.may_start(100.0)
    store.down = True
    clock[0] = 110.0
    sup.run_once()
    assert not sup.store_ok and sup.may_start(110.0)
    clock[0] = 116.0
    sup.run_once()
    assert not sup.may_start(116.0)


def test_an_unreachable_store_destroys_nothing_and_uses_the_cache(tmp_path):
    StateCache(tmp_path / "cache.json").save(ME, [INST], {}, 1, 1.0)
    zone = tmp_path / "root" / "zones" / INST.uuid
    zone.mkdir(parents=True)
    store = FakeStore([])
    store.down = True
    sup = supervisor(tmp_path, store, [100.0])
    sup.load()
    sup.run_once()
    assert zone.exists() and INST.uuid in sup.slots
    assert [r["uuid"] for r in sup.instances()] == [INST.uuid]
    assert not sup.may_start(100.0)


def test_a_failed_provisioning_is_recorded_and_written_back(tmp_path):
    store = FakeStore([INST])
    sup = supervisor(tmp_path, store, [100.0])
    sup.run_once()
    slot = sup.slots[INST.uuid]
    assert slot.state == "failed" and "not in the DC store" in slot.error
    assert slot.not_before == 100.5
    assert store.writes == [(INST.uuid, "failed", ME, 1)]
    assert not (tmp_path / "root" / "zones" / INST.uuid).exists()
    sup.run_once()  # within the backoff: no new attempt
    assert sup.slots[INST.uuid].failures == 1


def test_restart_requests_only_for_supervised_instances(tmp_path):
    sup = supervisor(tmp_path, FakeStore([]), [100.0])
    assert not sup.request_restart(INST.uuid)
    sup.slots[INST.uuid] = Slot(INST.uuid)
    assert sup.request_restart(INST.uuid)


def test_a_crash_while_provisioning_fails_that_instance_only(tmp_path, monkeypatch):
    """An unexpected error (a bug, or an input no check foresaw) in one
    instance's provisioning fails that instance with a reason, and the pass
    goes on to the next one."""
    from sdcadm.agent import actions
    from sdcadm.model import Image

    other = Instance(uuid="00000000-0000-0000-0000-000000000002", alias="vmapi0",
                     service="vmapi", server_uuid=ME, image=IMG, admin_ip="127.99.99.11",
                     port=8080)
    store = FakeStore([INST, other])
    store.get_image = lambda uuid: Image(uuid=IMG, name="x", version="1", sha256="0" * 64)
    tried = []

    def provision(layout, instance, image, source, **options):
        tried.append(instance.alias)
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(actions.provision, "provision", provision)
    sup = supervisor(tmp_path, store, [100.0])
    sup.run_once()
    assert sorted(tried) == ["sapi0", "vmapi0"]
    for inst in (INST, other):
        slot = sup.slots[inst.uuid]
        assert slot.state == "failed"
        assert "internal error (RecursionError: maximum recursion depth exceeded)" in slot.error
    assert sorted(w[0] for w in store.writes) == sorted([INST.uuid, other.uuid])


def test_a_level_moved_here_is_provisioned_side_by_side(tmp_path):
    """Three instances to provision in one pass are provisioned at once: each
    provisioning waits at a barrier for the other two (done one after the
    other, the first would wait alone and the barrier would break)."""
    insts = [replace(INST, uuid=f"00000000-0000-0000-0000-00000000000{n}", alias=f"sapi{n}")
             for n in (1, 2, 3)]
    sup = supervisor(tmp_path, FakeStore(insts), [100.0])
    barrier, done = threading.Barrier(3, timeout=10), []

    class Together:
        def do(self, action, slots, images, now):
            if isinstance(action, Provision):
                barrier.wait()  # BrokenBarrierError if not all three are here
                done.append(action.instance.uuid)

        def url(self, instance):
            return None

    sup.actions = Together()
    sup.run_once()
    assert sorted(done) == sorted(i.uuid for i in insts) and not barrier.broken


class Recording:
    """Actions that only record what they are asked, laying out a slot as a
    real provisioning would (its payload), so that the next plan sees it."""

    def __init__(self):
        self.done = []

    def do(self, action, slots, images, now):
        from sdcadm.agent.plan import Destroy, Start

        self.done.append((type(action).__name__, getattr(action, "uuid", None)
                          or action.instance.alias))
        if isinstance(action, Provision):
            slot = slots.setdefault(action.instance.uuid, Slot(action.instance.uuid))
            slot.instance, slot.payload = action.instance, {"instance": action.instance.to_dict()}
        elif isinstance(action, Start):
            slots[action.instance.uuid].staged_until = None
            slots[action.instance.uuid].state = "running"
        elif isinstance(action, Destroy):
            del slots[action.uuid]

    def url(self, instance):
        return None


def test_a_staged_instance_is_provisioned_not_started_then_started_by_its_move(tmp_path):
    from sdcadm.model import Image

    clock = [100.0]
    elsewhere = replace(INST, server_uuid="22222222-2222-2222-2222-222222222222")
    store = FakeStore([elsewhere])
    store.list_images = lambda: [Image(uuid=IMG, name="sapi", version="1", sha256="0" * 64)]
    store.get_instance = lambda uuid: (_ for _ in ()).throw(AssertionError("read while staged"))
    sup = supervisor(tmp_path, store, clock)
    sup.actions = Recording()
    sup.request_stage([replace(INST, generation=1)])
    assert sup.wake.is_set()
    sup.run_once()
    assert sup.actions.done == [("Provision", "sapi0")]
    assert [(r["alias"], r["state"]) for r in sup.instances()] == [("sapi0", "staged")]
    sup.run_once()  # waiting for its move: neither deposed, started nor read about
    assert sup.actions.done == [("Provision", "sapi0")]
    store.instances[INST.uuid] = replace(INST, generation=2)  # the restore's move
    sup.run_once()
    assert sup.actions.done[1:] == [("Start", "sapi0"), ("RecordGeneration", "sapi0")]


def test_a_staged_instance_whose_move_never_comes_is_destroyed(tmp_path):
    from sdcadm.agent.supervisor import STAGE_WAIT
    from sdcadm.model import Image

    clock = [100.0]
    store = FakeStore([replace(INST, server_uuid="22222222-2222-2222-2222-222222222222")])
    store.list_images = lambda: [Image(uuid=IMG, name="sapi", version="1", sha256="0" * 64)]
    sup = supervisor(tmp_path, store, clock)
    sup.actions = Recording()
    sup.request_stage([INST])
    sup.run_once()
    clock[0] = 100.0 + STAGE_WAIT
    sup.run_once()
    assert sup.actions.done == [("Provision", "sapi0"), ("Destroy", INST.uuid)]
    assert sup.slots == {}


def test_a_fenced_server_stages_nothing(tmp_path):
    store = FakeStore([], fenced=True)
    sup = supervisor(tmp_path, store, [100.0])
    sup.actions = Recording()
    sup.request_stage([INST])
    sup.run_once()
    assert sup.actions.done == [] and sup.slots == {}


def test_a_stage_request_waits_for_a_pass_that_reaches_the_store(tmp_path):
    from sdcadm.model import Image

    store = FakeStore([replace(INST, server_uuid="22222222-2222-2222-2222-222222222222")])
    store.list_images = lambda: [Image(uuid=IMG, name="sapi", version="1", sha256="0" * 64)]
    sup = supervisor(tmp_path, store, [100.0])
    sup.actions = Recording()
    sup.run_once()
    store.down = True
    sup.request_stage([INST])
    sup.run_once()
    assert sup.actions.done == []
    store.down = False
    sup.run_once()
    assert sup.actions.done == [("Provision", "sapi0")]


def test_staging_runs_at_the_lowest_cpu_priority_and_provisioning_at_the_usual(tmp_path):
    """What a restore waits for (this pass's provisions and starts) must not
    share the CPU evenly with what it will need next (staging)."""
    import os

    from sdcadm.agent.supervisor import STAGING_NICE
    from sdcadm.model import Image

    other = replace(INST, uuid="00000000-0000-0000-0000-000000000002", alias="vmapi0",
                    admin_ip="127.99.99.11")
    store = FakeStore([INST, replace(other, server_uuid="22222222-2222-2222-2222-222222222222")])
    store.list_images = lambda: [Image(uuid=IMG, name="sapi", version="1", sha256="0" * 64)]
    sup = supervisor(tmp_path, store, [100.0])
    nice = {}

    class Niceness(Recording):
        def do(self, action, slots, images, now):
            if isinstance(action, Provision):
                nice[action.instance.alias] = os.getpriority(os.PRIO_PROCESS, 0)
            super().do(action, slots, images, now)

    sup.actions = Niceness()
    sup.request_stage([other])
    base = os.getpriority(os.PRIO_PROCESS, 0)
    sup.run_once()
    assert nice == {"sapi0": base, "vmapi0": max(base, STAGING_NICE)}

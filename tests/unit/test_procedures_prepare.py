"""``prepare()`` of restore and migrate gathers facts through its context only.

Small fakes stand in for the store (read side), this headnode's restore data,
the agents and the clock: what a procedure plans must follow from them alone
(no wall clock, no file the context does not name, no agent it does not make).
The decisions themselves are tested in test_procedures_planning.py.
"""

from dataclasses import dataclass, replace

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.config import load_config
from sdcadm.errors import ConfigError, NotFound, RestoreDataBroken
from sdcadm.model import Instance, Server
from sdcadm.procedures import ProcedureContext
from sdcadm.procedures.migrate import MigrateServices
from sdcadm.procedures.planning import NotViable
from sdcadm.procedures.restore import RestoreServices

NOW = 5000.0
IMG = "99999999-9999-4999-8999-999999999999"
HN0 = Server("00000000-0000-4000-8000-000000000000", "hn0", "127.0.0.1", headnode=True,
             last_heartbeat=NOW - 500, agent_port=5309)
HN1 = Server("11111111-1111-4111-8111-111111111111", "hn1", "127.0.0.2", headnode=True,
             last_heartbeat=NOW - 1, agent_port=5309)
SAPI = Instance("aaaaaaaa-aaaa-4aaa-8aaa-000000000001", "sapi0", "sapi", HN0.uuid, IMG,
                "127.0.1.1", port=8080, delegate_dataset=True)
ASSETS = Instance("aaaaaaaa-aaaa-4aaa-8aaa-000000000002", "assets0", "assets", HN0.uuid, IMG,
                  "127.0.1.2", port=8080)


class FakeStore:
    """The reads prepare() makes; any write would fail the test."""

    def __init__(self, servers, instances):
        self.servers, self.instances = {s.uuid: s for s in servers}, list(instances)

    def list_servers(self):
        return list(self.servers.values())

    def list_instances(self, server_uuid=None):
        return [i for i in self.instances if server_uuid in (None, i.server_uuid)]

    def get_server(self, uuid):
        try:
            return self.servers[uuid]
        except KeyError:
            raise NotFound(f"no server {uuid}") from None

    def find_server(self, ref):
        return next(s for s in self.servers.values() if ref in (s.uuid, s.hostname))


@dataclass
class FakeCopy:
    as_of: float
    snapshot: str | None
    dataset: dict | None
    status: str = "ok"
    error: str | None = None


class FakeRestoreData:
    def __init__(self, copies, broken=None):
        self.copies, self.asked = copies, []
        self.broken = broken or {}       # uuid -> problems verify_copy finds

    def instance_copy(self, uuid, service=None):
        self.asked.append(uuid)
        if uuid not in self.copies:
            raise NotFound(f"this headnode has no restore data of instance {uuid}")
        return self.copies[uuid]

    def verify_copy(self, copy):
        return list(self.broken.get(next(u for u, c in self.copies.items() if c is copy), ()))


class FakeAgents:
    def __init__(self, token="t0ken"):
        self.token_value, self.checked = token, 0

    def check(self):
        self.checked += 1
        if self.token_value is None:
            raise ConfigError("sdcadm.yaml", ["agent.token_file: /nope does not exist"])
        return self.token_value

    @property
    def token(self):
        return self.check()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "sdcadm.yaml"
    path.write_text(f"server_uuid: {HN1.uuid}\nagent:\n  heartbeat_timeout: 10\n"
                    "fencing:\n  command: [fence-test, --off, '{hostname}', '{address}']\n"
                    "  timeout: 7\n")
    return load_config(path, environ={})


def context(config, instances, copies=None, servers=(HN0, HN1), agents=None):
    data = FakeRestoreData(copies or {})
    ctx = ProcedureContext(config=config, store=FakeStore(servers, instances), now=lambda: NOW,
                           catalog=load_catalog(), restore_data=lambda: data,
                           agents=agents or FakeAgents(), prober=None)
    return ctx, data


def test_restore_plans_from_the_context_alone(config):
    copies = {SAPI.uuid: FakeCopy(NOW - 30, "sync-7", {"snapshot": "sync-7"}),
              ASSETS.uuid: FakeCopy(NOW - 12, None, None)}
    ctx, data = context(config, [SAPI, ASSETS], copies)
    proc = RestoreServices(all_services=True, dead=["hn0"])
    assert proc.prepare(ctx) is True
    assert sorted(data.asked) == sorted([SAPI.uuid, ASSETS.uuid])
    assert ctx.agents.checked == 1                      # the token is checked before any change
    assert proc.summarize() == [
        f"fence server hn0 ({HN0.uuid}): run its fence command `fence-test --off hn0 127.0.0.1` "
        "(at most 7s); nothing moves unless it exits 0; it will run nothing until unfenced",
        "restore assets0 (assets) from hn0 onto hn1: no delegate dataset, keeping IP 127.0.1.2 "
        "(hn0 is fenced)",
        "restore sapi0 (sapi) from hn0 onto hn1: dataset copy sync-7 as of 30s ago, keeping IP "
        "127.0.1.1 (hn0 is fenced)",
        "data from hn1 (this headnode, the newest copy of each): sapi0 30s old, assets0 12s old"]
    assert [s.name for s in proc.steps()] == ["fence hn0", "restore level 1: sapi, assets"]


def test_a_broken_copy_is_left_out_named_in_the_summary_and_fails_the_restore(config):
    copies = {SAPI.uuid: FakeCopy(NOW - 30, "sync-7", {"snapshot": "sync-7"}),
              ASSETS.uuid: FakeCopy(NOW - 12, None, None)}
    ctx, data = context(config, [SAPI, ASSETS], copies)
    data.broken = {SAPI.uuid: ["datasets/x@sync-7: changed: canary (sha256 1f2e…, 5 bytes; "
                               "manifest: 9a8b…, 5 bytes)"]}
    proc = RestoreServices(all_services=True, dead=["hn0"])
    assert proc.prepare(ctx) is True
    summary = proc.summarize()
    assert any(line.startswith("restore assets0 (assets)") for line in summary)
    assert summary[-1].startswith("NOT restoring sapi0 (sapi): its restore data here does not "
                                  "match its manifest (datasets/x@sync-7: changed: canary")
    steps = proc.steps()
    assert [s.name for s in steps] == [
        "fence hn0", "restore level 1: assets",
        "refuse sapi0: restore data does not match its manifest"]
    with pytest.raises(RestoreDataBroken) as exc:
        steps[-1].fn(ctx)
    assert "sapi0 (sapi): datasets/x@sync-7: changed: canary" in str(exc.value)
    assert "sdcadm service sync-restore-data sapi" in str(exc.value)


def test_when_every_copy_is_broken_nothing_moves(config):
    copies = {SAPI.uuid: FakeCopy(NOW - 30, "sync-7", {"snapshot": "sync-7"})}
    ctx, data = context(config, [SAPI], copies)
    data.broken = {SAPI.uuid: ["missing: images/x.file"]}
    with pytest.raises(NotViable, match="sapi0 .sapi.: missing: images/x.file"):
        RestoreServices(["sapi"], dead=["hn0"]).prepare(ctx)


def test_restore_with_nothing_to_restore_neither_opens_restore_data_nor_reads_the_token(config):
    fenced = replace(HN0, fenced=True)
    opened = []
    ctx, _ = context(config, [], servers=(fenced, HN1), agents=FakeAgents(token=None))
    ctx.restore_data = lambda: opened.append(1)
    proc = RestoreServices(all_services=True)
    assert proc.prepare(ctx) is False
    assert proc.nothing_to_do == "no instance of any service to restore from hn0"
    assert opened == []


def test_restore_with_a_missing_token_fails_in_prepare(config):
    copies = {SAPI.uuid: FakeCopy(NOW - 30, "sync-7", {"snapshot": "sync-7"})}
    ctx, _ = context(config, [SAPI], copies, agents=FakeAgents(token=None))
    with pytest.raises(ConfigError, match="agent.token_file"):
        RestoreServices(["sapi"], dead=["hn0"]).prepare(ctx)


def test_restore_reports_what_the_restore_data_lacks(config):
    ctx, _ = context(config, [SAPI], {})
    with pytest.raises(NotViable, match=f"sapi0: this headnode has no restore data of instance "
                                        f"{SAPI.uuid}"):
        RestoreServices(["sapi"], dead=["hn0"]).prepare(ctx)


def test_restore_needs_this_servers_uuid(config, tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("agent:\n  heartbeat_timeout: 10\n")
    ctx, _ = context(load_config(path, environ={}), [SAPI])
    with pytest.raises(NotViable, match="this server's UUID is not configured"):
        RestoreServices(["sapi"]).prepare(ctx)


def test_migrate_plans_from_the_context_alone(config):
    hn0 = replace(HN0, last_heartbeat=NOW - 2)
    ctx, _ = context(config, [SAPI, ASSETS], servers=(hn0, HN1))
    proc = MigrateServices("hn0", "hn1", all_services=True)
    assert proc.prepare(ctx) is True
    assert ctx.agents.checked == 1
    assert proc.summarize() == [
        "migrate sapi0 (sapi) from hn0 to hn1 as sapi1: sync its dataset, stop it, final sync, "
        "start the copy (down meanwhile)",
        "migrate assets0 (assets) from hn0 to hn1 as assets1: start the new one, then destroy "
        "the old one (no downtime)",
        "downtime: sapi will not answer from the stop of the old instance until the new one "
        "answers (never two at once)"]
    assert [s.name for s in proc.steps()] == ["migrate sapi0", "migrate assets0"]


def test_migrate_judges_liveness_by_the_contexts_clock(config):
    hn0 = replace(HN0, last_heartbeat=NOW - 2)
    ctx, _ = context(config, [SAPI], servers=(hn0, HN1))
    ctx.now = lambda: NOW + 60                          # a minute of silence, as the clock says
    with pytest.raises(NotViable, match="the source hn0 is not running"):
        MigrateServices("hn0", "hn1", ["sapi"]).prepare(ctx)

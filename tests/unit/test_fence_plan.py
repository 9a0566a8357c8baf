"""Fence agents: which command fences a server, what refuses, what the operator
is told (pure planning), and the fence step's promise with fakes: nothing in
the store changes unless the fence command succeeded, and an address that
still answers afterwards refuses."""

from dataclasses import replace

import pytest

from sdcadm.catalog import load_catalog
from sdcadm.config import config_from
from sdcadm.errors import ConfigError, FenceFailed, NotFound
from sdcadm.model import Instance, Server
from sdcadm.procedures.planning import (
    FenceMethod,
    NotViable,
    RestoreFacts,
    RestoreRequest,
    addresses_to_take_over,
    fence_argv,
    fence_failure,
    fence_methods,
    fence_summary,
    new_uuid_for,
    plan_restore_run,
    restore_scope,
    restore_summary,
    restored_params,
)
from sdcadm.procedures.planning.restore_plan import CopyFacts, InstanceToRestore
from sdcadm.procedures.restore import RestoreServices
from sdcadm.transport.fence import CommandFencer, FenceOutcome

NOW = 1000.0
IMG = "99999999-9999-4999-8999-999999999999"
HN0 = Server("00000000-0000-4000-8000-000000000000", "hn0", "127.0.0.1", headnode=True,
             last_heartbeat=NOW - 100, agent_port=5309)
HN1 = Server("11111111-1111-4111-8111-111111111111", "hn1", "127.0.0.2", headnode=True,
             last_heartbeat=NOW - 1, agent_port=5309)
CAT = load_catalog()
FENCING = {"command": ["ipmi-off", "--host", "{address}", "--name={hostname}", "{uuid}"],
           "timeout": 12.0, "servers": {}}


def inst(n, service, server, alias=None, uuid=None, **kw):
    return Instance(uuid or f"aaaaaaaa-aaaa-4aaa-8aaa-{n:012d}", alias or f"{service}0", service,
                    server.uuid, IMG, f"127.0.1.{n}", port=8080, **kw)


# -- which command -----------------------------------------------------------------------------

def test_fence_command_gets_the_servers_name_address_and_uuid():
    assert fence_argv(FENCING, HN0) == ("ipmi-off", "--host", "127.0.0.1", "--name=hn0", HN0.uuid)


def test_a_command_line_string_is_split_as_a_shell_would():
    assert fence_argv({"command": "fence 'a b' {hostname}"}, HN0) == ("fence", "a b", "hn0")


def test_a_per_server_command_overrides_the_default():
    fencing = dict(FENCING, servers={"hn0": ["pdu-off", "outlet-7"]})
    assert fence_argv(fencing, HN0) == ("pdu-off", "outlet-7")
    assert fence_argv(fencing, HN1)[0] == "ipmi-off"


def test_no_command_configured():
    assert fence_argv({"command": None, "servers": {}}, HN0) is None


def test_a_server_without_fence_command_is_refused_unless_confirmed_off():
    with pytest.raises(NotViable) as e:
        fence_methods([HN0], (), {"command": None, "timeout": 5}, [HN0, HN1])
    assert e.value.message.startswith("no fence command is configured for hn0")
    assert "fencing.command" in e.value.hint and "--confirm-powered-off hn0" in e.value.hint
    [method] = fence_methods([HN0], ("hn0",), {"command": None, "timeout": 5}, [HN0, HN1])
    assert method.confirmed and method.argv is None


def test_confirmed_off_is_taken_instead_of_running_the_fence_command():
    [method] = fence_methods([HN0], (HN0.uuid,), FENCING, [HN0, HN1])
    assert method.confirmed
    [method] = fence_methods([HN0], (), FENCING, [HN0, HN1])
    assert method.argv[0] == "ipmi-off" and method.timeout == 12.0


def test_confirmed_off_must_name_a_dead_server():
    with pytest.raises(NotViable, match="--confirm-powered-off hn1 names a server not declared dead"):
        fence_methods([HN0], ("hn1",), FENCING, [HN0, HN1])
    with pytest.raises(NotFound, match="no server 'hn9' .given to --confirm-powered-off"):
        fence_methods([HN0], ("hn9",), FENCING, [HN0, HN1])


def test_summary_says_how_each_server_is_fenced():
    methods = fence_methods([HN0], (), FENCING, [HN0, HN1])
    assert fence_summary(methods) == [
        f"fence server hn0 ({HN0.uuid}): run its fence command `ipmi-off --host 127.0.0.1 "
        f"--name=hn0 {HN0.uuid}` (at most 12s); nothing moves unless it exits 0; it will run "
        "nothing until unfenced"]
    confirmed = fence_methods([replace(HN0, fenced=True)], ("hn0",), FENCING, [HN0, HN1])
    assert fence_summary(confirmed)[0].startswith(
        f"fence server hn0 again (fenced by an earlier run) ({HN0.uuid}): you confirmed it is "
        "powered off")


@pytest.mark.parametrize("outcome, says", [
    (FenceOutcome(("x",), 1, 0.1, stderr="line1\nBMC unreachable"),
     "it exited with status 1; its output ends with:\n    line1\n    BMC unreachable"),
    (FenceOutcome(("x",), None, 12.0, timed_out=True), "it did not finish within 12s and was killed"),
    (FenceOutcome(("x",), None, 0.0, error="cannot run x: No such file or directory"),
     "cannot run x: No such file or directory"),
])
def test_a_failed_fence_names_the_command_how_it_ended_and_the_fix(outcome, says):
    method = FenceMethod(HN0, ("ipmi-off", "hn0"), 12.0)
    error = fence_failure(method, outcome)
    assert isinstance(error, FenceFailed)
    assert error.message == (f"fencing hn0 failed, so nothing was moved off it: `ipmi-off hn0`: "
                             f"{says}")
    assert "--confirm-powered-off hn0" in error.hint and "fencing.command" in error.hint


# -- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("fencing, problem", [
    ({"command": []}, "'fencing.command' must be a non-empty list"),
    ({"command": ["off", "{name}"]}, "names {name}: only {hostname}, {address}, {uuid}"),
    ({"command": "off 'unclosed"}, "cannot be split into arguments"),
    ({"command": ["off", "{"]}, "write a literal brace as {{"),
    ({"command": ["off", 3]}, "every argument must be a non-empty string"),
    ({"command": {"a": 1}}, "'fencing.command' must be a list or a string or null"),
    ({"timeout": 0}, "'fencing.timeout' must be a number more than 0"),
    ({"timeout": 1e9}, "'fencing.timeout' must be a number"),
    ({"servers": {"hn0": 5}}, "'fencing.servers' item 'hn0': must be a command"),
    ({"servers": {"hn0": ["x", "{bad}"]}}, "'fencing.servers' item 'hn0': argument"),
    ({"servers": ["hn0"]}, "'fencing.servers' must be a mapping"),
])
def test_bad_fencing_configuration_is_refused(fencing, problem):
    with pytest.raises(ConfigError) as e:
        config_from({"fencing": fencing}, "test.yaml")
    assert problem in str(e.value)


def test_fencing_defaults():
    config = config_from({}, "test.yaml")
    assert config.get("fencing") == {"command": None, "timeout": 60.0, "servers": {}}


# -- interrupted migrates ------------------------------------------------------------------------

def _facts(instances, servers=(HN0, HN1)):
    return RestoreFacts(HN1, list(servers), list(instances), NOW, 10.0)


def test_an_instance_a_migrate_already_replaced_is_finished_not_restored():
    old = inst(1, "ufds", HN0, params={"desired_state": "stopped"})
    new = inst(2, "ufds", HN1, alias="ufds1", uuid=new_uuid_for(old.uuid, HN1.uuid),
               state="provisioning")
    sapi = inst(3, "sapi", HN0, delegate_dataset=True)
    scope = restore_scope(CAT, RestoreRequest((), True, ("hn0",)), _facts([old, new, sapi]))
    assert [i.instance.alias for i in scope.items] == ["sapi0"]
    assert [(f.old.alias, f.replacement.alias) for f in scope.finish] == [("ufds0", "ufds1")]
    copy = CopyFacts(as_of=NOW - 5, snapshot="s", has_dataset=True)
    plan = plan_restore_run(CAT, scope, {sapi.uuid: copy}, HN1, NOW)
    assert restore_summary(plan)[0] == (
        "finish the interrupted migrate of ufds0 (ufds): keep its replacement ufds1, made by "
        "`service migrate`, and delete ufds0 instead of restoring it (never two at once)")
    # the old one's address must not answer once its server is fenced, either
    assert "http://127.0.1.1:8080/ping" in addresses_to_take_over(plan, HN0.uuid)


def test_only_an_interrupted_migrate_is_left_to_finish():
    old = inst(1, "ufds", HN0, params={"desired_state": "stopped"})
    new = inst(2, "ufds", HN1, alias="ufds1", uuid=new_uuid_for(old.uuid, HN1.uuid))
    scope = restore_scope(CAT, RestoreRequest((), True, ("hn0",)), _facts([old, new]))
    plan = plan_restore_run(CAT, scope, {}, HN1, NOW)
    assert plan.nothing_to_do is None and plan.targets == [] and len(plan.finish) == 1


def test_another_instance_of_the_service_is_no_replacement():
    old = inst(1, "ufds", HN0)
    other = inst(2, "ufds", HN1, alias="ufds1")   # not the migrate's UUID
    scope = restore_scope(CAT, RestoreRequest((), True, ("hn0",)), _facts([old, other]))
    assert [i.instance.alias for i in scope.items] == ["ufds0"] and scope.finish == []


def test_a_stopped_instance_without_replacement_is_restored_running():
    # only migrate stops an instance, right before making its replacement:
    # restoring it here is that move, finished
    old = inst(1, "ufds", HN0, params={"desired_state": "stopped", "x": 1})
    assert "desired_state" not in restored_params(old) and restored_params(old)["x"] == 1


# -- the fence step ----------------------------------------------------------------------------

class FakeFencer:
    def __init__(self, outcome):
        self.outcome, self.calls = outcome, []

    def run(self, argv, timeout):
        self.calls.append((tuple(argv), timeout))
        return self.outcome


class FakeProber:
    def __init__(self, answering=()):
        self.answering = set(answering)

    def probe_many(self, urls, timeout, connect_timeout=None):
        return {u: None if u in self.answering else "timed out" for u in urls}


class FenceStore:
    def __init__(self):
        self.fenced = []

    def set_fenced(self, uuid, fenced, generation):
        self.fenced.append((uuid, fenced, generation))


class Ctx:
    def __init__(self, fencer, prober):
        self.fencer, self.prober, self.store = fencer, prober, FenceStore()
        self.agents = FakeAgents()
        self.messages = []

    def progress(self, message, *a):
        self.messages.append(message)


class FakeAgents:
    def __init__(self):
        self.staged = []

    def stage(self, url, instances):
        self.staged.append((url, instances))


def _restore_with(method, targets_on_hn0=("http://127.0.1.1:8080",)):
    proc = RestoreServices(all_services=True, dead=["hn0"])
    old = inst(1, "sapi", HN0)

    class Plan:
        me = HN1
        targets = [type("T", (), {"dead": HN0, "reuse_ip": True, "moved": False,
                                  "instance": old, "service": "sapi"})()]
        levels = [["sapi"]]
        finish = ()
    proc.plan = Plan()
    return proc._fence_step(method)


def test_a_failed_fence_command_changes_nothing_in_the_store():
    ctx = Ctx(FakeFencer(FenceOutcome(("off",), 1, 0.2, stderr="no power")), FakeProber())
    step = _restore_with(FenceMethod(HN0, ("off", "hn0"), 9.0))
    with pytest.raises(FenceFailed, match="exited with status 1"):
        step(ctx)
    assert ctx.fencer.calls == [(("off", "hn0"), 9.0)] and ctx.store.fenced == []


def test_a_successful_fence_marks_the_server_fenced_and_a_timeout_probe_is_fine():
    ctx = Ctx(FakeFencer(FenceOutcome(("off",), 0, 0.2)), FakeProber())
    result = _restore_with(FenceMethod(HN0, ("off", "hn0"), 9.0))(ctx)
    assert ctx.store.fenced == [(HN0.uuid, True, HN0.generation)]
    assert result["how"].startswith("fence command succeeded")


def test_an_address_that_still_answers_after_fencing_refuses():
    ctx = Ctx(FakeFencer(FenceOutcome(("off",), 0, 0.2)),
              FakeProber(["http://127.0.1.1:8080/ping"]))
    with pytest.raises(FenceFailed, match="still answers at http://127.0.1.1:8080"):
        _restore_with(FenceMethod(HN0, ("off", "hn0"), 9.0))(ctx)


def test_the_first_level_is_staged_here_while_the_fence_agent_runs_and_nothing_moves():
    # Staging provisions, never starts: even a fence that then fails has
    # moved nothing in the store (the agent destroys what waited in vain).
    ctx = Ctx(FakeFencer(FenceOutcome(("off",), 1, 0.2, stderr="no power")), FakeProber())
    with pytest.raises(FenceFailed):
        _restore_with(FenceMethod(HN0, ("off", "hn0"), 9.0))(ctx)
    [(url, [ahead])] = ctx.agents.staged
    assert url == HN1.agent_url and ctx.store.fenced == []
    old = inst(1, "sapi", HN0)
    assert (ahead.uuid, ahead.server_uuid, ahead.admin_ip, ahead.generation) == (
        old.uuid, HN1.uuid, old.admin_ip, old.generation)
    assert ahead.params["seed_from"] == {"instance": old.uuid, "service": "sapi"}


def test_confirmed_off_runs_no_fence_command():
    ctx = Ctx(FakeFencer(None), FakeProber())
    result = _restore_with(FenceMethod(HN0, None, 9.0))(ctx)
    assert ctx.fencer.calls == [] and result["how"] == "confirmed powered off by the operator"


# -- the transport: a real child process ---------------------------------------------------------

def test_command_fencer_reports_exit_status_and_stderr():
    out = CommandFencer().run(["sh", "-c", "echo it is off; echo warn >&2; exit 0"], 10)
    assert out.ok and out.stdout == "it is off" and out.stderr == "warn"
    out = CommandFencer().run(["sh", "-c", "echo BMC says no >&2; exit 3"], 10)
    assert not out.ok and out.returncode == 3 and out.stderr == "BMC says no"


def test_command_fencer_kills_a_hung_command_and_what_it_started(tmp_path):
    pidfile = tmp_path / "child"
    out = CommandFencer().run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], 0.5)
    assert out.timed_out and not out.ok and out.returncode is None
    from sdcadm.lab import procs

    child = int(pidfile.read_text())
    assert procs.wait_until(lambda: procs.gone(child), 5.0), "the fence command's child survived"


def test_command_fencer_reports_a_missing_program():
    out = CommandFencer().run(["/nonexistent/fence-agent"], 5)
    assert not out.ok and out.error == "cannot run /nonexistent/fence-agent: No such file or directory"


def test_each_level_stages_the_next_one_while_it_comes_up():
    """Level 1 is staged by the fence; then level k's step, right after its
    move, asks for level k+1 (never itself, never one further on)."""
    proc = RestoreServices(all_services=True, dead=["hn0"])
    olds = {name: inst(n, name, HN0) for n, name in enumerate(("sapi", "imgapi", "vmapi"), 1)}

    def target(i):
        return InstanceToRestore(i.service, i, HN0, None, reuse_ip=True)

    class Plan:
        me = HN1
        targets = [target(i) for i in olds.values()]
        levels = [["sapi"], ["imgapi"], ["vmapi"]]
        finish = refused = ()

    class Store:
        def move_instances(self, moves):
            return [replace(olds_by_uuid[u], server_uuid=HN1.uuid, generation=g + 1, **{
                k: v for k, v in c.items() if k != "server_uuid"}) for u, g, c in moves]

        def move_instance(self, uuid, generation, **changes):
            return self.move_instances([(uuid, generation, changes)])[0]

    olds_by_uuid = {i.uuid: i for i in olds.values()}
    proc.plan, proc.choices, proc.fence = Plan(), [], []
    ctx = Ctx(FakeFencer(None), FakeProber())
    ctx.store = Store()
    ctx.agents.wake = lambda url: None
    ctx.agents.client = lambda url, timeout: type("A", (), {"seed_refusal": lambda self, u: None,
                                                            "instances": lambda self: []})()
    ctx.prober.probe = lambda url, timeout, connect_timeout=None: None      # every instance answers at once
    ctx.now = lambda: 0.0
    ctx.log = type("L", (), {"info": lambda self, *a, **k: None})()
    steps = proc.steps()
    assert [s.name.split(":")[0] for s in steps] == [
        "restore level 1", "restore level 2", "restore level 3"]
    staged = []
    for step in steps:
        before = len(ctx.agents.staged)
        step.fn(ctx)
        staged.append([i.service for _, batch in ctx.agents.staged[before:] for i in batch])
    assert staged == [["imgapi"], ["vmapi"], []]


def test_a_level_s_time_is_split_into_move_agent_and_first_answer():
    from sdcadm.procedures.planning import level_parts

    assert level_parts(10.0, 10.05, [10.1, 10.3], 10.75) == {
        "move_s": 0.05, "agent_s": 0.25, "answer_s": 0.45}
    # an instance the agent says nothing of, or started before this move (an
    # earlier run): no split, rather than a wrong one
    assert level_parts(10.0, 10.05, [10.1, None], 10.75) == {"move_s": 0.05}
    assert level_parts(10.0, 10.05, [9.0, 10.3], 10.75) == {"move_s": 0.05}
    assert level_parts(10.0, 10.05, [], 10.75) == {"move_s": 0.05}

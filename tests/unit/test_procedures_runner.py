"""The procedure runner with tiny in-test procedures and a real temporary sqlite store."""

import json
import os
import time

import click
import pytest
from click.testing import CliRunner

from sdcadm.cli.context import pass_state
from sdcadm.cli.main import SdcadmGroup
from sdcadm.cli.procedure import procedure_options, run
from sdcadm.config import load_config
from sdcadm.errors import LockHeld, NotFound, SdcadmError
from sdcadm.procedures import (
    Declined,
    NeedsConfirmation,
    Procedure,
    ProcedureContext,
    ProcedureFailed,
    Step,
    run_procedures,
)
from sdcadm.procedures import console as console_mod
from sdcadm.procedures.console import QuietConsole
from sdcadm.procedures.lock import DcLock, owner_is_dead
from sdcadm.procedures.log import read_log
from sdcadm.progress import Progress
from tests.conftest import store_at, wait_for

OTHER = "otherhost:1:11111111-1111-4111-8111-111111111111"


class WriteFiles(Procedure):
    """Writes files 0..count-1 into ``target`` (idempotent: an existing file is left)."""

    name = "write-files"

    def __init__(self, target, count=3, fail_at=None, nothing=False, calls=None, verify=False):
        self.target, self.count, self.fail_at, self.nothing = target, count, fail_at, nothing
        self.calls = [] if calls is None else calls
        self.with_verify = verify

    def key(self):
        return os.path.basename(self.target)

    def prepare(self, ctx):
        if not os.path.isdir(os.path.dirname(self.target)):
            raise SdcadmError(f"{os.path.dirname(self.target)} does not exist")
        if self.nothing:
            return self.mark_nothing_to_do("every file is there already")
        return None

    def summarize(self):
        return [f"write {self.count} files into {self.target}"]

    def steps(self):
        return [Step(f"write {i}", self._writer(i), self._verifier(i) if self.with_verify else None)
                for i in range(self.count)]

    def _writer(self, i):
        def write(ctx):
            self.calls.append(("run", i))
            if i == self.fail_at:
                raise SdcadmError(f"disk full writing file {i}")
            os.makedirs(self.target, exist_ok=True)
            path = os.path.join(self.target, str(i))
            if not os.path.exists(path):
                with open(path, "w") as f:
                    f.write(str(i))
            ctx.progress(f"wrote {path}")
            return {"path": path, "bytes": 1}
        return write

    def _verifier(self, i):
        def verify(ctx, previous):
            self.calls.append(("verify", i))
            return os.path.exists(previous["path"])
        return verify

    def report(self, results):
        return [f"wrote {len(results)} files"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("SDCADM_"):
            monkeypatch.delenv(name)
    store_path, logs = tmp_path / "dc.sqlite", tmp_path / "logs"
    store_at(store_path, create=True).close()
    cfg = tmp_path / "sdcadm.yaml"
    cfg.write_text(f"store:\n  path: {store_path}\nlog_dir: {logs}\n")
    monkeypatch.setenv("SDCADM_CONFIG", str(cfg))
    config = load_config(cfg, environ={})
    store = store_at(store_path)
    yield {"dir": tmp_path, "config": config, "store": store, "logs": logs,
           "target": str(tmp_path / "out")}
    store.close()


def make_ctx(env):
    return ProcedureContext(config=env["config"], store=env["store"])


def test_yes_runs_every_step_records_task_and_log(env, capsys):
    events = []
    result = run_procedures([WriteFiles(env["target"])], make_ctx(env), yes=True,
                            observer=events.append)
    assert result.state == "succeeded" and sorted(os.listdir(env["target"])) == ["0", "1", "2"]
    out = capsys.readouterr().out
    assert "This will make the following changes:\n    write 3 files into" in out
    assert "wrote 3 files" in out and "Completed in" in out and f"Log: {result.log}" in out
    task = env["store"].get_task(result.task)
    assert task.name == "write-files out" and task.state == "succeeded"
    assert task.started and task.finished >= task.started
    assert [(s["name"], s["state"]) for s in task.steps] == [
        ("write 0", "succeeded"), ("write 1", "succeeded"), ("write 2", "succeeded")]
    assert task.steps[1]["result"] == {"path": os.path.join(env["target"], "1"), "bytes": 1}
    assert env["store"].get_lock("dc") is None
    # the log: <log_dir>/<name>-<UTC timestamp>-<uuid8>.log, JSON lines, every step
    name = os.path.basename(result.log)
    assert name.startswith("write-files-") and name.endswith(f"-{result.task[:8]}.log")
    assert os.path.dirname(result.log) == str(env["logs"])
    records = read_log(result.log)
    kinds = [r["event"] for r in records]
    assert kinds[0] == "run-start" and kinds[-1] == "run-end" and "prepared" in kinds
    started = [r["step"] for r in records if r["event"] == "step-start"]
    assert started == ["write 0", "write 1", "write 2"]
    assert [r["result"]["bytes"] for r in records if r["event"] == "step-end"] == [1, 1, 1]
    # progress: typed events, started/finished per step plus the step's own progress
    names = [type(e).__name__ for e in events]
    assert names.count("StepStarted") == 3 and names.count("StepFinished") == 3
    assert all(isinstance(e, Progress) for e in events)
    assert any(e.message.startswith("wrote ") for e in events)


def test_dry_run_changes_nothing_no_task_no_lock_no_log(env, capsys):
    result = run_procedures([WriteFiles(env["target"])], make_ctx(env), dry_run=True)
    assert result.state == "dry-run" and result.task is None and result.log is None
    out = capsys.readouterr().out
    assert "This will make the following changes:" in out and "Dry run: nothing was changed." in out
    assert not os.path.exists(env["target"])
    assert env["store"].list_tasks() == [] and env["store"].get_lock("dc") is None
    assert not env["logs"].exists()


def test_nothing_to_do_says_so(env, capsys):
    result = run_procedures([WriteFiles(env["target"], nothing=True)], make_ctx(env), yes=True)
    assert result.state == "nothing-to-do"
    out = capsys.readouterr().out
    assert "every file is there already" in out and out.rstrip().endswith("Nothing to do.")
    assert "Would you like" not in out
    assert env["store"].list_tasks() == [] and env["store"].get_lock("dc") is None


def test_prepare_error_releases_lock_and_records_nothing(env):
    bad = WriteFiles(str(env["dir"] / "missing" / "out"))
    with pytest.raises(SdcadmError, match="does not exist"):
        run_procedures([bad], make_ctx(env), yes=True, console=QuietConsole())
    assert env["store"].get_lock("dc") is None and env["store"].list_tasks() == []


def test_no_terminal_without_yes_is_a_clear_error(env, monkeypatch):
    monkeypatch.setattr(console_mod, "stdin_is_terminal", lambda: False)
    with pytest.raises(NeedsConfirmation) as e:
        run_procedures([WriteFiles(env["target"])], make_ctx(env))
    assert "pass -y" in str(e.value)
    assert not os.path.exists(env["target"]) and env["store"].get_lock("dc") is None


def test_failure_marks_task_failed_and_releases_lock_then_rerun_finishes(env, capsys):
    calls = []
    with pytest.raises(ProcedureFailed) as e:
        run_procedures([WriteFiles(env["target"], fail_at=1, calls=calls)], make_ctx(env),
                       yes=True)
    failed = e.value.result
    assert failed.state == "failed" and "disk full writing file 1" in str(e.value)
    assert failed.log in e.value.hint and failed.task in e.value.hint
    task = env["store"].get_task(failed.task)
    assert task.state == "failed"
    assert task.error == "step 'write 1' failed: disk full writing file 1"
    assert [s["state"] for s in task.steps] == ["succeeded", "failed", "pending"]
    assert task.steps[1]["error"] == "disk full writing file 1"
    assert env["store"].get_lock("dc") is None
    errors = [r for r in read_log(failed.log) if r["event"] == "step-error"]
    assert errors and errors[0]["error"] == "disk full writing file 1"
    assert os.listdir(env["target"]) == ["0"]
    # the same command again: resumes the task, finishes the job; step 0 runs again
    # (no verify: idempotent re-run), nothing is duplicated
    capsys.readouterr()
    calls.clear()
    result = run_procedures([WriteFiles(env["target"], calls=calls)], make_ctx(env), yes=True)
    assert result.state == "succeeded" and result.task == failed.task and result.resumed
    assert f"This resumes task {failed.task}" in capsys.readouterr().out
    assert calls == [("run", 0), ("run", 1), ("run", 2)]
    assert sorted(os.listdir(env["target"])) == ["0", "1", "2"]
    task = env["store"].get_task(failed.task)
    assert task.state == "succeeded" and task.error is None
    assert [s["attempt"] for s in task.steps] == [2, 2, 1]
    assert len(env["store"].list_tasks()) == 1
    # one log per run (a run in the same second as the last appends to its file)
    starts = [r for r in read_log(result.log) if r["event"] == "run-start"]
    assert starts[-1]["resumes"] == failed.task and os.path.exists(failed.log)


def test_resume_verifies_succeeded_steps_instead_of_rerunning(env):
    calls = []
    with pytest.raises(ProcedureFailed):
        run_procedures([WriteFiles(env["target"], fail_at=2, calls=calls, verify=True)],
                       make_ctx(env), yes=True, console=QuietConsole())
    calls.clear()
    os.remove(os.path.join(env["target"], "1"))  # someone undid step 1 since
    result = run_procedures([WriteFiles(env["target"], calls=calls, verify=True)],
                            make_ctx(env), yes=True, console=QuietConsole())
    assert result.state == "succeeded"
    # step 0 verified (not re-run); step 1 verified False -> re-run; step 2 never succeeded
    assert calls == [("verify", 0), ("verify", 1), ("run", 1), ("run", 2)]
    steps = env["store"].get_task(result.task).steps
    assert [s["verified"] for s in steps] == [True, False, False]
    assert steps[0]["result"]["path"].endswith("/0")


def test_other_arguments_start_a_new_task(env):
    with pytest.raises(ProcedureFailed):
        run_procedures([WriteFiles(env["target"], fail_at=0)], make_ctx(env), yes=True,
                       console=QuietConsole())
    other = run_procedures([WriteFiles(str(env["dir"] / "other"))], make_ctx(env), yes=True,
                           console=QuietConsole())
    assert not other.resumed and len(env["store"].list_tasks()) == 2


def test_old_failed_task_is_not_resumed(env):
    ctx = make_ctx(env)
    with pytest.raises(ProcedureFailed) as e:
        run_procedures([WriteFiles(env["target"], fail_at=0)], ctx, yes=True,
                       console=QuietConsole())
    proc = WriteFiles(env["target"])
    proc.resume_within = 10
    later = ProcedureContext(config=env["config"], store=env["store"], now=lambda: time.time() + 60)
    result = run_procedures([proc], later, yes=True, console=QuietConsole())
    assert result.task != e.value.result.task and not result.resumed


def test_killed_run_left_running_task_is_resumed(env):
    from sdcadm.model import Task

    env["store"].put_task(Task(uuid="22222222-2222-4222-8222-222222222222", name="write-files out",
                               state="running", created=time.time(), started=time.time(),
                               steps=[{"name": "write 0", "procedure": "write-files out",
                                       "state": "running"}]))
    result = run_procedures([WriteFiles(env["target"])], make_ctx(env), yes=True,
                            console=QuietConsole())
    assert result.task == "22222222-2222-4222-8222-222222222222" and result.resumed


def test_lock_held_by_other_owner_waits_then_times_out_naming_owner(env, capsys, monkeypatch):
    env["store"].acquire_lock("dc", OTHER, 300)
    tries, acquire = [], env["store"].acquire_lock
    monkeypatch.setattr(env["store"], "acquire_lock",
                        lambda *a, **kw: tries.append(a) or acquire(*a, **kw))
    with pytest.raises(LockHeld) as e:
        run_procedures([WriteFiles(env["target"])], make_ctx(env), yes=True, lock_timeout=0.6)
    assert len(tries) >= 2, "it gave up without waiting"
    assert OTHER in str(e.value) and "--lock-timeout" in e.value.hint
    err = capsys.readouterr().err
    assert f"waiting for lock held by {OTHER} (expires in " in err
    assert not os.path.exists(env["target"]) and env["store"].list_tasks() == []
    assert env["store"].get_lock("dc")[0] == OTHER  # not ours to release


def test_waits_for_lock_until_it_is_released(env):
    env["store"].acquire_lock("dc", OTHER, 300)
    said = []

    class Releasing(QuietConsole):
        def warn(self, text):  # the other owner lets go once we say we wait
            said.append(text)
            if "waiting for lock held by" in text:
                env["store"].release_lock("dc", OTHER)

    result = run_procedures([WriteFiles(env["target"])], make_ctx(env), yes=True, lock_timeout=10,
                            console=Releasing())
    assert result.state == "succeeded"
    waits = [t for t in said if t.startswith("waiting for lock held by")]
    assert len(waits) == 1 and OTHER in waits[0]


def test_lock_of_a_dead_process_on_this_host_is_taken_over(env, capsys):
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:33333333-3333-4333-8333-333333333333"
    assert owner_is_dead(dead) and not owner_is_dead(OTHER)
    env["store"].acquire_lock("dc", dead, 300)
    result = run_procedures([WriteFiles(env["target"])], make_ctx(env), yes=True, lock_timeout=0)
    assert result.state == "succeeded"
    assert "taking over the lock held by" in capsys.readouterr().err


def test_lock_is_renewed_while_running(env):
    seen = []

    class Slow(WriteFiles):
        def _writer(self, i):
            inner = super()._writer(i)

            def write(ctx):
                start = ctx.store.get_lock("dc")
                # past the expiry the lock had when the step began: renewed by then
                end = wait_for(lambda: ctx.now() > start[1] and ctx.store.get_lock("dc"), 10,
                               "the lock's first expiry to pass")
                seen.append((start, end, ctx.now()))
                return inner(ctx)
            return write

    result = run_procedures([Slow(env["target"], count=2)], make_ctx(env), yes=True,
                            lock_ttl=0.3, console=QuietConsole())
    assert result.state == "succeeded"
    for start, end, now in seen:
        assert end[0] == start[0] and end[2] == start[2]  # same owner, same fencing token
        assert end[1] > start[1] and end[1] > now         # extended, still valid
    assert env["store"].get_lock("dc") is None


def test_lost_lock_stops_before_next_step(env):
    class Stolen(WriteFiles):
        def _writer(self, i):
            inner = super()._writer(i)

            def write(ctx):
                if i == 0:  # our lock expires and someone else takes it
                    ctx.store.release_lock("dc", ctx.lock.owner)
                    ctx.store.acquire_lock("dc", OTHER, 300)
                    wait_for(lambda: ctx.lock.lost, 10, "the renewal thread noticing the loss")
                return inner(ctx)
            return write

    with pytest.raises(ProcedureFailed, match="lost the DC lock"):
        run_procedures([Stolen(env["target"], count=2)], make_ctx(env), yes=True, lock_ttl=0.3,
                       console=QuietConsole())
    assert env["store"].get_lock("dc")[0] == OTHER


def test_a_write_after_the_lock_was_taken_is_refused_by_the_store(env):
    """Between two lock checks, a step's own write still carries the fencing
    token: once another owner holds the lock the store refuses it."""
    from sdcadm.errors import LockLost
    from sdcadm.model import Service

    refused = []

    class Late(Procedure):
        name = "late-write"

        def execute(self, ctx):
            ctx.store.release_lock("dc", ctx.lock.owner)  # as if it expired...
            ctx.store.acquire_lock("dc", OTHER, 300)      # ...and someone took it
            try:
                ctx.store.put_service(Service("sapi"))
            except LockLost as e:
                refused.append(str(e))
                raise

    with pytest.raises(ProcedureFailed, match="lost the DC lock"):
        run_procedures([Late()], make_ctx(env), yes=True, console=QuietConsole())
    assert refused and OTHER in refused[0]
    with pytest.raises(NotFound):
        env["store"].get_service("sapi")
    assert env["store"].list_tasks()[0].state == "running"  # its record was refused too


def test_dc_lock_unit_acquire_release(env):
    lock = DcLock(env["store"], ttl=5)
    token = lock.acquire(timeout=0)
    assert env["store"].get_lock("dc")[:1] == (lock.owner,) and token >= 1
    lock.release()
    assert env["store"].get_lock("dc") is None


def test_procedure_with_execute_only_and_multiple_procedures(env, capsys):
    class Hello(Procedure):
        name = "hello"

        def execute(self, ctx):
            return {"said": "hello"}

    result = run_procedures([Hello(), WriteFiles(env["target"], count=1)], make_ctx(env),
                            yes=True)
    task = env["store"].get_task(result.task)
    assert task.name == "hello; write-files out"
    assert [(s["procedure"], s["name"]) for s in task.steps] == [
        ("hello", "execute"), ("write-files out", "write 0")]
    assert task.steps[0]["result"] == {"said": "hello"}


def test_procedure_without_steps_is_a_bug():
    with pytest.raises(NotImplementedError):
        Procedure().steps()


def test_interrupt_marks_task_failed_and_releases_lock(env):
    class Interrupted(WriteFiles):
        def _writer(self, i):
            def write(ctx):
                raise KeyboardInterrupt
            return write

    with pytest.raises(KeyboardInterrupt):
        run_procedures([Interrupted(env["target"])], make_ctx(env), yes=True,
                       console=QuietConsole())
    task = env["store"].list_tasks()[0]
    assert task.state == "failed" and "interrupted" in task.error
    assert env["store"].get_lock("dc") is None


# -- through the CLI: the shared flags, the prompt, -j ------------------------------------------

@click.command("demo")
@click.option("--fail-at", type=int, default=None, help="Fail at this step.")
@procedure_options
@pass_state
def demo(state, fail_at, run_options):
    """A demo procedure command."""
    target = os.path.join(os.path.dirname(state.config.store.path), "out")
    run(state, [WriteFiles(target, fail_at=fail_at)], run_options)


def invoke(*args, input=None):
    group = SdcadmGroup("sdcadm", lazy_commands={})
    group.add_command(demo)
    return CliRunner().invoke(group, ["demo", *args], input=input)


def test_cli_prompt_yes_runs(env, monkeypatch):
    monkeypatch.setattr(console_mod, "stdin_is_terminal", lambda: True)
    result = invoke(input="y\n")
    assert result.exit_code == 0, result.output
    assert "This will make the following changes:" in result.stdout
    assert "Would you like to continue? [y/N]" in result.stderr
    assert sorted(os.listdir(env["target"])) == ["0", "1", "2"]
    assert env["store"].list_tasks()[0].state == "succeeded"


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "whatever\n"])
def test_cli_prompt_no_changes_nothing(env, monkeypatch, answer):
    monkeypatch.setattr(console_mod, "stdin_is_terminal", lambda: True)
    result = invoke(input=answer)
    assert result.exit_code == 1
    assert "aborted at the confirmation prompt; nothing was changed" in result.stderr
    assert not os.path.exists(env["target"])
    assert env["store"].list_tasks() == [] and env["store"].get_lock("dc") is None


def test_cli_without_terminal_needs_yes(env):
    result = invoke()
    assert result.exit_code == 1 and "pass -y" in result.stderr
    assert not os.path.exists(env["target"])


def test_cli_yes_and_json(env):
    result = invoke("-y", "-j")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["state"] == "succeeded" and doc["name"] == "write-files out"
    assert [s["state"] for s in doc["procedures"][0]["steps"]] == ["succeeded"] * 3
    assert "This will make the following changes:" in result.stderr  # not on stdout
    assert "[write-files]" in result.stderr


def test_cli_dry_run(env):
    result = invoke("-n")
    assert result.exit_code == 0 and "Dry run: nothing was changed." in result.stdout
    assert not os.path.exists(env["target"]) and env["store"].list_tasks() == []


def test_cli_failure_json_and_exit_code(env):
    result = invoke("-y", "-j", "--fail-at", "0")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["state"] == "failed" and "disk full" in doc["error"]
    assert "sdcadm: error: write-files out: step 'write 0' failed" in result.stderr
    assert "run the same command again" in result.stderr


def test_cli_lock_timeout_flag(env):
    env["store"].acquire_lock("dc", OTHER, 300)
    result = invoke("-y", "--lock-timeout", "0.2")
    assert result.exit_code == 1
    assert f"waiting for lock held by {OTHER}" in result.stderr
    assert f"is held by {OTHER}" in result.stderr and "gave up after" in result.stderr


def test_errors_are_in_the_one_tree():
    assert issubclass(ProcedureFailed, SdcadmError) and issubclass(Declined, SdcadmError)
    assert issubclass(NotFound, SdcadmError)


def test_checkpoint_survives_a_failure_for_the_rerun(env):
    seen = []

    class Snapshotting(Procedure):
        name = "snap"

        def __init__(self, fail):
            self.fail = fail

        def steps(self):
            return [Step("send", self.send)]

        def send(self, ctx):
            previous = ctx.previous("send")
            seen.append((previous or {}).get("checkpoint"))
            if not previous:
                ctx.checkpoint(snapshot="sync-1")
            if self.fail:
                raise SdcadmError("connection lost")
            return {"sent": (previous or {}).get("checkpoint", {}).get("snapshot")}

    with pytest.raises(ProcedureFailed):
        run_procedures([Snapshotting(True)], make_ctx(env), yes=True, console=QuietConsole())
    task = env["store"].list_tasks()[0]
    assert task.steps[0]["checkpoint"] == {"snapshot": "sync-1"}
    result = run_procedures([Snapshotting(False)], make_ctx(env), yes=True, console=QuietConsole())
    assert seen == [None, {"snapshot": "sync-1"}]
    assert env["store"].get_task(result.task).steps[0]["result"] == {"sent": "sync-1"}

import os
import sys

import pytest

from sdcadm.agent.process import (
    describe_exit,
    instance_env,
    instance_path,
    pid_alive,
    pid_is_instance,
    read_pidfile,
    resolve_command,
)
from sdcadm.errors import AgentError


def test_instance_path_starts_with_the_agents_python():
    assert instance_path("/usr/bin:/bin").split(os.pathsep) == [
        os.path.dirname(sys.executable), "/usr/bin", "/bin"]


def test_command_is_resolved_on_the_path():
    path = instance_path("/usr/bin:/bin")
    argv = resolve_command([os.path.basename(sys.executable), "workload.py"], path)
    assert argv[0] == os.path.join(os.path.dirname(sys.executable), os.path.basename(sys.executable))
    assert argv[1:] == ["workload.py"]
    with pytest.raises(AgentError, match="not on PATH"):
        resolve_command(["no-such-program-xyz"], path)


def test_instance_env_is_small_and_sdc_variables_win():
    env = instance_env({"ip": "127.0.0.5", "port": 8080, "data": ""},
                       extra={"SDC_INSTANCE_IP": "evil", "FOO": "bar"},
                       environ={"PATH": "/bin", "HOME": "/root", "SDCADM_AGENT_PORT": "1",
                                "LANG": "C.UTF-8"})
    assert env == {"PATH": instance_path("/bin"), "LANG": "C.UTF-8", "FOO": "bar",
                   "SDC_INSTANCE_IP": "127.0.0.5", "SDC_INSTANCE_PORT": "8080",
                   "SDC_INSTANCE_DATA": ""}


def test_describe_exit():
    assert describe_exit(None) == "running"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "killed by SIGKILL"


def test_pidfiles_and_proc(tmp_path):
    pidfile = tmp_path / "pid"
    assert read_pidfile(pidfile) is None
    pidfile.write_text("garbage")
    assert read_pidfile(pidfile) is None
    pidfile.write_text(f"{os.getpid()}\n")
    assert read_pidfile(pidfile) == os.getpid()
    assert pid_alive(os.getpid())
    # This test process is no instance: a recycled pid is never mistaken for one.
    assert not pid_is_instance(os.getpid(), "00000000-0000-0000-0000-000000000001")
    assert not pid_alive(2 ** 22 + 1)

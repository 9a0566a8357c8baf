"""The agents' /metrics, as Prometheus sees it: open (no token), valid text
format (checked by promtool), with the agent and restore-data series."""

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import env_of, needs_sshd, run, running_lab

PROMTOOL = shutil.which("promtool") or str(Path(sys.executable).parent / "promtool")
pytestmark = [
    pytest.mark.integration, needs_sshd,
    pytest.mark.skipif(not Path(PROMTOOL).exists(),
                       reason="promtool not found (scripts/get-promtool.sh puts it in the venv; "
                              "`make test` runs it)"),
]


def test_metrics_pass_promtool_and_carry_restore_data_series(tmp_path):
    directory = tmp_path / "dc"
    with running_lab(directory, "--headnodes", "2", "--computenodes", "0", "--services",
                     "sapi,vmapi,binder", "--heartbeat-interval", "0.5"):
        env = env_of(directory, "hn1")
        run("sdcadm", "service", "sync-restore-data", env=env)
        hn1 = next(s for s in json.loads(run("sdcadm", "server", "ls", "-j", env=env).stdout)
                   if s["hostname"] == "hn1")
        text = urllib.request.urlopen(hn1["agent_url"] + "/metrics", timeout=5).read()
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
        body = text.decode()
        for series in ("sdcadm_agent_heartbeats_total", "sdcadm_agent_instances",
                       "sdcadm_restore_data_last_success_timestamp_seconds",
                       "sdcadm_restore_data_sync_duration_seconds"):
            assert series in body, series
        assert 'service="sapi"' in body

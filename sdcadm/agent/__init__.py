"""The sdcadm agent: one per server (console script ``sdcadm-agent``).

It heartbeats into the DC store, supervises the instances the store assigns
to its server (provision from image, start, restart with backoff, stop,
destroy, depose), keeps a local cache of what it last saw, and serves an HTTP
API with bearer-token auth plus ``/metrics``. The contract is in
``docs/internals.md`` ("Agent").

To start one from Python (the lab does), run ``agent_command(config_path)``
as a subprocess in its own session, so that one ``killpg`` takes the agent
and its instances down together.
"""

import sys


def agent_command(config_path, python=None):
    """argv that runs an agent with this configuration file."""
    return [python or sys.executable, "-m", "sdcadm.agent", "--config", str(config_path)]

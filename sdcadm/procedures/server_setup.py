"""``sdcadm server setup SERVER``: take a server its agent registered into the DC.

RFD 67's cn-setup. The agent of a new server registers it, not set up
(``agent/register.py``); until an operator sets it up it runs nothing. This
procedure checks that the server is the one asked for and alive (fresh
heartbeat, not fenced, its agent answering with its UUID), marks it set up,
and waits until its agent has seen the change (its ``/v1/status`` says
``setup``): from then on ``sdcadm create ... --server SERVER`` may place
instances there. Already set up: nothing to do. Both steps are idempotent.
"""

import dataclasses

from sdcadm.errors import SdcadmError
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning.setup_plan import plan_server_setup
from sdcadm.procedures.waits import wait_for

AGENT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 60.0


def ask_agent(ctx, server, what="ping"):
    """The agent's answer (a dict), or why it gave none (text): facts for planning."""
    if not server.agent_url:
        return "no agent URL"
    try:
        return getattr(ctx.agents.client(server.agent_url, timeout=AGENT_TIMEOUT), what)()
    except SdcadmError as e:
        return str(e)


def agent_says(ctx, server, key):
    """True once the server's agent reports ``key`` true in its status."""
    answer = ask_agent(ctx, server, "status")
    return isinstance(answer, dict) and answer.get("server_uuid") == server.uuid \
        and bool(answer.get(key))


class SetupServer(Procedure):
    name = "server-setup"

    def __init__(self, ref, timeout=DEFAULT_TIMEOUT):
        self.ref, self.timeout = ref, timeout
        self.server = None

    def key(self):
        return self.ref

    def prepare(self, ctx):
        self.server = ctx.store.find_server(self.ref)
        if self.server.setup:
            return self.mark_nothing_to_do(f"{self.server.hostname} is already set up")
        ctx.agents.check()
        plan_server_setup(self.server, ask_agent(ctx, self.server), now=ctx.now(),
                          heartbeat_timeout=ctx.config.agent.heartbeat_timeout)
        return True

    def summarize(self):
        s = self.server
        return [f"set up {s.hostname} ({s.uuid}, {s.admin_ip}): its agent then runs what the "
                "DC assigns to it"]

    def steps(self):
        host = self.server.hostname
        return [Step(f"set up {host}", self._mark),
                Step(f"wait for {host}'s agent", self._wait,
                     lambda ctx, previous: agent_says(ctx, self.server, "setup"))]

    def _mark(self, ctx):
        current = ctx.store.get_server(self.server.uuid)
        if current.setup:
            return {"changed": False}
        # Under the DC lock (the store view refuses the write once it is lost);
        # nobody but an operator's procedure writes a registered record.
        ctx.store.put_server(dataclasses.replace(current, setup=True))
        ctx.agents.wake(current.agent_url)
        ctx.progress(f"{current.hostname} marked set up")
        return {"changed": True}

    def _wait(self, ctx):
        _, waited = wait_for(lambda: agent_says(ctx, self.server, "setup"), self.timeout,
                             f"{self.server.hostname}'s agent to see it is set up")
        return {"waited_s": round(waited, 3)}

    def report(self, results):
        host = self.server.hostname
        return [f"{host} is set up: add instances with `sdcadm create SERVICE --server {host}`, "
                f"or make it a headnode with `sdcadm server headnode-setup {host}`"]

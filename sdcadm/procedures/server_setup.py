"""``sdcadm server setup SERVER...``: take servers their agents registered into the DC.

RFD 67's cn-setup. The agent of a new server registers it, not set up
(``agent/register.py``); until an operator sets it up it runs nothing. This
procedure checks that each server is the one asked for and alive (fresh
heartbeat, not fenced, its agent answering with its UUID), marks it set up,
and waits until its agent has seen the change (its ``/v1/status`` says
``setup``): from then on ``sdcadm create ... --server SERVER`` may place
instances there. Servers already set up are left as they are; one that
cannot be set up refuses the whole run before anything changes. Every step
is idempotent.
"""

import dataclasses

from sdcadm.errors import SdcadmError
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning.common import NotViable, refuse_all
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

    def __init__(self, refs, timeout=DEFAULT_TIMEOUT):
        self.refs = (refs,) if isinstance(refs, str) else tuple(dict.fromkeys(refs))
        self.timeout = timeout
        self.servers = []

    def key(self):
        return " ".join(self.refs)

    def prepare(self, ctx):
        found = {}
        for ref in self.refs:
            server = ctx.store.find_server(ref)
            found.setdefault(server.uuid, server)   # named twice (name and UUID): once
        self.servers = [s for s in found.values() if not s.setup]
        if not self.servers:
            hosts = ", ".join(s.hostname for s in found.values())
            return self.mark_nothing_to_do(f"{hosts}: already set up")
        ctx.agents.check()
        problems = []
        for server in self.servers:
            try:
                plan_server_setup(server, ask_agent(ctx, server), now=ctx.now(),
                                  heartbeat_timeout=ctx.config.agent.heartbeat_timeout)
            except NotViable as e:
                problems.append(e)
        refuse_all(problems)
        return True

    def summarize(self):
        return [f"set up {s.hostname} ({s.uuid}, {s.admin_ip}): its agent then runs what the "
                "DC assigns to it" for s in self.servers]

    def steps(self):
        marks = [Step(f"set up {s.hostname}", lambda ctx, s=s: self._mark(ctx, s))
                 for s in self.servers]
        waits = [Step(f"wait for {s.hostname}'s agent", lambda ctx, s=s: self._wait(ctx, s),
                      lambda ctx, previous, s=s: agent_says(ctx, s, "setup"))
                 for s in self.servers]
        return marks + waits

    def _mark(self, ctx, server):
        current = ctx.store.get_server(server.uuid)
        if current.setup:
            return {"changed": False}
        # Under the DC lock (the store view refuses the write once it is lost);
        # nobody but an operator's procedure writes a registered record.
        ctx.store.put_server(dataclasses.replace(current, setup=True))
        ctx.agents.wake(current.agent_url)
        ctx.progress(f"{current.hostname} marked set up")
        return {"changed": True}

    def _wait(self, ctx, server):
        _, waited = wait_for(lambda: agent_says(ctx, server, "setup"), self.timeout,
                             f"{server.hostname}'s agent to see it is set up")
        return {"waited_s": round(waited, 3)}

    def report(self, results):
        hosts = [s.hostname for s in self.servers]
        one = hosts[0] if len(hosts) == 1 else "SERVER"
        return [f"{', '.join(hosts)} {'is' if len(hosts) == 1 else 'are'} set up: add instances "
                f"with `sdcadm create SERVICE --server {one}`, or make "
                f"{'it a headnode' if len(hosts) == 1 else 'one a headnode'} with "
                f"`sdcadm server headnode-setup {one}`"]

"""Whether a server may be set up, or made a headnode, decided from plain facts.

``sdcadm server setup`` (RFD 67's cn-setup) takes a server its agent
registered (``agent/register.py``) into the DC; ``server headnode-setup``
makes a set-up server a headnode. Both need the server to be alive: its
heartbeat fresh, not fenced, and its agent answering as that very server (an
agent at its address that says another UUID is a misconfigured DC, not this
server). Every reason a server is refused is collected and reported together.
"""

from sdcadm.model import SERVER_RUNNING, heartbeat_seen, status_of
from sdcadm.procedures.planning.common import NotViable

# RFD 67 documents three headnodes; more than five is unusual enough to ask
# the operator again (each one pulls restore data of every other server).
MANY_HEADNODES = 5


def alive_problems(server, answer, *, now, heartbeat_timeout):
    """Why ``server`` cannot be acted on now (an empty list when it can).
    ``answer``: its agent's ``/v1/ping`` document, or the error (text) of asking."""
    host, problems = server.hostname, []
    if server.fenced:
        problems.append(f"{host} is fenced: it was declared dead (see `sdcadm server unfence`)")
    elif status_of(server, now, heartbeat_timeout) != SERVER_RUNNING:
        problems.append(f"{host} is unreachable ({heartbeat_seen(server, now)}): its agent must "
                        "run and reach the DC store")
    if not server.agent_url:
        problems.append(f"{host} has no agent port in its record")
    elif isinstance(answer, str):
        problems.append(f"{host}'s agent does not answer: {answer}")
    elif not isinstance(answer, dict) or answer.get("server_uuid") != server.uuid:
        said = answer.get("server_uuid") if isinstance(answer, dict) else answer
        problems.append(f"the agent at {server.agent_url} is not {host}'s: it says it is "
                        f"{said!r}, not {server.uuid}")
    return problems


def plan_server_setup(server, answer, *, now, heartbeat_timeout):
    """True when ``server`` is to be set up, False when it already is;
    NotViable saying why not otherwise."""
    if server.setup:
        return False
    problems = alive_problems(server, answer, now=now, heartbeat_timeout=heartbeat_timeout)
    if problems:
        raise NotViable(f"{server.hostname} cannot be set up:\n  - " + "\n  - ".join(problems),
                        hint=f"start its agent (sdcadm-agent, configured with this DC's store) "
                             f"and check `sdcadm server ls`; then run `sdcadm server setup "
                             f"{server.hostname}` again")
    return True

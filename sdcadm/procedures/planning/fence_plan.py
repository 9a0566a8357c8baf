"""How `service restore --dead SERVER` makes sure SERVER runs nothing: fence agents.

A server is fenced (Pacemaker's STONITH) by its fence command
(``fencing.servers.<hostname>``, else ``fencing.command``: an IPMI power-off
in production, ``sdcadm lab power-off`` in the lab), run with
``{hostname}``, ``{address}`` and ``{uuid}`` replaced by the server's, or by
the operator's statement ``--confirm-powered-off SERVER``. Nothing else is
proof: a silent heartbeat or a probe that times out is what a hung agent or
a frozen server looks like too, and both wake up.
"""

import shlex
from dataclasses import dataclass

from sdcadm.errors import FenceFailed
from sdcadm.procedures.planning.common import NotViable, servers_named

FENCE_CONFIG_HINT = ("configure a fence agent that powers servers off: fencing.command "
                     "(e.g. [fence_ipmilan, --ip, '{address}', --action, 'off', ...]) or "
                     "fencing.servers.HOSTNAME in this headnode's configuration")


@dataclass(frozen=True)
class FenceMethod:
    """How one server named with ``--dead`` is fenced."""

    server: object            # the Server
    argv: tuple | None        # the fence command to run; None: the operator confirmed it is off
    timeout: float

    @property
    def confirmed(self):
        return self.argv is None


def fence_argv(fencing, server):
    """The fence command of ``server`` (a tuple), placeholders replaced, or None
    when none is configured. ``fencing``: the configuration's ``fencing`` dict."""
    command = (fencing.get("servers") or {}).get(server.hostname) or fencing.get("command")
    if not command:
        return None
    args = shlex.split(command) if isinstance(command, str) else list(command)
    fields = {"hostname": server.hostname, "address": server.admin_ip, "uuid": server.uuid}
    return tuple(str(a).format_map(fields) for a in args)


def fence_methods(to_fence, confirmed_off, fencing, servers):
    """A FenceMethod per server of ``to_fence``: the operator's confirmation
    when given (its fence agent is not run: it may be out of power too), else
    its fence command. A server with neither is refused, naming the fix."""
    confirmed = servers_named(confirmed_off, servers, "--confirm-powered-off")
    named = {s.uuid for s in to_fence}
    stray = [s.hostname for uuid, s in confirmed.items() if uuid not in named]
    if stray:
        raise NotViable(f"--confirm-powered-off {stray[0]} names a server not declared dead",
                        hint=f"add --dead {stray[0]} (the confirmation only says how it is "
                             "fenced), or leave the confirmation out")
    methods, missing = [], []
    for server in to_fence:
        argv = None if server.uuid in confirmed else fence_argv(fencing, server)
        if argv is None and server.uuid not in confirmed:
            missing.append(server.hostname)
        methods.append(FenceMethod(server, argv, float(fencing.get("timeout") or 60.0)))
    if missing:
        names = ", ".join(missing)
        raise NotViable(
            f"no fence command is configured for {names}: restore moves nothing off a server "
            "until it is proven powered off (a silent server may be hung or frozen and wake up)",
            hint=FENCE_CONFIG_HINT + "; or, once you have checked that it is off (power cord, "
                 "console), say so: " + " ".join(f"--confirm-powered-off {n}" for n in missing))
    return methods


def fence_failure(method, outcome):
    """The FenceFailed of a fence command that did not succeed (``outcome``: a
    transport FenceOutcome)."""
    host = method.server.hostname
    command = shlex.join(method.argv)
    if outcome.error:
        what = outcome.error
    elif outcome.timed_out:
        what = f"it did not finish within {method.timeout:g}s and was killed"
    else:
        what = f"it exited with status {outcome.returncode}"
    tail = outcome.stderr or outcome.stdout
    detail = "; its output ends with:\n    " + "\n    ".join(tail.splitlines()[-5:]) if tail else ""
    return FenceFailed(
        f"fencing {host} failed, so nothing was moved off it: `{command}`: {what}{detail}",
        hint=f"fix the fence agent (fencing.command or fencing.servers.{host}; "
             "fencing.timeout) and run the same command again; or power the server off by other "
             f"means, check that it is off, and add --confirm-powered-off {host}")


def fence_summary(methods):
    """The summary lines of the fence steps."""
    lines = []
    for m in methods:
        s = m.server
        how = ("you confirmed it is powered off (--confirm-powered-off)" if m.confirmed
               else f"run its fence command `{shlex.join(m.argv)}` (at most {m.timeout:g}s); "
                    "nothing moves unless it exits 0")
        again = " again (fenced by an earlier run)" if s.fenced else ""
        lines.append(f"fence server {s.hostname}{again} ({s.uuid}): {how}; it will run nothing "
                     "until unfenced")
    return lines

"""The lab's fence agent: power a lab server off, as IPMI would a real one.

``sdcadm lab power-off SERVER`` (or ``python -m sdcadm.lab.fence --dir D
SERVER``, what the lab writes into every server's ``fencing.command``)
SIGKILLs every process of SERVER: its agent's process group and anything
else running under its root (instances, their children), and in a netns lab
everything in its network namespace (its sshd), frozen (SIGSTOPped) ones
included -- SIGKILL needs no cooperation; in a netns lab the addresses its
instances held go too. It exits 0 only once none is
left, so a restore that trusts it never meets a process of the old server.
It works from any other server's point of view: it needs the lab directory
only, never the server's own agent.
"""

import argparse
import signal
import sys
import time

from sdcadm.errors import LabError, SdcadmError
from sdcadm.lab import procs
from sdcadm.lab.state import load_state

POWER_OFF_TIMEOUT = 10.0


def command_for(state):
    """The ``fencing.command`` of every lab server (placeholders in the path escaped)."""
    directory = str(state.path).replace("{", "{{").replace("}", "}}")
    return [sys.executable, "-m", "sdcadm.lab.fence", "--dir", directory, "{hostname}"]


def _server_processes(state, hostname):
    pids = set(procs.lab_processes(state.server_root(hostname)))
    ns = state.namespace(hostname)
    if ns is not None:  # netns lab: everything running in the server's namespace (its sshd too)
        from sdcadm.lab.netns import pids_in

        pids.update(pids_in(ns))
    agent = procs.agent_pid(state.config_path(hostname), state.agent_pidfile(hostname))
    if agent:
        pids.add(agent)
        pids.update(p for p in procs.descendants(agent) if not procs.gone(p))
    return sorted(pids)


def power_off(state, hostname, timeout=POWER_OFF_TIMEOUT):
    """SIGKILL every process of ``hostname``; return their pids once all are
    gone. LabError if some are still there after ``timeout`` seconds."""
    hostname = state.server(hostname)["hostname"]
    agent = procs.agent_pid(state.config_path(hostname), state.agent_pidfile(hostname))
    if agent:
        procs.kill_group(agent, signal.SIGKILL)  # the agent and the instances of its group
    killed, deadline = set(), time.monotonic() + timeout
    while True:
        # Again until none is left: a process forked while the others died
        # (an instance's child) is found on the next pass.
        left = [p for p in _server_processes(state, hostname) if not procs.gone(p)]
        if not left:
            break
        if time.monotonic() > deadline:
            raise LabError(f"{hostname}: processes {left} survived SIGKILL for {timeout:g}s",
                           hint="see `ps -o pid,stat,cmd -p " + ",".join(map(str, left)) + "`")
        for pid in left:
            procs.send(pid, signal.SIGKILL)
        killed.update(left)
        procs.wait_until(lambda: all(procs.gone(p) for p in left), 1.0, interval=0.01)
    if agent:
        killed.add(agent)
    if state.namespace(hostname) is not None:  # its power gone, nothing answers for its instances
        from sdcadm.lab.netns import flush_instance_addresses

        flush_instance_addresses(state.namespace(hostname))
    return sorted(killed)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sdcadm.lab.fence",
                                     description="Power a lab server off (the lab's fence agent).")
    parser.add_argument("--dir", required=True, help="the lab directory")
    parser.add_argument("server", help="hostname of the server to power off")
    args = parser.parse_args(argv)
    try:
        killed = power_off(load_state(args.dir, schema=False), args.server)
    except SdcadmError as e:
        print(f"power-off {args.server}: {e}", file=sys.stderr)
        return 1
    print(f"{args.server} powered off ({len(killed)} process(es) killed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

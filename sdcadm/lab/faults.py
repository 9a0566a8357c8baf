"""Network faults on demand in a netns lab: partition, heal, degrade.

A fault is a record in ``lab.json`` (``faults``: per server, its partition
and its degradation); the network is then made to match the records, all
of them at once, so ``heal`` and ``down`` undo exactly what was made and a
fault made twice is made once.

* **partition**: an nftables ruleset on the lab's bridge (in the lab's
  network namespace, never the host's firewall) drops every frame that
  enters or leaves the server's bridge port -- from everyone, the host's leg
  included -- or, with ``from``, the frames between its port and those of
  the servers named (both directions; the others still reach it). Frames,
  not addresses: ARP and every address the server holds (its instances')
  are cut alike. The server's processes keep running and still reach
  themselves inside its namespace.
* **degrade**: ``loss_pct``, nftables drops that share of the frames in each
  direction of the server's port (``numgen random``); ``delay_ms``, a tc
  netem qdisc on both ends of its link (the kernel must have netem);
  ``rate_kbit``, the link's bandwidth in each direction: netem's own rate
  with a delay, else a tbf qdisc (token bucket, in every kernel that has
  tc), so a slow link can be made where netem is missing.

``ruleset`` and ``tc_commands`` are pure (the unit tests read them);
``apply`` runs them.
"""

import os
import shutil

from sdcadm.errors import LabError, UsageError
from sdcadm.lab import netns

TABLE = "sdclab"


def _require_netns(state, what):
    if state.isolation != "netns":
        raise LabError(f"`lab {what}` needs a lab built with --isolation netns: in a loopback "
                       f"lab every server shares the host's loopback, which cannot be cut",
                       hint="rebuild the lab as root: `sdcadm lab destroy` then "
                            "`sdcadm lab up --isolation netns`")


def _hostname(state, name):
    return state.server(name)["hostname"]  # NotFound names the lab's servers


def ruleset(faults):
    """The nftables script for ``faults`` (replaces the lab's table whole)."""
    rules = []
    for host in sorted(faults):
        fault = faults[host]
        part = fault.get("partition")
        if part is not None:
            if part.get("from") is None:
                rules += [f'iifname "{host}" drop', f'oifname "{host}" drop']
            else:
                for peer in part["from"]:
                    rules += [f'iifname "{host}" oifname "{peer}" drop',
                              f'iifname "{peer}" oifname "{host}" drop']
        loss = (fault.get("degrade") or {}).get("loss_pct") or 0
        if loss:
            # numgen draws 0..99 per frame: < loss drops loss% of them.
            rules += [f'iifname "{host}" numgen random mod 100 < {_pct(loss)} drop',
                      f'oifname "{host}" numgen random mod 100 < {_pct(loss)} drop']
    body = "".join(f"\t\t{r}\n" for r in rules)
    return (f"add table bridge {TABLE}\ndelete table bridge {TABLE}\n"
            f"table bridge {TABLE} {{\n\tchain forward {{\n"
            f"\t\ttype filter hook forward priority 0; policy accept;\n{body}\t}}\n}}\n")


def _pct(value):
    return int(round(value))


TBF_BURST = "32kb"        # >= a frame at any rate; tbf cannot send a frame larger than it
TBF_LATENCY = "400ms"     # how long a frame may queue before tbf drops it


def tc_commands(lid, host, delay_ms, rate_kbit=0):
    """Command lines shaping both ends of ``host``'s link (its bridge port:
    frames to it; its eth0: frames from it): netem for a delay (with its
    rate, if any), tbf for a rate alone, or taking the qdisc off."""
    ends = [(netns.net_ns(lid), host), (netns.server_ns(lid, host), netns.SERVER_IF)]
    if delay_ms:
        qdisc = ["netem", "delay", f"{delay_ms:g}ms"] + (
            ["rate", f"{rate_kbit:g}kbit"] if rate_kbit else [])
    elif rate_kbit:
        qdisc = ["tbf", "rate", f"{rate_kbit:g}kbit", "burst", TBF_BURST, "latency",
                 TBF_LATENCY]
    else:
        return [["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"]
                for ns, dev in ends]
    return [["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", *qdisc]
            for ns, dev in ends]


def _shaping(faults, host):
    deg = faults.get(host, {}).get("degrade") or {}
    return (deg.get("delay_ms") or 0, deg.get("rate_kbit") or 0)


def apply(state, previous=None):
    """Make the lab's network match ``state.faults``; ``previous``: the
    faults before (to take netem off links no longer delayed)."""
    netns.require_root("network faults")
    nft = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    if nft is None:
        raise LabError("nft is not installed: partitions and losses are nftables rules",
                       hint="apt-get install nftables (`make deps` does it as root)")
    proc = netns.run(["ip", "netns", "exec", netns.net_ns(state.netns["id"]), nft, "-f", "-"],
                     check=False, input_text=ruleset(state.faults))
    if proc.returncode != 0:
        raise LabError(f"nft refused the lab's ruleset: {proc.stderr.strip()}",
                       hint="the kernel needs nf_tables with bridge support "
                            "(CONFIG_NF_TABLES_BRIDGE)")
    for host in {**(previous or {}), **state.faults}:
        before, after = _shaping(previous or {}, host), _shaping(state.faults, host)
        if before == after:
            continue
        for argv in tc_commands(state.netns["id"], host, *after):
            proc = netns.run(argv, check=False)
            if proc.returncode != 0 and any(after):
                if after[0]:
                    raise LabError(f"cannot delay {host}'s link: {proc.stderr.strip()}",
                                   hint="this kernel has no netem qdisc "
                                        "(CONFIG_NET_SCH_NETEM): --delay cannot work here; "
                                        "--rate (tbf) and --loss (nftables) do")
                raise LabError(f"cannot limit {host}'s link: {proc.stderr.strip()}",
                               hint="the kernel needs the tbf qdisc (CONFIG_NET_SCH_TBF)")


def _update(state, host, key, value):
    from sdcadm.lab.state import save_state

    previous = {h: {k: dict(v) for k, v in f.items()} for h, f in state.faults.items()}
    fault = dict(state.faults.get(host, {}))
    if value is None:
        fault.pop(key, None)
    else:
        fault[key] = value
    if fault:
        state.faults[host] = fault
    else:
        state.faults.pop(host, None)
    try:
        apply(state, previous)
    except BaseException:
        state.faults = previous
        apply_quietly(state)
        raise
    save_state(state)
    return state.faults.get(host, {})


def apply_quietly(state):
    try:
        apply(state)
    except LabError:
        pass


def partition(state, server, peers=None):
    """Cut ``server`` off from everyone (``peers`` None) or from ``peers``."""
    _require_netns(state, "partition")
    host = _hostname(state, server)
    if peers is not None:
        peers = sorted({_hostname(state, p) for p in peers})
        if not peers:
            raise UsageError("--from names no server", hint="--from hn1,hn2, or no --from to "
                                                             "cut SERVER from everyone")
        if host in peers:
            raise UsageError(f"cannot partition {host} from itself",
                             hint="--from names the other side")
    return _update(state, host, "partition", {"from": peers})


def heal(state, server):
    """Undo every fault of ``server`` (partition and degradation)."""
    _require_netns(state, "heal")
    host = _hostname(state, server)
    was = state.faults.get(host, {})
    _update(state, host, "partition", None)
    _update(state, host, "degrade", None)
    return was


def degrade(state, server, delay_ms=0.0, loss_pct=0.0, clear=False, rate_kbit=0.0):
    """Slow ``server``'s link (``delay_ms`` each way, ``rate_kbit`` of
    bandwidth each way) and/or drop ``loss_pct`` percent of its frames each
    way; ``clear`` undoes it."""
    _require_netns(state, "degrade")
    host = _hostname(state, server)
    if clear:
        if delay_ms or loss_pct or rate_kbit:
            raise UsageError("--clear takes no --delay, --loss or --rate")
        return _update(state, host, "degrade", None)
    if not 0 <= delay_ms <= 60000:
        raise UsageError(f"--delay {delay_ms:g} is out of range", hint="0 to 60000 ms")
    if not 0 <= loss_pct <= 100:
        raise UsageError(f"--loss {loss_pct:g} is out of range", hint="0 to 100 percent")
    if rate_kbit and not 8 <= rate_kbit <= 10_000_000:
        raise UsageError(f"--rate {rate_kbit:g} is out of range",
                         hint="8 kbit/s to 10000000 kbit/s (10 Gbit/s)")
    if not delay_ms and not loss_pct and not rate_kbit:
        raise UsageError("degrade needs --delay MS, --loss PCT and/or --rate KBIT",
                         hint="or --clear to undo it")
    fault = {"delay_ms": delay_ms, "loss_pct": loss_pct}
    if rate_kbit:
        fault["rate_kbit"] = rate_kbit
    return _update(state, host, "degrade", fault)


def describe(fault):
    """One line for a server's faults, for people."""
    parts = []
    part = fault.get("partition")
    if part is not None:
        parts.append("partitioned from " + (", ".join(part["from"]) if part["from"]
                                            else "everyone"))
    deg = fault.get("degrade")
    if deg:
        rate = f", {deg['rate_kbit']:g} kbit/s" if deg.get("rate_kbit") else ""
        parts.append(f"degraded ({deg.get('delay_ms', 0):g} ms, {deg.get('loss_pct', 0):g}% loss"
                     f"{rate})")
    return "; ".join(parts) or "healthy"


#!/usr/bin/env python3
"""Restore and migrate, measured on real labs.

    .venv/bin/python bench/restore.py            # 1 GiB dataset, 256 MiB before a migrate
    .venv/bin/python bench/restore.py --quick    # 64 MiB and 16 MiB
    .venv/bin/python bench/restore.py --only a,c # some parts only

(a) full DC: the drill (``sdcadm.lab.drill.run_drill``) on the full lab DC
    (3 headnodes, 2 compute nodes, every lab service): hn0 is killed and every
    single-instance service is restored on hn1. Figure: the restore time, from
    the restore's first step to every restored instance healthy (target
    <= 30 s), plus the time from the kill.
(b) dataset size: two stateful services in a small lab, one with a 1 GiB
    delegate dataset (mixed file sizes: 64 MiB, 1 MiB and 4-64 KiB files), one
    with 1 MiB, written straight into their source ``zones/<uuid>/data`` and
    synced to hn1; hn0 killed; each restored on its own (`service restore
    SERVICE --dead hn0`). Restore is zero-copy (a hard-link clone of the last
    good copy), so the two restore times should differ by <= 2 s.
(c) migrate: `service migrate hn0 hn1 --all` in a small lab (sapi with a
    dataset of --migrate-data bytes, imgapi, vmapi, napi, binder), with the
    procedure's own probes and an independent `lab watch`: per service the
    failed probes and the downtime (target <= 2 s each; stateless: 0 failed
    probes).

Prints one JSON line on stdout (progress on stderr). It never asserts; every
lab it builds is destroyed, even on failure.
"""

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchdata import MiB, file_plan, parse_size, write_data  # noqa: E402 (bench/ is on sys.path)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sdcadm.config import load_config  # noqa: E402
from sdcadm.errors import LabError  # noqa: E402
from sdcadm.lab import ctl  # noqa: E402
from sdcadm.store import open_store  # noqa: E402

TARGET_FULL_S = 30.0
TARGET_SIZE_DIFF_S = 2.0
TARGET_DOWNTIME_S = 2.0
HEARTBEAT = 0.5


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def observer(event):
    message = getattr(event, "message", None)
    if message:
        say(f"  [{getattr(event, 'step', '')}] {message}")


# -- labs -------------------------------------------------------------------------

def lab_up(directory, headnodes, computenodes, services, heartbeat=HEARTBEAT, run_drill=None):
    """ctl.up on a random free 127.x.y.0/24 (another lab may hold one)."""
    last = None
    for _ in range(5):
        net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.0/24"
        try:
            if run_drill:
                return run_drill(net)
            return ctl.up(directory, net, headnodes, computenodes, services,
                          heartbeat_interval=heartbeat, timeout=180)
        except LabError as e:
            if "cannot use" not in str(e):
                raise
            last = e
            ctl.destroy(directory)
    raise last


def context(state, hostname="hn1"):
    from sdcadm.procedures import ProcedureContext

    config = load_config(state.config_path(hostname), environ={})
    store = open_store(config)
    return ProcedureContext.for_config(config, store)


def run_procedure(ctx, proc):
    """Run one procedure as `sdcadm` would with -y; return (RunResult, Task)."""
    from sdcadm.procedures import run_procedures
    from sdcadm.procedures.console import Console

    result = run_procedures([proc], ctx, yes=True, console=Console(info_to_stderr=True))
    return result, ctx.store.get_task(result.task)


def step_results(task):
    return [s.get("result") or {} for s in task.steps]


# -- data ---------------------------------------------------------------------------

def tree_stats(root):
    files = size = linked = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            files += 1
            size += st.st_size
            linked += st.st_nlink > 1
    return {"files": files, "bytes": size, "hard_linked": linked}


def sync(state, ctx, services):
    from sdcadm.restore_data.client import sync_headnodes

    heads = [s for s in ctx.store.list_servers() if s.headnode and s.hostname != "hn0"]
    t0 = time.monotonic()
    results = sync_headnodes(heads, ctx.agents.token, services=services)
    elapsed = round(time.monotonic() - t0, 3)
    bad = [f"{h.hostname}: {'; '.join(text for _, text in h.problems)}"
           for h in results if not h.ok]
    if bad:
        raise RuntimeError("restore data did not sync: " + " | ".join(bad))
    return elapsed


# -- (a) the full DC ------------------------------------------------------------------

def full_drill(work):
    from sdcadm.lab.drill import run_drill

    directory = work / "full"
    say("(a) drill on the full lab DC (3 headnodes, 2 compute nodes, every lab service)")
    try:
        t0 = time.monotonic()
        result = lab_up(directory, 3, 2, None, run_drill=lambda net: run_drill(
            directory, net, headnodes=3, computenodes=2, services=None, observer=observer,
            timeout=180))
        wall = round(time.monotonic() - t0, 3)
        d = result.to_dict()
        slowest = sorted(d["services"].items(), key=lambda kv: -kv[1]["rto_s"])[:3]
        return {
            "lab": "3 HN + 2 CN, every lab service", "services_restored": d["services_restored"],
            "restore_s": d["rto_s"], "from_kill_s": d["rto_from_kill_s"], "rpo_s": d["rpo_s"],
            "slowest": {a: r["rto_s"] for a, r in slowest},
            "canaries_verified": f"{d['canaries_verified']}/{d['canaries_written_before_sync']}",
            "fencing_verified": d["fencing_verified"], "drill_ok": d["ok"],
            "problems": d["problems"], "drill_wall_s": wall,
            "target_s": TARGET_FULL_S, "met": d["ok"] and d["rto_s"] <= TARGET_FULL_S,
        }
    finally:
        ctl.destroy(directory)


# -- (b) 1 GiB vs 1 MiB ------------------------------------------------------------------

def dataset_size(work, big, small):
    from sdcadm.procedures.restore import RestoreServices

    directory = work / "sizes"
    say(f"(b) restore of a {big // MiB} MiB dataset vs a {small / MiB:g} MiB one")
    try:
        state = lab_up(directory, 3, 0, ["sapi", "imgapi", "vmapi"])  # etcd: quorum after hn0
        ctx = context(state)
        insts = {i.alias: i for i in ctx.store.list_instances()}
        sizes = {"sapi0": big, "imgapi0": small}
        t0 = time.monotonic()
        for alias, size in sizes.items():
            write_data(state.server_root("hn0") / "zones" / insts[alias].uuid / "data" / "bench",
                       file_plan(size))
        written_s = round(time.monotonic() - t0, 3)
        say(f"  wrote the datasets in {written_s:.1f}s; syncing to hn1")
        sync_s = sync(state, ctx, ["sapi", "imgapi", "vmapi"])
        say(f"  synced in {sync_s:.1f}s; killing hn0")
        ctl.kill(state, "hn0")

        out = {"big_bytes": big, "small_bytes": small, "write_s": written_s, "sync_s": sync_s}
        # vmapi first: its run fences hn0, so that the two measured runs do the same work.
        _, task = run_procedure(ctx, RestoreServices(["vmapi"], dead=["hn0"]))
        out["fence_and_vmapi_s"] = round(sum(s.get("elapsed_s") or 0 for s in task.steps), 3)
        for label, service, alias in (("small", "imgapi", "imgapi0"), ("big", "sapi", "sapi0")):
            run, task = run_procedure(ctx, RestoreServices([service], dead=["hn0"]))
            (r,) = [v for res in step_results(task) for v in (res.get("instances") or {}).values()]
            restored = state.server_root("hn1") / "zones" / insts[alias].uuid / "data" / "bench"
            stats = tree_stats(restored)
            out[label] = {"service": service, "restore_s": r["rto_s"], "run_s": run.elapsed_s,
                          "files": stats["files"], "bytes": stats["bytes"],
                          "hard_linked_files": stats["hard_linked"],
                          "complete": stats["bytes"] == sizes[alias]}
            say(f"  {alias} ({stats['bytes'] // MiB} MiB, {stats['files']} files) restored in "
                f"{r['rto_s']:.2f}s")
        out["difference_s"] = round(out["big"]["restore_s"] - out["small"]["restore_s"], 3)
        out["target_s"] = TARGET_SIZE_DIFF_S
        out["met"] = (abs(out["difference_s"]) <= TARGET_SIZE_DIFF_S
                      and out["big"]["complete"] and out["small"]["complete"])
        ctx.store.close()
        return out
    finally:
        ctl.destroy(directory)


# -- (c) migrate downtime -------------------------------------------------------------------

def migrate_downtime(work, data_bytes):
    from sdcadm.lab.watch import Watcher
    from sdcadm.procedures.migrate import MigrateServices

    directory = work / "migrate"
    # assets: neither singleton nor stateful, the one kind that moves make-before-break here
    # (binder is HA but already has a peer on hn1, so it stays).
    services = ["sapi", "imgapi", "vmapi", "napi", "assets", "binder"]
    say(f"(c) migrate hn0 -> hn1 --all (sapi holding {data_bytes // MiB} MiB)")
    try:
        state = lab_up(directory, 2, 0, services)
        ctx = context(state)
        sapi = next(i for i in ctx.store.list_instances() if i.alias == "sapi0")
        write_data(state.server_root("hn0") / "zones" / sapi.uuid / "data" / "bench",
                   file_plan(data_bytes))
        # refresh: follow the new instances as soon as they exist (default: every 1 s)
        watcher = Watcher(ctx.store, services, interval=0.05, refresh=0.1).start()
        try:
            run, task = run_procedure(ctx, MigrateServices("hn0", "hn1", all_services=True))
        finally:
            watched = watcher.stop()
        per_service = {}
        for r in step_results(task):
            if not r:
                continue
            seen = watched["services"].get(r["service"], {})
            per_service[r["service"]] = {
                "stateful": r["stateful"], "stop_first": r.get("stop_first", r["stateful"]),
                "downtime_s": r["downtime_s"],
                "failed_probes": r["failed_probes"], "probes": r["probes"],
                "watch_downtime_s": seen.get("downtime_s"), "watch_failed": seen.get("failed"),
            }
            say(f"  {r['old']} -> {r['new']}: downtime {r['downtime_s']:.2f}s "
                f"({r['failed_probes']}/{r['probes']} probes failed; lab watch "
                f"{seen.get('downtime_s')}s)")
        ctx.store.close()
        worst = max((max(v["downtime_s"], v["watch_downtime_s"] or 0)
                     for v in per_service.values()), default=0.0)
        # Singletons are stopped before their new instance starts (never two
        # at once): down by design. The others must never miss a probe.
        mbb_ok = all(v["failed_probes"] == 0 and not v["watch_failed"]
                     for v in per_service.values() if not v["stop_first"])
        return {"sapi_data_bytes": data_bytes, "elapsed_s": run.elapsed_s,
                "services": per_service, "worst_downtime_s": worst,
                "make_before_break_never_down": mbb_ok, "target_s": TARGET_DOWNTIME_S,
                "met": worst <= TARGET_DOWNTIME_S and mbb_ok}
    finally:
        ctl.destroy(directory)


# -- main ------------------------------------------------------------------------------------

def main():
    from benchdata import loopback_labs

    loopback_labs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller datasets (64 MiB / 16 MiB)")
    parser.add_argument("--big", default=None, help="size of the big dataset in (b) (default 1G)")
    parser.add_argument("--small", default="1M", help="size of the small dataset in (b)")
    parser.add_argument("--migrate-data", default=None,
                        help="size of sapi's dataset in (c) (default 256M)")
    parser.add_argument("--only", default="a,b,c", help="parts to run, e.g. a,c")
    parser.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    big = parse_size(args.big or ("64M" if args.quick else "1G"))
    migrate_bytes = parse_size(args.migrate_data or ("16M" if args.quick else "256M"))
    parts = {p.strip() for p in args.only.split(",")}

    work = Path(args.dir or tempfile.mkdtemp(prefix="sdcadm-bench-restore-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = {"bench": "restore", "quick": args.quick,
           "machine": {"nproc": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version(), "loadavg_start": os.getloadavg()}}
    t0 = time.monotonic()
    for key, name, fn in (("a", "full_dc_restore", lambda: full_drill(work)),
                          ("b", "dataset_size", lambda: dataset_size(work, big,
                                                                      parse_size(args.small))),
                          ("c", "migrate_downtime", lambda: migrate_downtime(work, migrate_bytes))):
        if key not in parts:
            continue
        try:
            out[name] = fn()
        except Exception as e:  # a bench reports, it does not fail
            say(traceback.format_exc())
            out[name] = {"error": f"{type(e).__name__}: {e}", "met": False}
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    out["all_met"] = all(out[n]["met"] for n in ("full_dc_restore", "dataset_size",
                                                 "migrate_downtime") if n in out)
    if not args.dir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, sort_keys=False))


if __name__ == "__main__":
    main()

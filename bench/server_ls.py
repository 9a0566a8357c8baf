#!/usr/bin/env python3
"""Benchmark `sdcadm server ls` and `sdcadm insts` on big DC stores.

``--backend etcd``: the same DC on a one-member etcd (bench/etcd_dc.py), with
hn0's agent running, whose listing cache the commands read
(agent/listing.py): the first listing after the agent starts (the cache reads
the whole store), then the runs as below, then each command once reading the
store itself (``SDCADM_LISTING=store``), for comparison.

sqlite (default): fills a sqlite store with 1,000 servers / 5,000 instances and another with
10,000 servers / 50,000 instances, then runs each command as a whole process
(interpreter start, imports, config, store, render) N times and reports the
best and the median wall time, with `-H` and with the default table, stdout
to /dev/null. Prints ONE JSON line. Target: <= 1.0 s per command at 10k
(reported as met or not, never asserted).

    .venv/bin/python bench/server_ls.py [--runs 5] [--keep DIR] [--backend etcd]
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sdcadm.catalog import load_catalog
from sdcadm.config import config_from
from sdcadm.model import Service
from sdcadm.store import store_for

from benchdata import IMAGE_KIND, dc_instances, dc_servers, uuid_of

TARGET_S = 1.0
SIZES = [(1_000, 5_000), (10_000, 50_000)]


def fill(path, n_servers, n_instances, now):
    """A store with n_servers (3 headnodes) and n_instances spread over them."""
    config = config_from({"store": {"backend": "sqlite", "path": str(path)}}, "bench")
    store = store_for(config, clock=lambda: now).initialize()
    services = [s for s in load_catalog().names()]
    for name in services:
        store.put_service(Service(name=name, image=uuid_of(IMAGE_KIND, 1)))
    for server, beats in dc_servers(n_servers):
        store.put_server(server)
        if beats:
            store.heartbeat(server.uuid)
    for instance in dc_instances(n_instances, services, range(n_servers)):
        store.create_instance(instance)
    store.close()


def sdcadm_argv():
    script = Path(sys.executable).with_name("sdcadm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sdcadm.cli.main"]


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(argv, env, runs):
    """Wall time (best, median) and CPU time (user+sys, best) of ``runs`` runs.

    CPU time is reported too because a busy machine inflates wall time."""
    times, cpu = [], []
    for _ in range(runs):
        cpu_before, started = _children_cpu(), time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - started)
        cpu.append(_children_cpu() - cpu_before)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()}")
    return {"best_s": round(min(times), 3), "median_s": round(statistics.median(times), 3),
            "cpu_best_s": round(min(cpu), 3)}


COMMANDS = [("server_ls_H", ["server", "ls", "-H"]), ("server_ls_table", ["server", "ls"]),
            ("insts_H", ["insts", "-H"]), ("insts_table", ["insts"])]


def wait_agent(config, seconds=60):
    from sdcadm.cli.listing import agent_url
    from sdcadm.config import load_config, read_token
    from sdcadm.procedures.agent_client import AgentClient

    loaded = load_config(str(config))
    client = AgentClient(agent_url(loaded), read_token(loaded.agent.token_file))
    deadline = time.monotonic() + seconds
    while True:
        try:
            return client.ping()
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def etcd_size(workdir, n_servers, n_instances, runs, env, index):
    """One size on etcd: fill (once), hn0's agent, cold, warm and direct runs."""
    import etcd_dc

    label = f"{n_servers // 1000}k"
    base = workdir / f"etcd-{label}"
    address = f"127.88.0.{index + 1}"
    server = etcd_dc.start_etcd(base / "etcd", address, 23790, 23800)
    agent = None
    try:
        built = 0.0
        if not (base / "filled").exists():
            started = time.perf_counter()
            etcd_dc.fill(server.endpoint, n_servers, n_instances)
            built = round(time.perf_counter() - started, 1)
            (base / "filled").touch()
        config = etcd_dc.headnode_config(base, server.endpoint, address, 5309)
        agent = etcd_dc.Agent(config, base / "agent.log")
        wait_agent(config)
        run_env = dict(env, SDCADM_CONFIG=str(config))
        entry = {"servers": n_servers, "instances": n_instances, "fill_s": built}
        # the first listing: the agent's cache reads the whole store
        entry["first_insts_H"] = time_command(sdcadm_argv() + ["insts", "-H"], run_env, 1)
        for name, argv in COMMANDS:
            entry[name] = time_command(sdcadm_argv() + argv, dict(run_env, SDCADM_LISTING="agent"),
                                       runs)
        entry["agent_peak_rss_mib"] = agent.rss_mib()
        entry["direct"] = {name: time_command(sdcadm_argv() + argv,
                                              dict(run_env, SDCADM_LISTING="store"), 1)
                           for name, argv in COMMANDS}
        return label, entry
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--keep", metavar="DIR", help="build the stores in DIR and keep them "
                        "(reused when present)")
    parser.add_argument("--backend", choices=["sqlite", "etcd"], default="sqlite")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="sdcadm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCADM_")}
    results = {}
    try:
        for index, (n_servers, n_instances) in enumerate(SIZES):
            if args.backend == "etcd":
                label, entry = etcd_size(workdir, n_servers, n_instances, args.runs, env, index)
                results[label] = entry
                continue
            label = f"{n_servers // 1000}k"
            db = workdir / f"dc-{label}.sqlite"
            built = 0.0
            if not db.exists():
                started = time.perf_counter()
                fill(db, n_servers, n_instances, time.time())
                built = round(time.perf_counter() - started, 1)
            config = workdir / f"sdcadm-{label}.yaml"
            # The longest heartbeat timeout the configuration allows (a day): the
            # fill-time heartbeats stay fresh, so every server lists as running
            # (a store kept with --keep for longer lists them unreachable: same cost).
            config.write_text(f"store:\n  path: {db}\nagent:\n  heartbeat_timeout: 86400\n")
            run_env = dict(env, SDCADM_CONFIG=str(config))
            entry = {"servers": n_servers, "instances": n_instances, "fill_s": built}
            for name, argv in COMMANDS:
                entry[name] = time_command(sdcadm_argv() + argv, run_env, args.runs)
            results[label] = entry
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    commands = ["server_ls_H", "server_ls_table", "insts_H", "insts_table"]
    big, small = results["10k"], results["1k"]
    print(json.dumps({
        "bench": "server_ls",
        "backend": args.backend,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_1m": round(os.getloadavg()[0], 2)},
        "runs": args.runs,
        "results": results,
        "ratio_10k_1k": {c: round(big[c]["best_s"] / small[c]["best_s"], 2) for c in commands},
        "target_s": TARGET_S,
        "target_met": {c: big[c]["best_s"] <= TARGET_S for c in commands},
    }))


if __name__ == "__main__":
    main()

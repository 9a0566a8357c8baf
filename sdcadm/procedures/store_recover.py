"""`sdcadm store status` and `sdcadm store recover`: the store's members and
snapshots, and rebuilding it on a lone surviving headnode (docs/store.md).

Not run by the procedure runner: its DC lock and its tasks live in the store,
which has no quorum when `store recover` is needed. The shape is the same:
``prepare()`` gathers the facts and decides (``planning.store_plan``),
changes nothing and raises when the recovery is refused; ``summarize()`` is
the plan shown before confirmation; ``execute()`` carries it out:

1. stop this headnode's etcd member (``store.member.stop_command``) and wait
   until it no longer answers;
2. ``etcdctl snapshot restore`` the chosen snapshot into a new data
   directory: a new one-member cluster (this member's name and peer URL, a new
   cluster token), etcd's --force-new-cluster done from a snapshot;
3. move the old data directory aside (kept for forensics, never deleted) and
   the new one into its place;
4. start the member (``store.member.start_command``), wait until it answers
   with a leader, one member, at the snapshot's revision or later;
5. point ``store.etcd_endpoints`` of this headnode's configuration file at it
   (the file before is kept as ``<file>.pre-recover``) and open the DC store
   through it.

Every step can run again: a recovery cut short is finished by running the
command again (the member is then down, so the quorum check passes).

Snapshots come from this headnode's restore data (``store/``) and from every
other headnode's that answers over SSH, as `service restore` pulls a peer's
copy: the signed manifest first, then the file, checked against it.
"""

import json
import logging
import os
import shlex
import shutil
import time
from pathlib import Path

from sdcadm.config import parse_endpoint
from sdcadm.errors import ConfigError, SdcadmError, StoreError, TransportError
from sdcadm.fsutil import sha256_bytes, which, write_bytes_atomic
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.store_plan import (Candidate, age_text, choose_snapshot,
                                                   quorum_problem, summary_lines, usable)
from sdcadm.progress import Progress, notify
from sdcadm.restore_data.layout import restore_layout
from sdcadm.restore_data.manifest import ManifestError
from sdcadm.restore_data.peer_copy import peer_restore_dir, ssh_transport
from sdcadm.restore_data.store_snapshot import (MANIFEST, MAX_MANIFEST_BYTES, STORE_DIR,
                                                check_store_copy, parse_store_manifest,
                                                read_store_manifest, store_dir)

log = logging.getLogger(__name__)

STOP_WAIT = 30.0
START_WAIT = 60.0


# -- facts shared by status and recover -------------------------------------------------

def known_headnodes(config, store=None):
    """[Server] of the DC's headnodes: from the store when it answers, else
    from this headnode's ``dc.json`` (restore data), which survives the store."""
    from sdcadm.model import Server

    if store is not None:
        try:
            return [s for s in store.list_servers() if s.headnode]
        except StoreError:
            pass
    path = restore_layout(config).dc_json
    try:
        doc = json.loads(path.read_bytes())
        from sdcadm.schemas import validate

        validate("restore_dc", doc, path)
    except FileNotFoundError:
        return []
    except (OSError, ValueError, SdcadmError) as e:
        log.warning("cannot read %s: %s", path, e)
        return []
    return [Server.from_dict(s) for s in doc["servers"] if s.get("headnode")]


def local_candidate(config):
    layout = restore_layout(config)
    me = config.hostname or config.server_uuid or "this headnode"
    try:
        manifest = read_store_manifest(layout)
    except ManifestError as e:
        return Candidate(me, True, problem=e.problem)
    if manifest is None:
        return Candidate(me, True, problem=f"no snapshot in {store_dir(layout)}")
    path = store_dir(layout) / manifest["file"]
    problems = check_store_copy(path, manifest)
    return Candidate(me, True, manifest, "; ".join(problems) or None, str(path))


def peer_candidate(config, peer, transports=None):
    """The signed manifest of ``peer``'s snapshot (the file is not fetched)."""
    layout = restore_layout(config)
    remote = peer_restore_dir(config, peer) / STORE_DIR / MANIFEST
    transport = None
    try:
        transport = (transports or (lambda host: ssh_transport(config, host)))(peer.admin_ip)
        raw = transport.run_bytes(["head", "-c", str(MAX_MANIFEST_BYTES + 1), str(remote)],
                                  check=False, timeout=30)
        if raw.returncode != 0:
            text = raw.stderr.decode(errors="replace").strip()
            if "No such file" in text:
                return Candidate(peer.hostname, False, problem="no snapshot in its restore data")
            return Candidate(peer.hostname, False, problem=f"cannot read {remote}: {text[:200]}")
        manifest = parse_store_manifest(raw.stdout, layout.key, f"{peer.hostname}:{remote}")
    except ManifestError as e:
        return Candidate(peer.hostname, False, problem=e.problem)
    except (TransportError, OSError) as e:
        message = e.message if isinstance(e, SdcadmError) else str(e)
        return Candidate(peer.hostname, False, problem=f"unreachable: {message[:200]}")
    finally:
        if transport is not None:
            transport.close()
    return Candidate(peer.hostname, False, manifest)


def gather_candidates(config, headnodes, transports=None):
    """This headnode's snapshot, then every other headnode's (by hostname)."""
    from concurrent.futures import ThreadPoolExecutor

    peers = [p for p in sorted(headnodes, key=lambda s: s.hostname)
             if p.uuid != config.server_uuid]
    if not peers:
        return [local_candidate(config)]
    # At once: a powered-off headnode costs its SSH connect timeout, not one per peer.
    with ThreadPoolExecutor(min(8, len(peers)), thread_name_prefix="store-snapshots") as pool:
        found = list(pool.map(lambda p: peer_candidate(config, p, transports), peers))
    return [local_candidate(config)] + found


def fetch_peer_snapshot(config, candidate, peer, transports=None):
    """Bring ``peer``'s snapshot file here (``store/.fetched-<name>``), checked
    against its signed manifest; return the candidate with its path, or with
    the problem (and nothing left behind)."""
    layout = restore_layout(config)
    m = candidate.manifest
    remote = peer_restore_dir(config, peer) / STORE_DIR / m["file"]
    target = store_dir(layout) / f".fetched-{m['file']}"
    transport = (transports or (lambda host: ssh_transport(config, host)))(peer.admin_ip)
    try:
        data = transport.run_bytes(["head", "-c", str(m["bytes"] + 1), str(remote)],
                                   timeout=600).stdout
    except TransportError as e:
        return Candidate(candidate.headnode, False, m, f"cannot fetch {remote}: {e.message}")
    finally:
        transport.close()
    if len(data) != m["bytes"] or sha256_bytes(data) != m["sha256"]:
        return Candidate(candidate.headnode, False, m,
                         f"{peer.hostname}:{remote} does not match its signed manifest "
                         f"({len(data)} bytes, sha256 {sha256_bytes(data)[:12]}…; manifest: "
                         f"{m['bytes']} bytes, {m['sha256'][:12]}…)")
    write_bytes_atomic(target, data)
    problems = check_store_copy(target, m)
    if problems:
        target.unlink(missing_ok=True)
        return Candidate(candidate.headnode, False, m, "; ".join(problems))
    return Candidate(candidate.headnode, False, m, None, str(target))


def from_path_candidate(config, path):
    """The snapshot the operator named (``--from-snapshot``): a restore-data
    ``store/`` directory, or a snapshot file in one; its signed manifest is
    required (revision, time and sha256 come from it)."""
    layout = restore_layout(config)
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    mpath = directory / MANIFEST
    label = f"--from-snapshot {path}"
    try:
        raw = mpath.read_bytes()
        manifest = parse_store_manifest(raw, layout.key, mpath)
    except FileNotFoundError:
        return Candidate(label, True, problem=f"no {MANIFEST} next to it: only a snapshot "
                                              "kept in restore data (with its signed "
                                              "manifest) can be used")
    except OSError as e:
        return Candidate(label, True, problem=f"{mpath}: cannot be read: {e.strerror}")
    except ManifestError as e:
        return Candidate(label, True, problem=e.problem)
    if not path.is_dir() and path.name != manifest["file"]:
        return Candidate(label, True, manifest, f"the manifest next to it names "
                                                f"{manifest['file']}, not {path.name}")
    snapshot = directory / manifest["file"]
    problems = check_store_copy(snapshot, manifest)
    return Candidate(label, True, manifest, "; ".join(problems) or None, str(snapshot))


def member_of(config):
    """This headnode's etcd member as configured (``store.member``), else as
    `store start-member` recorded it on a headnode made by headnode-setup
    (``MEMBER_RECORD``); ConfigError naming what is missing."""
    from sdcadm.store.etcd_member import MEMBER_RECORD, read_record

    m = config.store.member
    if not m.peer_url:
        recorded = read_record(config.under_root(MEMBER_RECORD))
        if recorded is not None:
            return dict(recorded, source=config.under_root(MEMBER_RECORD))
    name = m.name or config.hostname
    client = m.client_url or (config.store.etcd_endpoints[0] if config.store.etcd_endpoints
                              else None)
    missing = [k for k, v in (("store.member.name (or hostname)", name),
                              ("store.member.peer_url", m.peer_url),
                              ("store.member.client_url", client)) if not v]
    if missing:
        raise ConfigError(config.path, [f"{k} is not set" for k in missing],
                          hint="`store recover` starts this headnode's member as a new cluster: "
                               "it needs the member's name and URLs (docs/store.md); a "
                               "headnode made by headnode-setup has them in "
                               f"{config.under_root(MEMBER_RECORD)}, which is missing")
    if "://" not in client:
        client = f"http://{client}"
    return {"name": name, "peer_url": m.peer_url, "client_url": client,
            "data_dir": config.under_root(m.data_dir),
            "start_command": _argv(m.start_command), "stop_command": _argv(m.stop_command),
            "source": config.path}


def _argv(command):
    return shlex.split(command) if isinstance(command, str) else list(command)


def endpoint_of(url):
    return url.split("://", 1)[-1].rstrip("/")


def health(config, timeout=2.0):
    from sdcadm.store.etcd_maintenance import healthy

    return {e: healthy(e, timeout) for e in config.store.etcd_endpoints}


# -- store status ---------------------------------------------------------------------

def store_status(config, open_store=None, now=None, transports=None):
    """What `sdcadm store status` shows (a JSON-able dict). ``open_store()``
    gives the DC store, asked only when a member has a leader (without a
    quorum it would only time out): the list of headnodes comes from it, else
    from this headnode's ``dc.json``."""
    now = time.time() if now is None else now
    if config.store.backend != "etcd":
        return {"backend": config.store.backend, "path": config.store.path,
                "note": "a single-file store on this server: no members, no quorum and no "
                        "snapshots; a DC of more than one server keeps its store in etcd "
                        "(store.backend: etcd), which `store status` and `store recover` "
                        "are about"}
    from sdcadm.store.etcd_maintenance import healthy, member_status, members

    from sdcadm.store.etcd_client import learned_places

    rows, listed, cluster = [], None, None

    def ask(endpoint):
        nonlocal listed, cluster
        row = {"endpoint": endpoint, "reachable": False, "healthy": False}
        try:
            st = member_status(endpoint)
            row.update(reachable=True, member_id=st["member_id"], leader=st["leader"],
                       revision=st["revision"], db_size=st["db_size"],
                       cluster_id=st["cluster_id"], version=st["version"])
            row["healthy"] = healthy(endpoint)
            cluster = cluster or st["cluster_id"]
            if listed is None and row["healthy"]:
                listed = members(endpoint)
        except StoreError as e:
            row["error"] = e.message
        rows.append(row)

    for endpoint in config.store.etcd_endpoints:
        ask(endpoint)
    # Members not configured here (added by headnode-setup): asked too, as
    # the store's clients learn them.
    configured = [parse_endpoint(e) for e in config.store.etcd_endpoints]
    for protocol, host, port in learned_places(configured, [
            u for m in listed or [] for u in m["client_urls"]])[len(configured):]:
        ask(f"{host}:{port}" if protocol == "http" else f"{protocol}://{host}:{port}")
    by_id = {r.get("member_id"): r for r in rows if r.get("member_id")}
    out_members = []
    for m in listed or []:
        r = by_id.get(m["id"], {})
        out_members.append({"name": m["name"], "id": m["id"], "peer_urls": m["peer_urls"],
                            "client_urls": m["client_urls"], "reachable": bool(r.get("reachable")),
                            "is_leader": any(x.get("leader") == m["id"] for x in rows)})
    leaders = {r["leader"] for r in rows if r.get("leader")}
    leader = next((m["name"] for m in out_members if m["id"] in leaders), None)
    revision = max((r.get("revision", 0) for r in rows), default=0) or None
    quorum = any(r["healthy"] for r in rows)
    store = None
    if quorum and open_store is not None:
        try:
            store = open_store()
        except StoreError:
            store = None
    candidates = gather_candidates(config, known_headnodes(config, store), transports)
    snapshots = [{"headnode": c.headnode, "revision": c.revision,
                  "age_s": round(now - c.taken, 3) if c.taken is not None else None,
                  "cluster_id": c.manifest["cluster_id"] if c.manifest else None,
                  "bytes": c.manifest["bytes"] if c.manifest else None,
                  "ok": c.problem is None, "problem": c.problem} for c in candidates]
    return {"backend": "etcd", "cluster_id": cluster, "quorum": quorum, "leader": leader,
            "revision": revision,
            "db_size": max((r.get("db_size", 0) for r in rows), default=0) or None,
            "members": out_members, "endpoints": rows, "snapshots": snapshots,
            "max_snapshot_age": float(config.store.max_snapshot_age)}


# -- store recover --------------------------------------------------------------------

class StoreRecover:
    name = "store-recover"

    def __init__(self, config, from_snapshot=None, max_age=None, force=False, shell=None,
                 transports=None, clock=time.time):
        self.config, self.from_snapshot, self.force = config, from_snapshot, force
        self.max_age = float(config.store.max_snapshot_age if max_age is None else max_age)
        self.transports, self.clock = transports, clock
        self._shell = shell
        self.chosen = self.member = self.old_data_dir = None
        self.refused = []
        self.timings = {}     # step -> seconds, reported with the result
        self._mark = None

    def _lap(self, step):
        """Record the seconds since the previous lap as ``step``'s."""
        now = time.monotonic()
        if self._mark is not None:
            self.timings[step] = round(now - self._mark, 3)
        self._mark = now

    @property
    def shell(self):
        if self._shell is None:
            from sdcadm.transport.local import LocalShell

            self._shell = LocalShell()
        return self._shell

    def prepare(self, observer=None):
        """Decide; change nothing (a peer's snapshot is fetched into a scratch
        file of this headnode's restore data, removed if refused)."""
        config = self.config
        self._lap("start")
        if config.store.backend != "etcd":
            raise NotViable("this DC's store is a single sqlite file: there is no cluster to "
                            "recover (restore the file from a backup)",
                            hint="`store recover` rebuilds an etcd store on a lone headnode")
        self.member = member_of(config)
        if which("etcdctl") is None:
            raise NotViable("etcdctl is not installed; `store recover` restores the snapshot "
                            "with `etcdctl snapshot restore`",
                            hint="apt-get install etcd-client")
        notify(observer, Progress("store-recover", "checking whether the store has a quorum"))
        quorum_problem(health(config), self.force)
        cluster_id = self._local_cluster_id()
        self._lap("quorum_check")
        now = self.clock()
        if self.from_snapshot:
            candidates = [from_path_candidate(config, self.from_snapshot)]
        else:
            notify(observer, Progress("store-recover", "looking for snapshots on the headnodes"))
            heads = {s.hostname: s for s in known_headnodes(config)}
            candidates = gather_candidates(config, heads.values(), self.transports)
        chosen = choose_snapshot(candidates, now, self.max_age, self.force, cluster_id)
        self._lap("find_snapshots")
        if not chosen.local:
            peer = {s.hostname: s for s in known_headnodes(config)}[chosen.headnode]
            notify(observer, Progress("store-recover", f"fetching {chosen.headnode}'s snapshot"))
            fetched = fetch_peer_snapshot(config, chosen, peer, self.transports)
            if fetched.problem:
                # The newest failed its check: say so, and never fall back silently.
                raise NotViable(f"{chosen.headnode}'s snapshot (revision {chosen.revision}) "
                                f"is refused: {fetched.problem}",
                                hint="its other copies: `sdcadm store status`; name a good "
                                     "one with --from-snapshot PATH")
            chosen = fetched
            self._lap("fetch_snapshot")
        _, self.refused = usable([c for c in candidates if c is not chosen], cluster_id)
        self.chosen = chosen
        self.old_data_dir = f"{self.member['data_dir']}.pre-recover-{int(now)}"
        return True

    def _local_cluster_id(self):
        """The cluster this headnode's member belongs to (its own answer when it
        runs, else the cluster of this headnode's last snapshot), or None."""
        from sdcadm.store.etcd_maintenance import member_status

        try:
            return member_status(endpoint_of(self.member["client_url"]))["cluster_id"]
        except StoreError:
            pass
        local = local_candidate(self.config)
        return local.manifest["cluster_id"] if local.manifest else None

    def discard(self):
        """Remove a peer's snapshot fetched by ``prepare`` (dry run, declined, failed)."""
        if self.chosen is not None and self.chosen.path and \
                Path(self.chosen.path).name.startswith(".fetched-"):
            Path(self.chosen.path).unlink(missing_ok=True)

    def summarize(self):
        return summary_lines(self.chosen, self.clock(), self.member, self.old_data_dir,
                             self.refused) + [f"(this headnode's member as {self.member['source']} "
                                              "says)"]

    def plan(self):
        m = self.chosen.manifest
        return {"snapshot": {"headnode": self.chosen.headnode, "revision": m["revision"],
                             "age_s": round(self.clock() - m["taken"], 3),
                             "cluster_id": m["cluster_id"], "bytes": m["bytes"],
                             "path": self.chosen.path},
                "member": {k: self.member[k] for k in ("name", "peer_url", "client_url",
                                                       "data_dir", "source")},
                "old_data_dir": self.old_data_dir,
                "refused": [{"headnode": h, "reason": r} for h, r in self.refused]}

    def execute(self, observer=None):
        from sdcadm.store.etcd_maintenance import member_status

        started = time.monotonic()
        self._mark = started
        member, m = self.member, self.chosen.manifest
        client = endpoint_of(member["client_url"])
        notify(observer, Progress("store-recover", f"stopping the etcd member {member['name']}"))
        self.shell.run(member["stop_command"], timeout=STOP_WAIT + 30)
        self._wait(lambda: not _answers(client), STOP_WAIT,
                   f"the etcd member at {client} still answers after its stop command",
                   "stop it by hand (store.member.stop_command) and run this again")
        self._lap("stop_member")
        data_dir = Path(member["data_dir"])
        new_dir = Path(f"{data_dir}.recovering")
        if new_dir.exists():
            shutil.rmtree(new_dir)      # left by a recovery cut short: made again below
        notify(observer, Progress("store-recover", f"restoring revision {m['revision']} into "
                                                   f"a new one-member cluster"))
        token = f"sdcadm-recovered-{int(self.clock())}"
        self.shell.run([which("etcdctl"), "snapshot", "restore", self.chosen.path,
                        "--name", member["name"], "--data-dir", str(new_dir),
                        "--initial-cluster", f"{member['name']}={member['peer_url']}",
                        "--initial-advertise-peer-urls", member["peer_url"],
                        "--initial-cluster-token", token], timeout=600)
        if data_dir.exists():
            os.rename(data_dir, self.old_data_dir)
        os.rename(new_dir, data_dir)
        self._lap("restore_snapshot")
        notify(observer, Progress("store-recover", f"starting the etcd member {member['name']}"))
        self.shell.run(member["start_command"], timeout=START_WAIT)
        status = self._wait(lambda: _leading(client), START_WAIT,
                            f"the recovered etcd member at {client} did not come up with a "
                            "leader", f"see its log; its data directory is {data_dir}, the "
                                      f"one before is {self.old_data_dir}")
        self._lap("start_member")
        if status["revision"] < m["revision"]:
            raise StoreError(f"the recovered member answers at revision {status['revision']}, "
                             f"below the snapshot's {m['revision']}",
                             hint=f"its data directory is {data_dir}; the one before is "
                                  f"{self.old_data_dir}")
        config_file = self._point_config_at(client)
        from sdcadm.store.etcd_maintenance import members

        count = len(members(client))
        self._check_store(client)
        fetched = Path(self.chosen.path)
        if fetched.name.startswith(".fetched-"):
            fetched.unlink(missing_ok=True)
        after = member_status(client)
        self._lap("verify")
        return {"timings": dict(self.timings),"revision": m["revision"], "revision_now": after["revision"],
                "cluster_id": after["cluster_id"], "members": count,
                "snapshot_headnode": self.chosen.headnode,
                "snapshot_age_s": round(self.clock() - m["taken"], 3),
                "old_data_dir": self.old_data_dir, "config": config_file,
                "elapsed_s": round(time.monotonic() - started, 3)}

    def _wait(self, predicate, timeout, message, hint):
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            if time.monotonic() > deadline:
                raise StoreError(message, hint=hint)
            time.sleep(0.2)

    def _point_config_at(self, client):
        """store.etcd_endpoints of this headnode's config file: the recovered member only."""
        import yaml

        from sdcadm.config import safe_yaml

        path = self.config.path
        if not path or not Path(str(path)).is_file():
            return None
        path = Path(str(path))
        mode = os.stat(path).st_mode & 0o777      # atomic writes make 0600 files
        raw = path.read_bytes()
        doc = safe_yaml(raw.decode()) or {}
        store = doc.setdefault("store", {})
        if store.get("etcd_endpoints") == [client]:
            return str(path)
        backup = path.with_name(path.name + ".pre-recover")
        if not backup.exists():
            write_bytes_atomic(backup, raw)
            os.chmod(backup, mode)
        store["etcd_endpoints"] = [client]
        write_bytes_atomic(path, yaml.safe_dump(doc, sort_keys=False).encode())
        os.chmod(path, mode)
        return str(path)

    def _check_store(self, client):
        from sdcadm.config import config_from
        from sdcadm.store import store_for

        doc = {"store": {"backend": "etcd", "etcd_endpoints": [client],
                         "etcd_prefix": self.config.store.etcd_prefix,
                         "timeout": self.config.store.timeout}}
        with store_for(config_from(doc, "the recovered store")).open() as store:
            store.revision()

    def report(self, result):
        return [f"the DC store answers again on {self.member['name']} ({result['members']} "
                f"member, cluster {result['cluster_id']}) at revision {result['revision']} "
                f"(from {result['snapshot_headnode']}'s snapshot, "
                f"{age_text(result['snapshot_age_s'])} old)",
                f"the old data directory is kept as {result['old_data_dir']}",
                "before powering the lost headnodes on again, remove their etcd data "
                "directories: they belong to the old cluster (docs/store.md)"]


def _answers(endpoint):
    from sdcadm.store.etcd_maintenance import member_status

    try:
        member_status(endpoint, timeout=1.0)
        return True
    except StoreError:
        return False


def _leading(endpoint):
    from sdcadm.store.etcd_maintenance import healthy, member_status

    if not healthy(endpoint, timeout=1.0):
        return None
    try:
        st = member_status(endpoint, timeout=1.0)
    except StoreError:
        return None
    return st if st["leader"] else None

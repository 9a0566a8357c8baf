"""``sdcadm server headnode-setup SERVER...``: make set-up servers secondary headnodes.

RFD 67's "Setting up secondary headnodes" and "What does it mean to be a
headnode?". Viability first (``planning/headnode_plan.py``), then, every step
idempotent (a re-run resumes the unfinished Task):

1. build the headnode bundle (``usbkey-base.tgz``) of this headnode's usbkey
   directory (``sdcadm/usbkey/bundle.py``);
2. send it to each server over SSH (``ssh.*``: host keys checked against
   known_hosts, never accepted blindly), and check its sha256 there
   (``transport/push.py``);
3. seed each server's usbkey directory from it with the safe seed, run there
   (``sdcadm usbkey seed``: every member checked, swapped in atomically);
4. start each server's etcd member, joining the store's cluster (etcd
   store only; ``procedures/store_member.py``): ``member add`` through the
   cluster's API, then ``sdcadm store start-member`` run on that server over
   SSH (``--initial-cluster-state existing``, its data directory on its own
   disk), waited for until it answers with a leader and the cluster lists it
   started. Refused before anything changes while a member of the cluster
   does not answer (etcd refuses a new member then): a lost headnode's
   member goes first, with ``server delete``. Clients learn the new member
   from the cluster's member list (``store/etcd_client.py``);
5. mark each server a headnode: its agent sees that on its next restore-data
   cycle and starts pulling (the puller runs on headnodes only);
6. reserve one recovery admin address per single-instance service (RFD 67
   M0), saying so when the admin network cannot hold them all;
7. run a first restore-data sync on the new headnodes (all at once) and
   verify that a good copy of every instance each must hold arrived (the DC store's restore-data
   statuses).

The new headnode's own configuration is not rewritten: its agent reaches
the store through the endpoints it has (and those it learns); `store
start-member --record` leaves what `store recover` there needs in
``var/sdcadm/etcd-member.json`` of its root (docs/store.md). A restore
does not use the recovery addresses: it restores only from a fenced
server, whose instances keep their own addresses.

Paths on the server are its root as the restore-data puller reaches it
(``restore_data.source_root_template``: ``/`` on real servers) joined with
the same ``usbkey_dir``; ``sdcadm`` there is the one installed at this
sdcadm's path (every server runs sdcadm-agent from the same package).
"""

import dataclasses
import json
import socket
from pathlib import Path

from sdcadm import sdcadm_program
from sdcadm.errors import NotFound, SdcadmError
from sdcadm.fsutil import sha256_file
from sdcadm.model import ADMIN_NETWORK
from sdcadm.procedures import store_member
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.headnode_plan import plan_headnode_setup, plan_reservations, \
    reservation_lines, single_instance_services
from sdcadm.procedures.server_setup import ask_agent
from sdcadm.procedures.waits import wait_for

DEFAULT_TIMEOUT = 300.0
SEND_TIMEOUT = 600.0


class HeadnodeSetupFailed(SdcadmError):
    """A step of headnode-setup could not be carried out."""


class HeadnodeSetup(Procedure):
    name = "headnode-setup"

    def __init__(self, refs, many=False, timeout=DEFAULT_TIMEOUT, transports=None):
        self.refs = tuple(dict.fromkeys(refs))
        self.many, self.timeout = many, timeout
        self._transports = transports   # host -> transport (tests); default: ssh.* config
        self.plan = None
        self.bundle = None

    def key(self):
        return " ".join(self.refs)

    # -- viability -----------------------------------------------------------------
    def prepare(self, ctx):
        store = ctx.store
        asked, unknown = {}, []
        for ref in self.refs:
            try:
                server = store.find_server(ref)
                asked.setdefault(server.uuid, server)  # named twice (name and UUID): once
            except NotFound as e:
                unknown.append(f"{e.message} ({e.hint})" if e.hint else e.message)
        if unknown:
            raise NotViable("cannot make them headnodes:\n  - " + "\n  - ".join(unknown),
                            hint="name servers as `sdcadm server ls` shows them")
        asked = list(asked.values())
        ctx.agents.check()
        answers = {s.uuid: ask_agent(ctx, s, "status") for s in asked}
        pullers = {s.uuid: ask_agent(ctx, s, "restore_data") for s in asked}
        servers = store.list_servers()
        self.plan = plan_headnode_setup(
            asked, servers, store.list_instances(), answers, set(ctx.catalog.services),
            now=ctx.now(), heartbeat_timeout=ctx.config.agent.heartbeat_timeout,
            resuming=ctx.previous_task is not None, many=self.many, pullers=pullers)
        self._check_usbkey(ctx)
        self._joins = {}
        if store_member.etcd_store(ctx.config):
            self._joins = {j.name: j for j in store_member.joins_for(ctx.config,
                                                                    self.plan.servers)}
        self._prepared_at = ctx.now()
        self._singles = single_instance_services(store.list_services(), ctx.catalog.services)
        try:
            self._network = store.get_network(ADMIN_NETWORK)
        except NotFound:
            raise NotViable("the DC store has no admin network",
                            hint="create the DC first: sdcadm dc init") from None
        return True

    def _check_usbkey(self, ctx):
        self.usbkey = Path(ctx.config.under_root(ctx.config.usbkey_dir))
        if not self.usbkey.is_dir():
            raise NotViable(f"this headnode has no usbkey directory ({self.usbkey}): there is "
                            "nothing to make a headnode bundle of",
                            hint="run headnode-setup on a headnode that has one (usbkey_dir "
                                 "in the configuration)")
        self.bundle = Path(ctx.config.under_root("/var/sdcadm/usbkey-base.tgz"))

    def summarize(self):
        lines = [f"build the headnode bundle of {self.usbkey}"]
        for s in self.plan.servers:
            lines.append(f"make {s.hostname} ({s.admin_ip}) a headnode: send the bundle over "
                         "SSH, seed its usbkey, mark it a headnode, pull restore data there")
        lines += reservation_lines(self._network, self._singles, self._prepared_at)
        for j in self._joins.values():
            lines.append(f"{j.name}'s etcd member: " + (
                "already in the store's cluster" if j.existing else
                f"add it to the store's cluster ({j.peer_url}) and start it there"))
        lines.append(f"the DC will have {self.plan.headnodes_after} headnodes")
        return lines + list(self.plan.warnings)

    def steps(self):
        steps = [Step("build the headnode bundle", self._build)]
        for s in self.plan.servers:
            steps.append(Step(f"send the bundle to {s.hostname}", self._send(s)))
            steps.append(Step(f"seed {s.hostname}'s usbkey", self._seed(s)))
            if s.hostname in self._joins:
                steps.append(Step(f"start {s.hostname}'s etcd member", self._member(s)))
            steps.append(Step(f"mark {s.hostname} a headnode", self._mark(s)))
        steps.append(Step("reserve recovery addresses", self._reserve))
        hosts = ", ".join(s.hostname for s in self.plan.servers)
        steps.append(Step(f"first restore-data sync on {hosts}", self._sync))
        for s in self.plan.servers:
            steps.append(Step(f"verify the restore data on {s.hostname}", self._verify(s)))
        return steps

    # -- steps -----------------------------------------------------------------------
    def _transport(self, ctx, server):
        if self._transports is not None:
            return self._transports(server.admin_ip)
        from sdcadm.restore_data.peer_copy import ssh_transport

        return ssh_transport(ctx.config, server.admin_ip)

    def _remote_paths(self, ctx, server):
        from sdcadm.restore_data.sources import source_root

        root = Path(source_root(ctx.config, server))
        return (root / "var" / "sdcadm" / self.bundle.name,
                root / ctx.config.usbkey_dir.lstrip("/"))

    def _build(self, ctx):
        from sdcadm.usbkey.bundle import build

        self.bundle.parent.mkdir(parents=True, exist_ok=True)
        manifest, left_out = build(self.usbkey, self.bundle,
                                   source=ctx.config.hostname or socket.gethostname())
        ctx.progress(f"built {self.bundle}: {len(manifest['files'])} file(s)")
        return {"bundle": str(self.bundle), "files": len(manifest["files"]),
                "sha256": sha256_file(self.bundle), "left_out": left_out}

    def _send(self, server):
        def send(ctx):
            from sdcadm.transport.push import push_file

            remote, _ = self._remote_paths(ctx, server)
            want = sha256_file(self.bundle)
            with self._transport(ctx, server) as t:
                # mode 0600 before a byte is written: the bundle holds the DC's secrets
                sent = push_file(t, self.bundle, remote, want, mode="600", timeout=SEND_TIMEOUT)
            ctx.progress(f"sent {sent} bytes to {server.hostname}")
            return {"path": str(remote), "sha256": want}

        return send

    def _seed(self, server):
        def seed(ctx):
            remote, usbkey = self._remote_paths(ctx, server)
            with self._transport(ctx, server) as t:
                out = t.run([sdcadm_program(), "usbkey", "seed", str(remote), "--dir", str(usbkey),
                             "-y", "-j"], timeout=SEND_TIMEOUT).stdout
            try:
                files = len(json.loads(out)["manifest"]["files"])
            except (ValueError, KeyError, TypeError):
                raise HeadnodeSetupFailed(f"`sdcadm usbkey seed` on {server.hostname} answered "
                                          f"{out[:200]!r}", hint="check sdcadm there") from None
            ctx.progress(f"seeded {server.hostname}:{usbkey} ({files} file(s))")
            return {"dir": str(usbkey), "files": files}

        return seed

    def _member(self, server):
        def member(ctx):
            join = self._joins[server.hostname]
            members, added = store_member.add(ctx.config, join, ctx.progress)
            from sdcadm.restore_data.sources import source_root

            with self._transport(ctx, server) as t:
                started = store_member.start_remote(t, sdcadm_program(), ctx.config,
                                                    source_root(ctx.config, server), join,
                                                    members)
            members = store_member.wait_started(ctx.config, join, self.timeout)
            ctx.progress(f"{server.hostname}'s etcd member answers; the cluster has "
                         f"{len(members)} members")
            return {"added": added, "pid": started.get("pid"),
                    "members": sorted(m["name"] for m in members)}

        return member

    def _mark(self, server):
        def mark(ctx):
            current = ctx.store.get_server(server.uuid)
            if not current.headnode:
                ctx.store.put_server(dataclasses.replace(current, headnode=True))
            held = ctx.agents.client(current.agent_url).restore_data()
            if not (isinstance(held, dict) and held.get("enabled")):
                raise HeadnodeSetupFailed(
                    f"{server.hostname}'s agent does not pull restore data "
                    "(restore_data.enabled is false there)",
                    hint="set restore_data.enabled: true in its configuration, restart its "
                         "agent and run the same command again")
            ctx.progress(f"{server.hostname} is a headnode")
            return {"headnode": True}

        return mark

    def _reserve(self, ctx):
        from sdcadm.procedures.dc_init import add_reservations

        short = []

        def decide(network):
            add, short[:] = plan_reservations(network, self._singles, ctx.store.now())
            return add

        add = add_reservations(ctx.store, decide, failure=HeadnodeSetupFailed)
        if short:
            ctx.progress(f"no room on the admin network for a recovery address of "
                         f"{', '.join(short)}")
        return {"reserved": sorted(add), "no_room": short}

    def _sync(self, ctx):
        """The first restore-data sync, on every new headnode at once."""
        from sdcadm.restore_data.client import sync_headnodes
        from sdcadm.restore_data.events import ServiceResult

        def shown(host, event):
            if isinstance(event, ServiceResult):
                ctx.progress(f"{host}: {event.service} {event.status}")

        current = [ctx.store.get_server(s.uuid) for s in self.plan.servers]
        results = sync_headnodes(current, ctx.agents.token, observer=shown)
        failed = [r for r in results if not r.ok]
        if failed:
            raise HeadnodeSetupFailed(
                f"the first restore-data sync on {', '.join(r.hostname for r in failed)} "
                "failed: " + "; ".join(text for r in failed for _, text in r.problems),
                hint="see its agent log; then run the same command again (or `sdcadm "
                     "service sync-restore-data` and `sdcadm restore-data ls`)")
        return {r.hostname: sorted(r.services) for r in results}

    def _verify(self, server):
        def verify(ctx):
            from sdcadm.restore_data.plan import plan_pulls

            store = ctx.store
            pulls = plan_pulls(server.uuid, store.list_servers(), store.list_services(),
                               store.list_instances(), ctx.catalog.services, now=ctx.now(),
                               heartbeat_timeout=ctx.config.agent.heartbeat_timeout)
            want = {item.instance.uuid: item.instance.alias
                    for items in pulls.values() for item in items if item.reachable}

            def missing():
                ok = {r.instance for r in store.list_restore_status(receiver=server.uuid)
                      if r.status == "ok" and r.last_success}
                return sorted(alias for uuid, alias in want.items() if uuid not in ok)

            wait_for(lambda: not missing(), self.timeout,
                     f"restore data of {', '.join(missing()) or 'every instance'} on "
                     f"{server.hostname}")
            ctx.progress(f"{server.hostname} holds good copies of {len(want)} instance(s)")
            return {"instances": len(want)}

        return verify

    def report(self, results):
        hosts = ", ".join(s.hostname for s in self.plan.servers)
        lines = [f"{hosts}: headnode(s) now (flag H in `sdcadm server ls`), pulling restore data"]
        if self._joins:
            lines.append(f"{hosts}: etcd member(s) of the store's cluster")
        return lines

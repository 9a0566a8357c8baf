"""The agent: heartbeat, instance supervisor and HTTP API, wired together.

``Agent.from_config(config)`` checks everything that can be checked before
starting (server UUID, token file, intervals, that the API port can be
bound) and raises ConfigError or AgentError with the fix; ``run()`` then
serves until SIGTERM/SIGINT and returns 0, leaving instances running.
"""

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from sdcadm import __version__
from sdcadm.agent.api import make_server
from sdcadm.agent.cache import StateCache
from sdcadm.agent.connection import StoreHandle, beat_timeout, with_store_timeout
from sdcadm.agent.delegate_datasets import for_config as datasets_for_config
from sdcadm.agent.heartbeat import Heartbeat
from sdcadm.agent.image_fetch import PeerImages
from sdcadm.agent.listing import Listings
from sdcadm.agent.metrics import AgentMetrics
from sdcadm.agent.provision import Layout
from sdcadm.agent.register import Registration
from sdcadm.agent.seed import Seeder
from sdcadm.agent.supervisor import Supervisor
from sdcadm.agent.watch import AssignmentWatcher
from sdcadm.config import read_restore_key, read_token, shown
from sdcadm.errors import AgentError, ConfigError, StoreError
from sdcadm.images import MAX_UNPACKED
from sdcadm.uuids import is_uuid

log = logging.getLogger(__name__)


def check_config(config):
    """Problems the generic configuration check cannot know about (numbers
    are range-checked by ``load_config``)."""
    problems = []
    if not config.server_uuid:
        problems.append("key 'server_uuid' is required by the agent (this server's UUID)")
    elif not is_uuid(config.server_uuid):
        problems.append(f"key 'server_uuid' must be a lower-case UUID, got {shown(config.server_uuid)}")
    if problems:
        raise ConfigError(config.path, problems)


def cache_path(config):
    """agent.cache_file as given, or <root>/var/sdcadm/agent-cache.json."""
    return config.agent.cache_file or config.under_root("/var/sdcadm/agent-cache.json")


class Agent:
    def __init__(self, config, token):
        self.config = config
        self.me = config.server_uuid
        self.hostname = config.hostname or socket.gethostname()
        self.started = time.time()
        self.metrics = AgentMetrics()
        self.stores = StoreHandle(config)
        # The heartbeat has a connection of its own, its waits bounded by the lease
        beat_config = with_store_timeout(config, beat_timeout(config.store.timeout,
                                                              config.agent.heartbeat_timeout))
        self.heartbeat = Heartbeat(self.me, StoreHandle(beat_config),
                                   config.agent.heartbeat_interval, self.metrics)
        layout = self.layout = Layout(os.path.abspath(config.root))
        datasets = datasets_for_config(config)
        # Every server can seed from its own restore data; only headnodes hold any,
        # so elsewhere a seeded instance fails with "no restore data of ...".
        self.supervisor = Supervisor(
            self.me, layout, self.image_sources(), self.stores,
            StateCache(cache_path(config)), self.metrics,
            lease=config.agent.heartbeat_timeout, instance_port=config.agent.instance_port,
            seeder=Seeder(config, layout, datasets.dataset_name),
            singletons=_singletons(config), datasets=datasets,
            max_image_bytes=config.agent.max_image_bytes,
            stop_timeout=config.agent.stop_timeout, lease_stop_lead=config.agent.heartbeat_timeout * config.agent.lease_stop_fraction,
            beat_started=lambda: self.heartbeat.ok_started,
            fetch_image=PeerImages(self.me, self.stores, token, config.agent.heartbeat_timeout,
                                   config.agent.max_image_bytes or MAX_UNPACKED).fetch)
        self.heartbeat.after_beat = self.supervisor.confirm_leases
        self.registration = Registration(config, self.stores, self.hostname,
                                         config.agent.heartbeat_interval)
        from sdcadm.restore_data.scheduler import RestoreDataScheduler

        self.restore_data = RestoreDataScheduler(config, self.stores, self.metrics)
        self.watcher = AssignmentWatcher(self.me, self.stores, self.supervisor.wake)
        self.listings = Listings(self.stores)
        try:
            self.api = make_server(config.agent.listen, config.agent.port, self, token)
        except OSError as e:
            raise AgentError(f"cannot listen on {config.agent.listen}:{config.agent.port}: "
                             f"{e.strerror or e}",
                             hint="is another agent running? check agent.listen and agent.port") from None
        self._stop = threading.Event()
        self._threads = []

    @classmethod
    def from_config(cls, config):
        check_config(config)
        token = read_token(config.agent.token_file, config.path)
        # Refused at start, not at the first sync or restore: every manifest this
        # agent writes or reads (seeding) is signed with it.
        read_restore_key(config.restore_data.key_file, config.path)
        cls._check_store(config)
        return cls(config, token)

    @staticmethod
    def _check_store(config):
        """A store that cannot be opened *now* is fine (we retry); one that can
        never be opened (unknown backend) is a configuration error."""
        from sdcadm.store import open_store, sqlite_shared_by

        try:
            store = open_store(config)
        except StoreError:
            return
        try:
            others = sqlite_shared_by(config, store.list_servers())
        except StoreError:
            others = []
        finally:
            store.close()
        if others:
            names = ", ".join(sorted(s.hostname for s in others))
            raise ConfigError(config.path, [
                f"store.backend is sqlite ({config.store.path}) and the agent of {names} "
                f"already uses it: a DC of more than one server cannot share one sqlite file"],
                hint="keep the DC store in etcd (store.backend: etcd, store.etcd_endpoints: "
                     "one member per headnode); sqlite is the store of a one-server DC")

    # -- what the API asks -----------------------------------------------------------
    def ping(self):
        return {"ok": True, "server_uuid": self.me, "hostname": self.hostname}

    def status(self):
        counts = {}
        for row in self.supervisor.instances():
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        server = self.supervisor.server
        return {
            "server_uuid": self.me,
            "hostname": self.hostname,
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "last_heartbeat": self.heartbeat.last_ok,
            "store_reachable": self.heartbeat.reachable and self.supervisor.store_ok,
            "store_error": self.heartbeat.last_error or self.supervisor.last_error,
            "ownership_confirmed": self.supervisor.may_start(time.time()),
            "fenced": bool(server and server.fenced),
            "setup": bool(server and server.setup),
            "registration": self.registration.state,
            "reconcile_passes": self.supervisor.passes,
            "instances": counts,
        }

    def instances(self):
        return self.supervisor.instances()

    def restart(self, uuid):
        return self.supervisor.request_restart(uuid)

    def image_sources(self):
        """Where this server finds images without asking another: its image
        source, then (a headnode) the images of its usbkey directory."""
        return [Path(self.config.image_source),
                Path(self.config.under_root(self.config.usbkey_dir)) / "images"]

    def image_file(self, uuid):
        """The path of image ``uuid``'s file on this server (what it imported,
        or what it installed to run), for another server to fetch; None."""
        for directory in (*self.image_sources(), self.layout.images):
            path = directory / f"{uuid}.file"
            if path.is_file():
                return path
        return None

    def stage(self, instances):
        self.supervisor.request_stage(instances)

    def reconcile_now(self):
        self.supervisor.wake.set()

    def restore_data_held(self):
        runner = self.restore_data
        last = runner.last_summary
        return {"server_uuid": self.me, "hostname": self.hostname,
                "headnode": runner.is_headnode(), "enabled": self.config.restore_data.enabled,
                "dir": str(runner.layout.root), "cycles": runner.cycles,
                "last_sync": last.to_dict() if last else None, "holdings": runner.holdings()}

    # -- life cycle ------------------------------------------------------------------------
    def start(self):
        self.supervisor.load()
        agent = self.config.agent
        for name, target, args in (
            ("register", self.registration.run, (self._stop,)),  # until the store knows us
            ("heartbeat", self.heartbeat.run, (self._stop,)),
            ("supervisor", self.supervisor.run, (self._stop, agent.reconcile_interval)),
            ("lease-keeper", self.supervisor.leases.run, (self._stop,)),
            ("watch", self.watcher.run, (self._stop,)),
            ("api", self.api.serve_forever, (0.2,)),
            ("restore-data", self.restore_data.run, (self._stop,)),
        ):
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("agent %s (%s) serving on http://%s:%d", self.me, self.hostname, agent.listen,
                 agent.port, extra={"event": "started", "pid": os.getpid()})

    def stop(self):
        """Stop serving and supervising; instances keep running."""
        self._stop.set()
        self.watcher.cancel()
        self.listings.stop()
        self.supervisor.wake.set()
        self.api.shutdown()
        self.api.server_close()
        for thread in self._threads:
            thread.join(timeout=30)
        log.info("agent stopped; instances left running", extra={"event": "stopped"})

    def run(self):
        """Serve until SIGTERM or SIGINT; return the exit status (0)."""
        done = threading.Event()

        def on_signal(signum, _frame):
            log.info("received %s, stopping", signal.Signals(signum).name,
                     extra={"event": "signal"})
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not done.wait(1.0):
            pass
        self.stop()
        return 0


def _singletons(config):
    """Services that must never run twice (catalog ``singleton``)."""
    from sdcadm.catalog import load_catalog

    catalog = load_catalog(config.catalog)
    return frozenset(n for n in catalog.names() if catalog.get(n).singleton)

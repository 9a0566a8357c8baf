"""Where `server ls`, `insts` and `svcs` read their listings.

On an etcd store, from this server's agent (``GET /v1/listing/*``, a cache kept
current by an etcd watch: agent/listing.py): 50,000 instances through the
gateway take seconds to fetch and decode, the agent's memory a fraction of
one, and this process then neither imports the etcd client nor opens the
store. The agent reads the store's revision when the request comes and
answers only once its cache holds it, so nothing the operator just wrote is
missing. When the agent cannot answer (not running, not this
server's, the cache not ready in time, an answer that does not parse), the
listing reads the store itself: slower, never different. On sqlite, always
the store.

The configuration's ``listing`` (``SDCADM_LISTING``): ``auto`` (default),
``store`` (never ask the agent), or ``agent`` (never fall back: an agent that
cannot answer is the error).
"""

import logging
import time

from sdcadm.errors import SdcadmError, UsageError
from sdcadm.model import Server

log = logging.getLogger(__name__)

# A first listing makes the agent read the whole store (seconds at 50,000
# instances); it waits up to 10 s for that (agent/listing.py WAIT).
TIMEOUT = 15.0


def agent_url(config):
    """This server's agent, as configured (a wildcard listen address is reached
    on loopback)."""
    host = config.agent.listen
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.agent.port}"


class Listing:
    """The listing reads of the invocation's store; anything else goes to the
    store, opened on first use (``opener``)."""

    def __init__(self, opener, client, mode="auto", clock=time.time):
        self.opener, self.client, self.mode, self.clock = opener, client, mode, clock
        self._servers = None

    @property
    def store(self):
        return self.opener()

    def __getattr__(self, name):
        return getattr(self.opener(), name)

    def _ask(self, path, check):
        """The agent's checked answer to ``path``, or None (read the store)."""
        if self.client is None:
            return None
        try:
            return check(self.client.listing(path))
        except (SdcadmError, TypeError, KeyError, ValueError, AttributeError) as e:
            if self.mode == "agent":
                raise SdcadmError(f"the agent's listing at {self.client.url} failed: {e}",
                                  hint="set listing: auto (or unset SDCADM_LISTING) to read the store "
                                       "when the agent cannot answer") from None
            log.info("listing from the store itself: the agent's cache did not answer (%s)", e)
            self.client = None   # one try per process: do not pay a timeout twice
            return None

    def _agent_servers(self):
        """The servers as the agent lists them (kept for the process), or None."""
        if self._servers is None:
            now = self.clock()

            def check(doc):
                return [Server.from_dict({**d["server"], "last_heartbeat":
                                          now if d["alive"] is True else 0.0})
                        for d in doc["servers"]]

            self._servers = self._ask("/v1/listing/servers", check)
        return self._servers

    def list_servers(self):
        if self._agent_servers() is None:
            self._servers = self.store.list_servers()
        return self._servers

    def hostnames(self, of_instances=False):
        """{server uuid: hostname}: from the agent's server listing when it
        answers, else from the store's own query (two columns, not a Server
        per server: 0.35 s at 100,000 servers; ``of_instances``: only the
        servers some instance is on)."""
        servers = self._agent_servers()
        if servers is not None:
            return {s.uuid: s.hostname for s in servers}
        return self.store.hostnames(of_instances=of_instances)

    def instance_columns(self, fields, service=None, server_uuid=None):
        fields = list(dict.fromkeys(fields))
        query = "fields=" + ",".join(fields)
        if service is not None:
            from urllib.parse import quote

            query += "&service=" + quote(service, safe="")
        if server_uuid is not None:
            query += "&server_uuid=" + server_uuid

        def check(doc):
            columns = {name: doc["columns"][name] for name in fields}
            if any(not isinstance(c, list) for c in columns.values()) \
                    or len({len(c) for c in columns.values()}) > 1:
                raise ValueError("columns of different lengths")
            return columns

        columns = self._ask(f"/v1/listing/instances?{query}", check)
        if columns is None:
            columns = self.store.instance_columns(fields, service=service,
                                                  server_uuid=server_uuid)
        return columns


def listing_for(state):
    """The ``Listing`` of the invocation's store (its agent asked only on etcd)."""
    backend, mode = state.config.store.backend, state.config.listing
    client = None
    if backend == "etcd" and mode != "store":
        from sdcadm.config import read_token
        from sdcadm.procedures.agent_client import AgentClient

        try:
            token = read_token(state.config.agent.token_file, state.config.path)
            client = AgentClient(agent_url(state.config), token, timeout=TIMEOUT)
        except SdcadmError as e:
            if mode == "agent":
                raise
            log.info("listing from the store itself: %s", e)
    elif mode == "agent":
        raise UsageError(f"listing is agent, but the DC store is {backend}: its "
                         "listings are read from the store",
                         hint="set listing: auto (or unset SDCADM_LISTING)")
    return Listing(lambda: state.store, client, mode)

"""The DC model: plain dataclasses, no I/O.

Every record converts to and from a JSON-able dict (``to_dict`` /
``from_dict``); the JSON Schemas in ``sdcadm/schemas/`` describe those dicts.
"""

from dataclasses import asdict, dataclass, field, fields
from functools import cache

SERVER_RUNNING = "running"
SERVER_UNREACHABLE = "unreachable"

INSTANCE_STATES = ("provisioning", "running", "stopped", "failed", "destroyed")
TASK_STATES = ("queued", "running", "succeeded", "failed")
RESTORE_STATUSES = ("ok", "failed", "diverged", "unreachable")

# The network every server and core-service instance has its address on: the
# lab creates it, restore and migrate allocate and release addresses in it.
ADMIN_NETWORK = "admin"


class Record:
    """A JSON-able dataclass: ``from_dict`` ignores unknown keys, ``to_dict`` is asdict."""

    @classmethod
    def from_dict(cls, data):
        names = _field_names(cls)
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self):
        return asdict(self)


@cache
def _field_names(cls):
    """A record class's field names (``fields()`` builds them again on every
    call: 10,000 servers listed paid for it 10,000 times)."""
    return frozenset(f.name for f in fields(cls))


@dataclass
class Server(Record):
    uuid: str
    hostname: str
    admin_ip: str
    headnode: bool = False
    setup: bool = True
    boot_platform: str = ""
    current_platform: str = ""
    last_heartbeat: float = 0.0
    fenced: bool = False
    agent_port: int = 0
    # Bumped by every write of the record but heartbeats: set_fenced is a
    # compare-and-swap on it.
    generation: int = 1

    @property
    def agent_url(self):
        return f"http://{self.admin_ip}:{self.agent_port}" if self.agent_port else None


@dataclass
class Service(Record):
    name: str
    image: str = ""          # image uuid
    params: dict = field(default_factory=dict)


@dataclass
class Instance(Record):
    uuid: str
    alias: str
    service: str
    server_uuid: str
    image: str
    admin_ip: str
    port: int = 0
    generation: int = 1
    delegate_dataset: bool = False
    state: str = "provisioning"
    params: dict = field(default_factory=dict)

    @property
    def url(self):
        return instance_url(self.admin_ip, self.port)


def instance_url(admin_ip, port):
    """Where an instance answers (its health check is ``<url>/ping``)."""
    return f"http://{admin_ip}:{port}"


@dataclass
class Image(Record):
    uuid: str
    name: str
    version: str
    sha256: str
    size: int = 0
    origin: str | None = None


@dataclass
class Network(Record):
    name: str
    cidr: str
    # ip -> owner uuid (a server or an instance)
    allocations: dict = field(default_factory=dict)
    # ip -> reason, never handed out by allocate
    reservations: dict = field(default_factory=dict)
    # Bumped by every write (allocations included): put_network is a
    # compare-and-swap on it, so a stale copy cannot drop an allocation.
    revision: int = 0
    # ip -> {"owner", "until"}: released addresses nobody else may take before
    # "until" (store time), so that a client still pointing there never
    # reaches another service a second later.
    quarantine: dict = field(default_factory=dict)


@dataclass
class Task(Record):
    uuid: str
    name: str
    state: str = "queued"
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    steps: list = field(default_factory=list)
    error: str | None = None


@dataclass
class RestoreStatus(Record):
    """What one receiving headnode can restore of one instance, and as of when
    (kept in the store so `sdcadm status` and `restore-data ls` can tell from
    any headnode)."""

    receiver: str              # server UUID of the headnode holding the copy
    service: str
    instance: str              # instance UUID
    alias: str = ""
    source: str | None = None  # server UUID the instance lived on when pulled
    snapshot: str | None = None
    guid: str | None = None
    bytes: int = 0             # size of the current copy of the delegate dataset
    duration: float = 0.0      # seconds the last attempt took
    last_success: float | None = None
    last_attempt: float = 0.0
    status: str = "ok"         # one of RESTORE_STATUSES
    error: str | None = None
    vanished: int = 0          # files that vanished from the live source during the last
                               # attempt: a warning (the copy was kept), not a failure


def heartbeat_seen(server, now):
    """When ``server`` was last heard of, in words for messages."""
    if server.last_heartbeat:
        return f"last heartbeat {now - server.last_heartbeat:.0f}s ago"
    # sqlite: none yet; etcd: also once its heartbeat lease ran out.
    return "no live heartbeat: none sent yet, or its heartbeat lease ran out"


def status_of(server, now, timeout):
    """A server is running while its last heartbeat is younger than ``timeout``."""
    if server.last_heartbeat and now - server.last_heartbeat <= timeout:
        return SERVER_RUNNING
    return SERVER_UNREACHABLE


def server_flags(server, primary_uuid=None):
    """The FLAGS column: S setup, H headnode, P primary, B boot!=current, F fenced."""
    flags = ""
    flags += "S" if server.setup else "-"
    flags += "H" if server.headnode else "-"
    flags += "P" if primary_uuid and server.uuid == primary_uuid else "-"
    mismatch = server.boot_platform and server.boot_platform != server.current_platform
    flags += "B" if mismatch else "-"
    flags += "F" if server.fenced else "-"
    return flags

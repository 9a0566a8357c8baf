"""The agent's restore-data endpoints, kept out of the generic HTTP plumbing.

``parse_sync_request`` checks a ``POST /v1/restore-data/sync`` before anything
runs (bad JSON or fields: 400; unknown service: 400 with the known ones; not a
headnode: 409; store unreachable: 503), so a rejected request starts no sync.
``stream_sync`` runs the sync and writes every event as one JSON line as it
happens; a client that goes away does not stop the sync.
"""

import json
import logging
import threading

from sdcadm.errors import RequestError, StoreError
from sdcadm.restore_data.events import SyncSummary

log = logging.getLogger(__name__)


def parse_sync_request(body, agent):
    """(services or None, reseed) from the request body; RequestError otherwise."""
    from sdcadm.schemas import problems

    try:
        doc = json.loads(body) if body.strip() else {}
    except RecursionError:
        raise RequestError(400, "bad-request", "the request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "bad-request", f"the request body is not JSON: {e}") from None
    found = problems("restore_sync_request", doc)
    if found:
        raise RequestError(400, "bad-request", "invalid request: " + "; ".join(found)
                        + ' (expected {"services": ["name", ...], "reseed": false}, both optional)')
    runner = agent.restore_data
    services = doc.get("services")
    try:
        if services:
            known = runner.known_services()
            unknown = [s for s in services if s not in known]
            if unknown:
                raise RequestError(400, "unknown-service",
                                f"unknown service {', '.join(map(repr, unknown))}; known services: "
                                + ", ".join(known))
        if not runner.is_headnode():
            raise RequestError(409, "not-a-headnode",
                            f"{agent.hostname} is not a headnode: only headnodes keep restore data")
    except StoreError as e:
        raise RequestError(503, "store-unreachable", f"the DC store cannot be read: {e}") from None
    return services or None, bool(doc.get("reseed", False))


def stream_sync(agent, services, reseed, wfile):
    """Run an on-demand sync, writing its events to ``wfile`` as NDJSON."""
    lock = threading.Lock()
    gone = threading.Event()

    def emit(event):
        if gone.is_set():
            return
        line = (json.dumps(event.to_dict(), sort_keys=True, default=str) + "\n").encode()
        with lock:
            try:
                wfile.write(line)
                wfile.flush()
            except OSError:
                gone.set()   # the client left; the sync goes on and is recorded

    try:
        agent.restore_data.sync_now(services, reseed, emit)
    except Exception as e:  # noqa: BLE001 - the stream must end with a summary
        log.exception("restore-data sync crashed", extra={"event": "restore-data-crash"})
        emit(SyncSummary(agent.me, agent.hostname, False, error=f"internal error: {e}"))

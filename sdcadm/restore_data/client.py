"""Asking every headnode's agent to sync its restore data now, in parallel.

``sync_headnodes(servers, token, services, reseed, observer)`` POSTs
``/v1/restore-data/sync`` to each headnode's agent and reads the NDJSON events
it streams, typed again (``sdcadm.progress.Event``); ``observer(hostname,
event)`` sees each one as it arrives.
Returns one HeadnodeSync per headnode: reachable or not, the per-service
results and the final summary. Proxies from the environment are never used
(agents are on the admin network).
"""

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sdcadm.progress import Event
from sdcadm.restore_data.events import ServiceResult, SyncSummary

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 3600.0     # a big first copy may be silent for a while


@dataclass
class HeadnodeSync:
    hostname: str
    uuid: str
    url: str | None
    reachable: bool = True
    error: str | None = None                        # the request itself failed
    services: dict = field(default_factory=dict)    # name -> ServiceResult
    summary: SyncSummary | None = None

    @property
    def problems(self):
        """[(kind, text)]: kind "unreachable" (this agent, or a source it pulls
        from) or "error" (anything else)."""
        out = []
        if not self.reachable:
            out.append(("unreachable", f"agent unreachable: {self.error}"))
            return out
        if self.error:
            out.append(("error", self.error))
        for name, result in sorted(self.services.items()):
            if result.status != "ok":
                kind = "unreachable" if result.status == "unreachable" else "error"
                out.append((kind, f"{name}: {result.status}: {result.error or ''}".rstrip(": ")))
        if self.summary is None and not self.error:
            out.append(("error", "the agent ended the stream without a summary (did it die?)"))
        elif self.summary and self.summary.error:
            out.append(("error", self.summary.error))
        return out

    @property
    def ok(self):
        return not self.problems

    def to_dict(self):
        return {"hostname": self.hostname, "uuid": self.uuid, "url": self.url,
                "reachable": self.reachable, "ok": self.ok, "error": self.error,
                "problems": [text for _, text in self.problems],
                "services": {name: r.to_dict() for name, r in self.services.items()},
                "summary": self.summary.to_dict() if self.summary else None}


def sync_headnodes(servers, token, services=None, reseed=False, observer=None):
    """Sync every server in ``servers`` (headnodes) in parallel; [HeadnodeSync]."""
    if not servers:
        return []
    with ThreadPoolExecutor(len(servers), thread_name_prefix="sync-restore-data") as pool:
        futures = [pool.submit(sync_one, s, token, services, reseed, observer) for s in servers]
        return [f.result() for f in futures]


def sync_one(server, token, services=None, reseed=False, observer=None):
    import requests

    result = HeadnodeSync(server.hostname, server.uuid, server.agent_url)
    if not server.agent_url:
        result.reachable, result.error = False, "no agent port recorded in the DC store"
        return result
    body = {"reseed": bool(reseed)}
    if services:
        body["services"] = list(services)
    session = requests.Session()
    session.trust_env = False
    try:
        with session.post(f"{server.agent_url}/v1/restore-data/sync", json=body, stream=True,
                          headers={"Authorization": f"Bearer {token}"},
                          timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as resp:
            if resp.status_code != 200:
                result.error = _http_error(resp)
                return result
            for line in resp.iter_lines():
                if line.strip():
                    _event(result, line, observer)
    except (requests.ConnectionError, requests.Timeout) as e:
        if result.summary is None and not result.services:
            result.reachable, result.error = False, _reason(e)
        else:
            result.error = f"lost the connection to the agent mid-sync: {_reason(e)}"
    except requests.RequestException as e:
        result.error = f"request failed: {e}"
    finally:
        session.close()
    return result


def _event(result, line, observer):
    try:
        doc = json.loads(line)
    except ValueError:
        log.warning("%s: ignoring a line that is not JSON: %r", result.hostname, line[:200])
        return
    event = Event.from_dict(doc)
    if event is None:
        return
    if isinstance(event, ServiceResult):
        result.services[event.service] = event
    elif isinstance(event, SyncSummary):
        result.summary = event
    if observer is not None:
        try:
            observer(result.hostname, event)
        except Exception:  # noqa: BLE001 - a display problem must not stop the sync
            log.exception("progress display failed")


def _http_error(resp):
    try:
        doc = resp.json()
        message = doc.get("message") or doc
    except ValueError:
        message = resp.text.strip()[:300]
    return f"HTTP {resp.status_code}: {message}"


def _reason(e):
    text = str(e)
    for marker in ("Connection refused", "timed out", "No route to host", "Name or service"):
        if marker in text:
            return marker.lower()
    return text[:200]

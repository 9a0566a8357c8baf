"""A small client of the agent's HTTP API (``sdcadm-agent``), for procedures.

Every ``/v1/*`` call sends ``Authorization: Bearer <token>``; the token is the
stripped content of ``agent.token_file``. Connection problems raise
``Unreachable`` (exit 3); an error answer raises ``AgentError`` with the
agent's own message.
"""

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

from sdcadm.errors import AgentError, ConfigError, Unreachable
from sdcadm.health import http_open


def read_token(config):
    """The agent token named by ``config.agent.token_file``; ConfigError if unusable."""
    path = Path(config.agent.token_file)
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ConfigError(config.path, [f"agent.token_file {path}: cannot read it: {e.strerror}"],
                          hint="set agent.token_file to the file holding the agents' token "
                               "(in the lab: <lab>/token, set by `sdcadm lab env`)") from None
    if not token:
        raise ConfigError(config.path, [f"agent.token_file {path} is empty"])
    return token


class AgentClient:
    def __init__(self, url, token, timeout=5.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _call(self, method, path, expect=(200,)):
        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": f"Bearer {self.token}"},
                                     data=b"" if method == "POST" else None)
        try:
            with http_open(req, self.timeout) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            # HTTPException: a truncated or garbled answer (an agent dying or
            # hung mid-reply) is as good as no answer.
            reason = getattr(e, "reason", e)
            raise Unreachable(f"the agent at {self.url} does not answer: {reason!r}") from None
        try:
            doc = json.loads(body or b"null")
        except ValueError:
            doc = None
        if status not in expect:
            message = (doc.get("message") if isinstance(doc, dict)
                       else body[:200].decode(errors="replace"))
            hint = ("the token in agent.token_file is not the agents' token"
                    if status == 401 else None)
            raise AgentError(f"{method} {self.url}{path}: HTTP {status}: {message}", hint=hint)
        return doc

    def ping(self):
        return self._call("GET", "/v1/ping")

    def status(self):
        return self._call("GET", "/v1/status")

    def instances(self):
        return self._call("GET", "/v1/instances")

    def reconcile(self):
        """Ask for a supervisor pass now (best effort: the agent's own schedule
        gets there anyway)."""
        return self._call("POST", "/v1/reconcile", expect=(202,))

    def restart(self, uuid):
        return self._call("POST", f"/v1/instances/{uuid}/restart", expect=(202,))

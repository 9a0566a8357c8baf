"""A small client of the agent's HTTP API (``sdcadm-agent``), for procedures.

Every ``/v1/*`` call sends ``Authorization: Bearer <token>``; the token is the
stripped content of ``agent.token_file`` (``sdcadm.config.read_token``).
Connection problems raise ``Unreachable`` (exit 3); an error answer raises
``AgentError`` with the agent's own message. ``AgentClients`` is the factory a
``ProcedureContext`` carries: it reads the token once, when first needed.
"""

import http.client
import json
import urllib.error
import urllib.request

from sdcadm.config import read_token
from sdcadm.errors import AgentError, SdcadmError, Unreachable
from sdcadm.health import http_open

# The most an answer may hold: an agent's answer is remote input, and a
# broken or hostile one must not exhaust this process's memory.
MAX_ANSWER = 64 << 20


def _read(resp, limit):
    """At most ``limit`` + 1 bytes of ``resp``'s body. A body of a stated
    length within the limit is read whole, so that one cut short raises
    IncompleteRead (a dying agent) instead of passing for a short answer."""
    length = resp.headers.get("Content-Length") if resp.headers else None
    if length and length.strip().isdigit() and int(length) <= limit:
        return resp.read()
    return resp.read(limit + 1)


class AgentClients:
    """Makes ``AgentClient``s that carry the agents' token.

    The token is read on first use, not when the context is built: a procedure
    that never talks to an agent runs without a token file, and one that does
    fails in ``prepare()`` (by asking for ``token``) before it changes anything.
    """

    def __init__(self, config):
        self.config = config
        self._token = None

    @property
    def token(self):
        if self._token is None:
            self._token = read_token(self.config.agent.token_file, self.config.path)
        return self._token

    def check(self):
        """Read the token now (ConfigError when unusable): a procedure that will
        need it calls this in prepare(), so that it fails before changing anything."""
        return self.token

    def client(self, url, timeout=5.0):
        return AgentClient(url, self.token, timeout=timeout)

    def stage(self, url, instances, timeout=2.0):
        """``AgentClient.stage``, best effort: staging only saves time (the
        move provisions what was not staged), so no answer is no error."""
        if not instances:
            return
        try:
            self.client(url, timeout=timeout).stage(instances)
        except SdcadmError:
            pass

    def wake(self, url, timeout=2.0):
        """Ask the agent at ``url`` for a supervisor pass now, best effort: the
        agent's own schedule gets there anyway, so no answer is no error."""
        try:
            self.client(url, timeout=timeout).reconcile()
        except SdcadmError:
            pass


class AgentClient:
    def __init__(self, url, token, timeout=5.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _call(self, method, path, expect=(200,), limit=MAX_ANSWER, body=None):
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode() if body is not None else b"" if method == "POST" else None
        req = urllib.request.Request(self.url + path, method=method, headers=headers, data=data)
        try:
            with http_open(req, self.timeout) as resp:
                status, body = resp.status, _read(resp, limit)
        except urllib.error.HTTPError as e:
            status, body = e.code, _read(e, limit)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            # HTTPException: a truncated or garbled answer (an agent dying or
            # hung mid-reply) is as good as no answer.
            reason = getattr(e, "reason", e)
            raise Unreachable(f"the agent at {self.url} does not answer: {reason!r}") from None
        if len(body) > limit:
            raise AgentError(f"{method} {self.url}{path}: the answer is over {limit} bytes: "
                             "ignored", hint="check that agent's version and its log")
        try:
            doc = json.loads(body or b"null")
        except (ValueError, RecursionError):   # RecursionError: nested too deeply
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

    def restore_data(self):
        """``GET /v1/restore-data``: what this headnode holds (remote input: the
        caller checks it, ``planning.read_holdings``)."""
        return self._call("GET", "/v1/restore-data")

    def listing(self, path):
        """``GET /v1/listing/...``: the agent's listing cache (remote input:
        the caller checks it, ``cli/listing.py``)."""
        return self._call("GET", path)

    def reconcile(self):
        """Ask for a supervisor pass now (best effort: the agent's own schedule
        gets there anyway)."""
        return self._call("POST", "/v1/reconcile", expect=(202,))

    def stage(self, instances):
        """Have the agent provision ``instances`` (their records as they will
        be once moved to its server) ahead of the move, starting none."""
        return self._call("POST", "/v1/instances/stage", expect=(202,),
                          body={"instances": [i.to_dict() for i in instances]})

    def seed_refusal(self, uuid):
        """The agent's reason when it refused to seed instance ``uuid`` from its
        restore data (``failure: restore-data-refused``: no wait fixes that),
        else None; an agent that does not answer now is None too (asked again)."""
        try:
            rows = self.instances()
        except SdcadmError:
            return None
        for row in rows:
            if row.get("uuid") == uuid and row.get("failure") == "restore-data-refused":
                return row.get("error") or "its restore data does not match its manifest"
        return None

    def restart(self, uuid):
        return self._call("POST", f"/v1/instances/{uuid}/restart", expect=(202,))

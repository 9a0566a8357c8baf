"""Probing instance health over HTTP (stdlib only: cheap to import)."""

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

# Probes and agent calls go straight to admin addresses, never through an
# http_proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_open(request, timeout):
    """``urlopen`` without proxies (a URL or a urllib Request)."""
    return _opener.open(request, timeout=timeout)


def probe(url, timeout=2.0, connect_timeout=None):
    """GET ``url``; return None when it answers 2xx, else the reason as text.

    ``connect_timeout`` (shorter than ``timeout``): give up a connection not
    made by then. For polls that wait for an address to start answering: a
    SYN sent while nobody held the address (an instance claiming it a moment
    later, a server powered off) is dropped, and TCP sends it again only
    after its initial retransmission timeout, 1 s; the next poll connects at
    once instead."""
    if connect_timeout is not None and connect_timeout < timeout:
        return _probe_short_connect(url, timeout, connect_timeout)
    try:
        with _opener.open(url, timeout=timeout) as resp:
            resp.read()
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} from {url}"
    except urllib.error.URLError as e:
        return f"cannot reach {url}: {e.reason}"
    except (OSError, ValueError, http.client.HTTPException) as e:
        return f"cannot reach {url}: {e!r}"


class _ShortConnect(http.client.HTTPConnection):
    def __init__(self, host, port, timeout, connect_timeout):
        super().__init__(host, port, timeout=timeout)
        self.connect_timeout = connect_timeout

    def connect(self):
        try:
            self.sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except TimeoutError:
            raise TimeoutError(f"no connection within {self.connect_timeout:g}s") from None
        self.sock.settimeout(self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _probe_short_connect(url, timeout, connect_timeout):
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            return f"cannot reach {url}: only http:// URLs are probed this way"
        conn = _ShortConnect(parts.hostname, parts.port or 80, timeout, connect_timeout)
    except ValueError as e:
        return f"cannot reach {url}: {e}"
    try:
        path = parts.path or "/"
        conn.request("GET", f"{path}?{parts.query}" if parts.query else path)
        resp = conn.getresponse()
        resp.read()
        if 200 <= resp.status < 300:
            return None
        return f"HTTP {resp.status} from {url}"
    except (OSError, http.client.HTTPException) as e:
        return f"cannot reach {url}: {e}"
    finally:
        conn.close()


def ping_pid(url, timeout=2.0):
    """GET ``url`` (an instance's /ping); ``(True, pid or None)`` when it
    answers 2xx (the pid when its JSON body says one), else ``(False, None)``."""
    try:
        with _opener.open(url, timeout=timeout) as resp:
            body = resp.read()
            if not 200 <= resp.status < 300:
                return False, None
    except (OSError, ValueError, http.client.HTTPException):   # URLError is an OSError
        return False, None
    try:
        doc = json.loads(body)
    except ValueError:
        return True, None
    return True, doc.get("pid") if isinstance(doc, dict) else None


def probe_many(urls, timeout=2.0, workers=16, connect_timeout=None):
    """Probe several URLs at once; return {url: None or reason}."""
    urls = list(dict.fromkeys(urls))
    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(urls))) as pool:
        return dict(zip(urls, pool.map(lambda u: probe(u, timeout, connect_timeout), urls)))


class HttpProber:
    """The health probes procedures use, as an object a context carries (unit
    tests of procedures hand in a fake that answers from a table)."""

    def probe(self, url, timeout=2.0, connect_timeout=None):
        return probe(url, timeout, connect_timeout)

    def probe_many(self, urls, timeout=2.0, connect_timeout=None):
        return probe_many(urls, timeout, connect_timeout=connect_timeout)

"""Probing instance health over HTTP (stdlib only: cheap to import)."""

import http.client
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

# Probes and agent calls go straight to admin addresses, never through an
# http_proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_open(request, timeout):
    """``urlopen`` without proxies (a URL or a urllib Request)."""
    return _opener.open(request, timeout=timeout)


def probe(url, timeout=2.0):
    """GET ``url``; return None when it answers 2xx, else the reason as text."""
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


def probe_many(urls, timeout=2.0, workers=16):
    """Probe several URLs at once; return {url: None or reason}."""
    urls = list(dict.fromkeys(urls))
    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(urls))) as pool:
        return dict(zip(urls, pool.map(lambda u: probe(u, timeout), urls)))


class HttpProber:
    """The health probes procedures use, as an object a context carries (unit
    tests of procedures hand in a fake that answers from a table)."""

    def probe(self, url, timeout=2.0):
        return probe(url, timeout)

    def probe_many(self, urls, timeout=2.0):
        return probe_many(urls, timeout)

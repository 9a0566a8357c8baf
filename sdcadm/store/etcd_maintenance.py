"""etcd's maintenance and cluster calls, over the JSON gateway, one member at a time.

What ``sdcadm store status`` and ``store recover`` ask each member, and how a
headnode takes a snapshot of the store through the API (no access to any
member's data directory):

* ``member_status(endpoint)``: the member's own view (its id, the cluster id,
  the leader it knows, revision, db size). etcd answers it locally, so a member
  that lost its quorum still answers (``leader`` 0 then);
* ``members(endpoint)``: the member list (needs a quorum);
* ``healthy(endpoint)``: ``/health``, true only when the member has a leader
  and can serve;
* ``save_snapshot(endpoints, out)``: the v3 Maintenance Snapshot RPC. etcd
  3.4's gateway streams it at ``POST /v3/maintenance/snapshot`` as one JSON
  object per line, ``{"result": {"blob": <base64>}}`` (an ``{"error": ...}``
  line when the member fails mid-stream). The bytes are etcd's own snapshot
  format: a bolt database followed by the sha256 of that database, which
  ``etcdctl snapshot restore`` checks and ``check_snapshot_bytes`` checks here.

Every failure is a ``StoreError`` (``StoreUnreachable`` when nothing answers):
no ``requests`` exception leaves this module.
"""

import base64
import hashlib
import json

import requests

from sdcadm.config import parse_endpoint
from sdcadm.errors import StoreError, StoreUnreachable

HASH_BYTES = 32          # etcd appends the sha256 of the database to a snapshot
MIN_DB_BYTES = 4096      # a bolt database is at least its meta pages


def url(endpoint, path):
    protocol, host, port = parse_endpoint(endpoint)
    return f"{protocol}://{host}:{port}/v3/{path}"


def _post(endpoint, path, body, timeout):
    try:
        answer = requests.post(url(endpoint, path), data=json.dumps(body), timeout=timeout)
    except (requests.RequestException, OSError) as e:
        raise StoreUnreachable(f"etcd at {endpoint} does not answer: {_short(e)}") from None
    except ValueError as e:     # a bad endpoint
        raise StoreError(f"bad etcd endpoint {endpoint!r}: {e}") from None
    if answer.status_code != 200:
        raise StoreError(f"etcd at {endpoint} refused {path}: HTTP {answer.status_code} "
                         f"{answer.text[:200]}")
    try:
        return answer.json()
    except ValueError:
        raise StoreError(f"etcd at {endpoint} answered {path} with something that is not "
                         "JSON") from None


def _short(error):
    text = " ".join(str(error).split())
    for marker in ("Connection refused", "timed out", "No route to host", "Name or service"):
        if marker in text:
            return marker.lower()
    return text[:160]


def member_status(endpoint, timeout=2.0):
    """{"endpoint", "member_id", "cluster_id", "leader", "revision", "db_size", "version",
    "raft_term"} as the member at ``endpoint`` sees itself (ids as hex text, leader
    None when it knows none)."""
    doc = _post(endpoint, "maintenance/status", {}, timeout)
    header = doc.get("header") or {}
    leader = int(doc.get("leader", 0) or 0)
    return {"endpoint": endpoint, "member_id": _hex(header.get("member_id")),
            "cluster_id": _hex(header.get("cluster_id")),
            "leader": _hex(leader) if leader else None,
            "revision": int(header.get("revision", 0) or 0),
            "db_size": int(doc.get("dbSize", 0) or 0), "version": doc.get("version"),
            "raft_term": int(header.get("raft_term", 0) or 0)}


def members(endpoint, timeout=2.0):
    """[{"id", "name", "peer_urls", "client_urls"}] of the cluster, as ``endpoint`` knows it."""
    return _members_of(_post(endpoint, "cluster/member/list", {}, timeout))


def cluster_members(endpoints, timeout=2.0):
    """``members()`` as the first of ``endpoints`` that answers knows them."""
    return _members_of(_first_answer(endpoints, "cluster/member/list", {}, timeout))


def _members_of(doc):
    return [{"id": _hex(m.get("ID")), "name": m.get("name") or "",
             "peer_urls": list(m.get("peerURLs") or []),
             "client_urls": list(m.get("clientURLs") or [])} for m in doc.get("members") or []]


def healthy(endpoint, timeout=2.0):
    """True when the member answers and has a leader (etcd's /health)."""
    try:
        protocol, host, port = parse_endpoint(endpoint)
        doc = requests.get(f"{protocol}://{host}:{port}/health", timeout=timeout).json()
    except (requests.RequestException, OSError, ValueError):
        return False
    return doc.get("health") in ("true", True)


def _hex(value):
    if value in (None, ""):
        return None
    return format(int(value), "x")


def save_snapshot(endpoints, out, timeout=30.0):
    """Stream a snapshot of the store from the first of ``endpoints`` that
    answers into the binary file object ``out``; return {"endpoint", "member_id",
    "cluster_id", "revision", "bytes", "sha256"} where ``revision`` is the
    store's revision just before the snapshot (the snapshot holds at least
    that). StoreError when no member gives a whole, intact snapshot
    (``out`` may then hold part of one: the caller writes to a scratch file)."""
    failures = []
    for endpoint in endpoints:
        try:
            status = member_status(endpoint, timeout=min(timeout, 5.0))
            if status["leader"] is None:
                failures.append(f"{endpoint}: has no leader (no quorum)")
                continue
            out.seek(0)
            out.truncate()
            digest, size = _stream(endpoint, out, timeout)
        except StoreError as e:
            failures.append(f"{endpoint}: {e.message}")
            continue
        return dict(status_of_snapshot(status), endpoint=endpoint, bytes=size, sha256=digest)
    raise StoreUnreachable("no etcd member gave a snapshot: " + "; ".join(failures),
                           hint="check the members with `sdcadm store status`")


def status_of_snapshot(status):
    return {k: status[k] for k in ("member_id", "cluster_id", "revision")}


def _stream(endpoint, out, timeout):
    """(sha256, bytes) of the snapshot streamed from ``endpoint`` into ``out``,
    checked whole (etcd's trailing sha256)."""
    try:
        answer = requests.post(url(endpoint, "maintenance/snapshot"), data="{}", stream=True,
                               timeout=timeout)
    except (requests.RequestException, OSError) as e:
        raise StoreUnreachable(f"does not answer: {_short(e)}") from None
    digest, size, tail = hashlib.sha256(), 0, b""
    db_digest = hashlib.sha256()
    try:
        if answer.status_code != 200:
            raise StoreError(f"refused the snapshot: HTTP {answer.status_code}")
        for line in answer.iter_lines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                raise StoreError("sent a snapshot chunk that is not JSON") from None
            if "error" in doc:
                raise StoreError(f"failed mid-snapshot: {str(doc['error'])[:200]}")
            blob = base64.b64decode((doc.get("result") or {}).get("blob") or "")
            out.write(blob)
            digest.update(blob)
            size += len(blob)
            # Everything but the last 32 bytes is the database: hash it as it passes.
            tail += blob
            if len(tail) > HASH_BYTES:
                db_digest.update(tail[:-HASH_BYTES])
                tail = tail[-HASH_BYTES:]
    except (requests.RequestException, OSError) as e:
        raise StoreUnreachable(f"broke off the snapshot after {size} bytes: {_short(e)}") \
            from None
    except ValueError as e:  # bad base64
        raise StoreError(f"sent a snapshot chunk that is not base64: {e}") from None
    finally:
        answer.close()
    if size < MIN_DB_BYTES + HASH_BYTES or db_digest.digest() != tail:
        raise StoreError(f"sent a snapshot that is not whole ({size} bytes; its trailing "
                         "sha256 does not match its database)")
    out.flush()
    return digest.hexdigest(), size


def check_snapshot_bytes(path):
    """Problems (text) of the etcd snapshot file at ``path``: too short, or its
    database does not match the sha256 etcd appended (truncated, damaged)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            if size < MIN_DB_BYTES + HASH_BYTES:
                return [f"{path}: {size} bytes, too short to be an etcd snapshot"]
            f.seek(0)
            left = size - HASH_BYTES
            while left:
                block = f.read(min(left, 1 << 20))
                if not block:
                    return [f"{path}: shrank while it was read"]
                digest.update(block)
                left -= len(block)
            trailer = f.read(HASH_BYTES)
    except OSError as e:
        return [f"{path}: cannot be read: {e.strerror}"]
    if digest.digest() != trailer:
        return [f"{path}: its database does not match the sha256 etcd appended to it "
                "(truncated or damaged)"]
    return []


# -- membership ----------------------------------------------------------------------

def _first_answer(endpoints, path, body, timeout):
    """The answer of the first of ``endpoints`` that answers ``path``: a refusal
    (a StoreError other than StoreUnreachable) is the cluster's answer and is
    raised at once; StoreUnreachable when none answers."""
    failures = []
    for endpoint in endpoints:
        try:
            return _post(endpoint, path, body, timeout)
        except StoreUnreachable as e:
            failures.append(e.message)
    raise StoreUnreachable("no etcd member answers: " + "; ".join(failures),
                           hint="check the members with `sdcadm store status`")


def refusal(error):
    """etcd's own reason in a refused call's StoreError text (its JSON
    ``error``/``message``), else the text as it is."""
    text = error.message if hasattr(error, "message") else str(error)
    start = text.find("{")
    if start >= 0:
        try:
            doc = json.loads(text[start:])
            return str(doc.get("error") or doc.get("message") or text)
        except ValueError:
            pass
    return text


def add_member(endpoints, peer_url, timeout=10.0):
    """Add a member with ``peer_url`` to the cluster (etcd's MemberAdd, through
    the gateway's ``/v3/cluster/member/add``); return ``{"id", "members"}``
    (``members`` as ``members()`` lists them, the new one with no name until
    it starts). StoreError with etcd's reason when the cluster refuses (e.g.
    "etcdserver: unhealthy cluster": a member does not answer)."""
    doc = _first_answer(endpoints, "cluster/member/add", {"peerURLs": [peer_url]}, timeout)
    return {"id": _hex((doc.get("member") or {}).get("ID")), "members": _members_of(doc)}


def remove_member(endpoints, member_id, timeout=10.0):
    """Remove the member ``member_id`` (hex, as ``members()`` gives it) from the
    cluster (``/v3/cluster/member/remove``). StoreError with etcd's reason
    when refused."""
    _first_answer(endpoints, "cluster/member/remove", {"ID": str(int(member_id, 16))}, timeout)

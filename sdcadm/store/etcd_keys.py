"""Where the etcd store keeps each record, and how a record becomes a value.

Every key of a DC lives under its prefix (``store.etcd_prefix``, default
``/sdcadm/``); each name in a key is percent-encoded, so a ``/`` in a name
cannot reach into another record's keys. Values are the records' JSON
(``model.Record.to_dict``). The layout is documented in docs/internals.md,
"Store on etcd".
"""

import json
from urllib.parse import quote

from sdcadm.errors import StoreError

# 2: placed/<server>/<instance> copies and hostnames/<hostname> (``upgrade``)
SCHEMA_VERSION = 2


def _part(name):
    return quote(str(name), safe="")


class Keys:
    def __init__(self, prefix):
        self.prefix = prefix

    def _at(self, *parts):
        return self.prefix + "/".join(_part(p) for p in parts)

    def dir(self, kind, *parts):
        """The prefix of every key of ``kind`` (under ``parts``), ending in /."""
        return self._at(kind, *parts) + "/" if parts else self.prefix + kind + "/"

    schema = property(lambda self: self.prefix + "meta/schema")
    revision = property(lambda self: self.prefix + "meta/revision")

    def server(self, uuid):
        return self._at("servers", uuid)

    def heartbeat(self, uuid):
        return self._at("heartbeats", uuid)

    def service(self, name):
        return self._at("services", name)

    def instance(self, uuid):
        return self._at("instances", uuid)

    def alias(self, alias):
        return self._at("aliases", alias)

    def placed(self, server_uuid, instance_uuid=None):
        """The copy of an instance's record under the server that owns it (one
        prefix per server: an agent reads and watches its own, not the DC's);
        without ``instance_uuid``, the server's prefix."""
        if instance_uuid is None:
            return self.dir("placed", server_uuid)
        return self._at("placed", server_uuid, instance_uuid)

    def hostname(self, hostname):
        return self._at("hostnames", hostname)

    def image(self, uuid):
        return self._at("images", uuid)

    def network(self, name):
        return self._at("networks", name)

    def task(self, uuid):
        return self._at("tasks", uuid)

    def restore_status(self, receiver, instance):
        return self._at("restore-status", receiver, instance)

    def lock(self, name):
        return self._at("locks", name)


def encode(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def decode(kv):
    """The JSON value of a key-value; a damaged one is a StoreError naming the
    key and how to repair it (never a JSONDecodeError)."""
    try:
        return json.loads(kv["value"])
    except (ValueError, RecursionError) as e:
        raise StoreError(
            f"the DC store is damaged: etcd key {kv['key']!r} does not hold JSON "
            f"({str(e)[:80]})",
            hint=f"write the record again through sdcadm, or repair it with `etcdctl put "
                 f"{kv['key']} '<json>'`, or restore a snapshot of the store") from None


def record(cls, kv):
    data = decode(kv)
    if not isinstance(data, dict):
        raise StoreError(f"the DC store is damaged: etcd key {kv['key']!r} holds "
                         f"{type(data).__name__}, not a record",
                         hint=f"repair it with `etcdctl put {kv['key']} '<json>'`")
    try:
        return cls.from_dict(data)
    except TypeError as e:
        raise StoreError(f"the DC store is damaged: etcd key {kv['key']!r} is not a "
                         f"{cls.__name__.lower()} record ({e})",
                         hint=f"repair it with `etcdctl put {kv['key']} '<json>'`") from None

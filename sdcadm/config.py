"""Configuration: a YAML file plus ``SDCADM_<KEY>`` environment overrides.

The file is ``$SDCADM_CONFIG`` or ``/etc/sdcadm/sdcadm.yaml``. Every key can
be overridden by an environment variable named ``SDCADM_`` + the key path in
upper case with ``_`` between levels (``agent.port`` -> ``SDCADM_AGENT_PORT``);
its value is parsed as YAML scalar (so ``5``, ``1.5``, ``true`` keep their
types). Unknown keys and wrong types are errors naming the source, the key and
what was expected; all problems are reported together.

Hostile or broken files are refused with a ConfigError and never crash the
reader: every number has a range (finite, positive where it is a period), the
file must be UTF-8 text of at most ``MAX_FILE_BYTES``, YAML aliases may not
expand the document beyond ``MAX_NODES`` nodes (a "billion laughs" file of a
few hundred bytes), and an error never echoes more than one short line of a
value.
"""

import math
import os
from pathlib import Path
from urllib.parse import urlsplit

from sdcadm.errors import ConfigError

DEFAULT_PATH = "/etc/sdcadm/sdcadm.yaml"
ENV_PATH = "SDCADM_CONFIG"
# Environment variables that start with SDCADM_ but are not configuration keys.
NOT_KEYS = {"SDCADM_CONFIG", "SDCADM_LAB", "SDCADM_LAB_ISOLATION"}  # the lab's: sdcadm/lab

_OPT_STR = (str, type(None))

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 10_000
MAX_SHOWN = 60  # characters of a bad value quoted in an error
DAY = 86400.0

# key -> (types, default, help). Nested dicts are sections.
SPEC = {
    "server_uuid": (_OPT_STR, None, "this server's UUID"),
    "hostname": (_OPT_STR, None, "this server's hostname"),
    "root": (str, "/", "root directory for this server's files (the lab gives each server its own)"),
    "catalog": (_OPT_STR, None, "core-services catalog file; default: the packaged one"),
    "log_dir": (str, "/var/log/sdcadm", "where procedures write their logs"),
    "restore_data_dir": (str, "/var/sdcadm/svc-restore-data", "where restore data is kept"),
    "image_source": (str, "/var/sdcadm/images", "directory holding <uuid>.json and <uuid>.file of images"),
    "admin_ip_quarantine": ((int, float), 600.0,
                            "seconds a released admin address waits before another owner may "
                            "take it (a client may still point at it)"),
    "listing": (str, "auto", "where server ls, insts and svcs read: auto (on etcd, this "
                             "server's agent's listing cache, else the store), store, or agent "
                             "(the agent's cache or an error)"),
    "usbkey_dir": (str, "/usbkey", "a headnode's copy of what makes it a headnode (images, "
                                   "platforms, secrets...): the headnode bundle is built from it"),
    "datasets": {
        "backend": (str, "dir", "dir | zfs: how delegate datasets are stored and copied"),
        "zfs_pool": (_OPT_STR, None, "zfs: the pool holding delegate datasets and replicas"),
        "zfs_source_pool_template": (_OPT_STR, None,
                                     "zfs: the pool of a source server ({hostname}, {uuid} "
                                     "replaced); default: the same name as zfs_pool"),
        "keep": (int, 3, "complete copies kept per replica"),
    },
    "restore_data": {
        "enabled": (bool, True, "pull restore data (headnodes only)"),
        "key_file": (str, "/etc/sdcadm/restore-data.key",
                     "file holding the DC key manifests are signed with (same on every headnode)"),
        "sync_interval": ((int, float), 60.0, "seconds between syncs (with jitter)"),
        "jitter": ((int, float), 0.1, "fraction of sync_interval added at random"),
        "concurrency": (int, 4, "services synced at once (transfers mostly wait on SSH and disk)"),
        "prune_grace": ((int, float), 600.0, "seconds before copies of a vanished instance are removed"),
        "source_root_template": (str, "/", "root of a source server's files, {hostname} and {uuid} "
                                           "replaced (the lab: <lab dir>/{hostname})"),
    },
    "restore": {
        "max_data_age": ((int, float), 600.0,
                         "seconds: `service restore` refuses a copy older than this (the RPO "
                         "limit) unless --accept-data-age"),
    },
    "store": {
        "backend": (str, "sqlite", "sqlite | etcd"),
        "path": (str, "/var/sdcadm/dc.sqlite", "sqlite: the database file"),
        "etcd_endpoints": (list, [], "etcd: the cluster's client endpoints, host:port or "
                                     "http://host:port, tried in order"),
        "etcd_prefix": (str, "/sdcadm/", "etcd: the prefix of every key of this DC"),
        "timeout": ((int, float), 5.0, "seconds to wait for the store"),
        "max_snapshot_age": ((int, float), 900.0,
                             "seconds: `store recover` refuses a snapshot older than this "
                             "unless --force (every write since it is lost)"),
        "member": {
            "name": (_OPT_STR, None, "etcd: this headnode's member name (default: hostname)"),
            "peer_url": (_OPT_STR, None, "etcd: this member's peer URL (http://ADDRESS:2380)"),
            "client_url": (_OPT_STR, None, "etcd: this member's client URL (default: the first "
                                           "of store.etcd_endpoints)"),
            "data_dir": (str, "/var/lib/etcd", "etcd: this member's data directory"),
            "start_command": ((list, str), ["systemctl", "start", "etcd"],
                              "etcd: starts this headnode's member (with its data directory "
                              "as it finds it)"),
            "stop_command": ((list, str), ["systemctl", "stop", "etcd"],
                             "etcd: stops this headnode's member"),
        },
    },
    "agent": {
        "listen": (str, "127.0.0.1", "address the agent's HTTP API binds to"),
        "port": (int, 5309, "port of the agent's HTTP API"),
        "token_file": (str, "/etc/sdcadm/agent-token", "file holding the bearer token"),
        "heartbeat_interval": ((int, float), 5.0, "seconds between heartbeats"),
        "heartbeat_timeout": ((int, float), 15.0, "a server is unreachable after this many seconds without heartbeat"),
        "reconcile_interval": ((int, float), 1.0, "seconds between instance supervisor passes"),
        "stop_timeout": ((int, float), 5.0, "seconds between SIGTERM and SIGKILL when an instance "
                                             "is stopped"),
        "lease_stop_fraction": ((int, float), 0.2, "share of the instance lease (heartbeat_timeout) "
                                                    "before its end at which the agent SIGTERMs "
                                                    "singletons whose lease was not renewed; "
                                                    "SIGKILL follows at the lease's end"),
        "instance_port": (int, 8080, "port instances' HTTP endpoints listen on"),
        "max_image_bytes": (int, 4 << 30, "bytes an image may expand to when unpacked "
                                          "(a larger one is refused as a decompression bomb)"),
        "cache_file": (_OPT_STR, None, "local cache of the last DC state seen; default <root>/var/sdcadm/agent-cache.json"),
    },
    "fencing": {
        "command": ((list, str, type(None)), None,
                    "fence agent run by `service restore --dead SERVER` to power SERVER off "
                    "(argv list, or a string split as a shell would; {hostname}, {address} "
                    "and {uuid} in it are replaced by the server's); exit 0 means powered off"),
        "timeout": ((int, float), 60.0, "seconds the fence command may run; a longer one is "
                                        "killed and the restore refused"),
        "servers": (dict, {}, "per-server fence commands {hostname: command}, used instead of "
                              "fencing.command for those servers"),
    },
    "ssh": {
        "port": (int, 22, "sshd port on every server"),
        "user": (str, "root", "user to log in as"),
        "identity": (_OPT_STR, None, "private key file"),
        "known_hosts": (str, "/etc/sdcadm/known_hosts", "known_hosts file; host keys are never auto-accepted"),
        "connect_timeout": ((int, float), 10.0, "seconds"),
    },
}


# key -> (lowest, highest, lowest allowed itself?) for every number; NaN and
# infinities are never allowed. A period of 0 would spin a loop, a negative
# timeout would show every server unreachable.
RANGES = {
    "admin_ip_quarantine": (0, DAY, True),
    "datasets.keep": (1, 1000, True),
    "restore_data.sync_interval": (0, DAY, False),
    "restore_data.jitter": (0, 1, True),
    "restore_data.concurrency": (1, 64, True),
    "restore_data.prune_grace": (0, 365 * DAY, True),
    "restore.max_data_age": (1, 365 * DAY, True),
    "store.timeout": (0, 3600, False),
    "store.max_snapshot_age": (1, 365 * DAY, True),
    "agent.port": (1, 65535, True),
    "agent.heartbeat_interval": (0, 3600, False),
    "agent.heartbeat_timeout": (0, DAY, False),
    "agent.reconcile_interval": (0, 3600, False),
    "agent.stop_timeout": (0, 3600, False),
    "agent.lease_stop_fraction": (0, 0.9, False),
    "agent.instance_port": (1, 65535, True),
    "agent.max_image_bytes": (1 << 20, 1 << 40, True),
    "fencing.timeout": (0, 3600, False),
    "ssh.port": (1, 65535, True),
    "ssh.connect_timeout": (0, 3600, False),
}


class Section:
    """Attribute access over a dict of already-checked values."""

    def __init__(self, values):
        self._values = values

    def __getattr__(self, name):
        try:
            value = self._values[name]
        except KeyError:
            raise AttributeError(name) from None
        return Section(value) if isinstance(value, dict) else value

    def get(self, dotted, default=None):
        node = self._values
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def to_dict(self):
        return _copy(self._values)


class Config(Section):
    def __init__(self, values, path):
        super().__init__(values)
        self.path = path

    def under_root(self, path):
        """A configured absolute path, placed under this server's ``root``.

        Idempotent: a path already inside the root is returned unchanged, so
        the lab can write full paths into a server's config.
        """
        root, path = Path(self.root), Path(str(path))
        if self.root == "/" or path == root or root in path.parents:
            return str(path)
        return str(root / str(path).lstrip("/"))


def _copy(values):
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in values.items()}


def _defaults(spec):
    return {k: _defaults(v) if isinstance(v, dict) else _copy_default(v[1]) for k, v in spec.items()}


def _copy_default(value):
    if isinstance(value, (list, dict)):
        return type(value)(value)
    return value


def _type_name(types):
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
             list: "a list", dict: "a mapping", type(None): "null"}
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def shown(value):
    """``repr(value)`` cut to one short line, for error messages."""
    text = repr(value)
    text = text.splitlines()[0] if text else text
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...(cut)"


def range_problems(values, source):
    """Problems of numbers outside their range (after types were checked)."""
    problems = []
    for key, (low, high, low_ok) in RANGES.items():
        value = values
        for part in key.split("."):
            value = value[part]
        bound = f"{'at least' if low_ok else 'more than'} {low:g} and at most {high:g}"
        if not math.isfinite(value) or value < low or (value == low and not low_ok) or value > high:
            problems.append(f"{source}: key {key!r} must be a number {bound}, got {shown(value)}")
    return problems


def parse_endpoint(text):
    """(protocol, host, port) of an etcd endpoint ``host:port`` or
    ``http[s]://host:port``; ValueError saying what is wrong otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected host:port, got {shown(text)}")
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown(text)}: the scheme must be http or https")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{shown(text)}: expected only host:port (no path, query or user)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown(text)}: the port must be a number from 1 to 65535") from None
    if not parts.hostname or not port:
        raise ValueError(f"{shown(text)}: expected host:port, e.g. 127.0.0.1:2379")
    return parts.scheme, parts.hostname, port


def store_problems(values, source):
    """Problems of the etcd keys: checked whatever the backend, so a switch to
    etcd does not first meet a bad endpoint when the store is needed."""
    store, problems = values["store"], []
    for i, endpoint in enumerate(store["etcd_endpoints"]):
        try:
            parse_endpoint(endpoint)
        except ValueError as e:
            problems.append(f"{source}: key 'store.etcd_endpoints' item {i + 1}: {e}")
    if store["backend"] == "etcd" and not store["etcd_endpoints"]:
        problems.append(f"{source}: store.backend is etcd but store.etcd_endpoints is empty: "
                        "list the cluster's client endpoints, e.g. [127.0.0.1:2379]")
    prefix = store["etcd_prefix"]
    if not (prefix.startswith("/") and prefix.endswith("/") and len(prefix) > 1):
        problems.append(f"{source}: key 'store.etcd_prefix' must start and end with / and "
                        f"name something, e.g. /sdcadm/, got {shown(prefix)}")
    return problems


FENCE_FIELDS = ("hostname", "address", "uuid")


def fence_argv_problem(command):
    """Why ``command`` (a fencing command as configured) cannot be run, or None."""
    import shlex
    import string

    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as e:
            return f"cannot be split into arguments: {e}"
    if not isinstance(command, list) or not command:
        return "must be a non-empty list of arguments (or a command line string)"
    for arg in command:
        if not isinstance(arg, str) or not arg:
            return f"every argument must be a non-empty string, got {shown(arg)}"
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(arg) if f is not None]
        except ValueError as e:
            return f"argument {shown(arg)}: {e} (write a literal brace as {{{{ or }}}})"
        unknown = [f for f in fields if f not in FENCE_FIELDS]
        if unknown:
            return (f"argument {shown(arg)} names {{{unknown[0]}}}: only "
                    + ", ".join("{" + f + "}" for f in FENCE_FIELDS) + " are replaced")
    return None


def fencing_problems(values, source):
    """Problems of the fencing section: every command must be runnable as written,
    so that a disaster does not first meet a typo."""
    fencing, problems = values["fencing"], []
    if fencing["command"] is not None:
        problem = fence_argv_problem(fencing["command"])
        if problem:
            problems.append(f"{source}: key 'fencing.command' {problem}")
    for host, command in fencing["servers"].items():
        problem = (f"must be a command, got {shown(command)}"
                   if not isinstance(command, (list, str)) else fence_argv_problem(command))
        if not isinstance(host, str) or not host:
            problem = f"keys must be server hostnames, got {shown(host)}"
        if problem:
            problems.append(f"{source}: key 'fencing.servers' item {shown(host)}: {problem}")
    return problems


def _check_value(value, types):
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False  # bool is an int in Python; not in configuration
    return isinstance(value, types)


def merge(spec, doc, source, prefix="", out=None, problems=None):
    """Check ``doc`` against ``spec`` and merge it into ``out``; collect problems."""
    out = _defaults(spec) if out is None else out
    problems = [] if problems is None else problems
    if not isinstance(doc, dict):
        problems.append(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a mapping, "
                        f"got {type(doc).__name__}")
        return out, problems
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if key not in spec:
            known = ", ".join(f"{prefix}{k}" for k in spec)
            problems.append(f"{source}: unknown key {shown(name)} (known: {known})")
        elif isinstance(spec[key], dict):
            merge(spec[key], value, source, f"{name}.", out[key], problems)
        elif not _check_value(value, spec[key][0]):
            problems.append(f"{source}: key {name!r} must be {_type_name(spec[key][0])}, got {shown(value)}")
        else:
            out[key] = value
    return out, problems


def env_keys(spec=SPEC, prefix=""):
    """Map every SDCADM_* variable name to the key path it overrides."""
    table = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            table.update(env_keys(value, f"{path}."))
        else:
            table["SDCADM_" + path.replace(".", "_").upper()] = path
    return table


def env_overrides(environ):
    """A nested document of the overrides found in ``environ``, and problems."""
    import yaml

    table, doc, problems = env_keys(), {}, []
    for name, raw in sorted(environ.items()):
        if not name.startswith("SDCADM_") or name in NOT_KEYS:
            continue
        if name not in table:
            problems.append(f"environment: {name} is not a configuration key "
                            f"(known: {', '.join(sorted(table))})")
            continue
        try:
            value = safe_yaml(raw) if raw.strip() else ""
        except (yaml.YAMLError, ValueError):
            value = raw
        node, parts = doc, table[name].split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return doc, problems


def config_from(doc, source="<built-in>"):
    """A Config from a document alone (no file, no environment): for programs
    that build a configuration, like benchmarks and tests."""
    values, problems = merge(SPEC, doc, source)
    problems += range_problems(values, source)
    problems += store_problems(values, source)
    problems += fencing_problems(values, source)
    if problems:
        raise ConfigError(source, problems)
    return Config(values, source)


def safe_yaml(text):
    """``yaml.safe_load`` that refuses a document whose aliases expand it
    beyond ``MAX_NODES`` nodes (ValueError), before building anything."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return None
    sizes = {}

    def size(node):
        # An alias composes to the very node it names: count it once per use.
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = MAX_NODES + 1  # a node that contains itself
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                break
        sizes[id(node)] = total
        return total

    if size(root) > MAX_NODES:
        raise ValueError(f"the document expands to more than {MAX_NODES} values "
                         f"(YAML aliases used as a bomb?)")
    return yaml.safe_load(text)


def read_document(path):
    """The parsed YAML of ``path``, ``None`` when it does not exist; every
    other failure is a ConfigError saying what is wrong with the file."""
    import yaml

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(path, ["is a directory, not a file"]) from None
    except OSError as e:
        raise ConfigError(path, [f"cannot read: {e.strerror}"],
                          hint="check the permissions of the file and of its directories") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(path, [f"larger than {MAX_FILE_BYTES} bytes: not a configuration file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, [f"not UTF-8 text (byte {e.start})"]) from None
    try:
        return safe_yaml(text) or {}
    except ValueError as e:
        raise ConfigError(path, [str(e)]) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, [f"not valid YAML: {shown_yaml_error(e)}"]) from None
    except RecursionError:
        raise ConfigError(path, ["nested too deeply"]) from None


def shown_yaml_error(error):
    """A YAML error in at most a few short lines (its snippet can echo a huge line)."""
    lines = [line[:120] for line in str(error).splitlines()]
    return "\n".join(lines[:6])


def load_config(path=None, environ=None):
    """Load the configuration; raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    explicit = path or environ.get(ENV_PATH)
    path = Path(explicit or DEFAULT_PATH)
    doc = read_document(path)
    if doc is None:
        if explicit:
            raise ConfigError(path, ["file does not exist"],
                              hint=f"create it, or unset {ENV_PATH} to use {DEFAULT_PATH}")
        doc = {}
    values, problems = merge(SPEC, doc, str(path))
    overrides, env_problems = env_overrides(environ)
    problems += env_problems
    values, problems = merge(SPEC, overrides, "environment", out=values, problems=problems)
    if values["store"]["backend"] not in ("sqlite", "etcd"):
        problems.append(f"{path}: key 'store.backend' must be sqlite or etcd, "
                        f"got {shown(values['store']['backend'])}")
    if values["datasets"]["backend"] not in ("dir", "zfs"):
        problems.append(f"{path}: key 'datasets.backend' must be dir or zfs, "
                        f"got {shown(values['datasets']['backend'])}")
    if values["listing"] not in ("auto", "store", "agent"):
        problems.append(f"{path}: key 'listing' must be auto, store or agent, "
                        f"got {shown(values['listing'])}")
    problems += range_problems(values, str(path))
    problems += store_problems(values, str(path))
    problems += fencing_problems(values, str(path))
    if problems:
        raise ConfigError(path, problems)
    return Config(values, str(path))


TOKEN_HINT = ("put a long random secret in it, e.g. `umask 077; openssl rand -hex 32 > {path}`, "
              "and give the same token to the agents and sdcadm; or point agent.token_file at "
              "the file that holds it (in the lab: <lab>/token, set by `sdcadm lab env`)")


def read_secret(path, key, source, hint, min_bytes=1):
    """The stripped bytes of the secret file ``path`` (configuration ``key``);
    ConfigError naming the file and how to fix it when it is missing,
    unreadable, empty or shorter than ``min_bytes``."""
    try:
        secret = Path(path).read_bytes().strip()
    except FileNotFoundError:
        problem = f"{key}: {path} does not exist"
    except OSError as e:
        problem = f"{key}: cannot read {path}: {e.strerror}"
    else:
        if len(secret) >= min_bytes:
            return secret
        problem = (f"{key}: {path} is empty" if not secret else
                   f"{key}: {path} holds {len(secret)} bytes, fewer than {min_bytes}")
    raise ConfigError(source, [problem], hint=hint.format(path=path))


def read_token(path, source="configuration"):
    """The agents' bearer token: the stripped content of ``path`` (the
    ``agent.token_file`` of the configuration ``source``).

    The agent serves with it and every client (procedures, the CLI, the lab)
    sends it, so both sides read it here: one rule for what a usable token is.
    """
    return read_secret(path, "agent.token_file", source, TOKEN_HINT).decode(errors="replace")


RESTORE_KEY_HINT = ("create it once with `umask 077; head -c 32 /dev/urandom | base64 > {path}` "
                    "(mode 0600) and copy the same file to every headnode of the DC; or point "
                    "restore_data.key_file at the file that holds it")
# base64 of 32 random bytes is 44 characters; anything much shorter is guessable.
RESTORE_KEY_MIN = 16


def read_restore_key(path, source="configuration"):
    """The DC key restore-data manifests are signed with (HMAC-SHA256): the
    stripped bytes of ``path`` (``restore_data.key_file``). Every headnode
    must hold the same key, or it refuses the others' manifests."""
    return read_secret(path, "restore_data.key_file", source, RESTORE_KEY_HINT, RESTORE_KEY_MIN)

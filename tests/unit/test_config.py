import os

import pytest

from sdcadm.config import env_keys, load_config
from sdcadm.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "sdcadm.yaml"
    path.write_text(text)
    return path


def test_defaults_when_default_file_absent(tmp_path):
    cfg = load_config(environ={"SDCADM_CONFIG": str(write(tmp_path, ""))})
    assert cfg.agent.port == 5309 and cfg.store.backend == "sqlite" and cfg.root == "/"


def test_file_values_and_nesting(tmp_path):
    path = write(tmp_path, "agent:\n  port: 7000\n  heartbeat_interval: 2\nroot: /srv/hn1\n")
    cfg = load_config(path, environ={})
    assert cfg.agent.port == 7000 and cfg.agent.heartbeat_interval == 2 and cfg.root == "/srv/hn1"
    assert cfg.get("agent.port") == 7000 and cfg.get("agent.nope", 1) == 1


def test_env_overrides_with_types(tmp_path):
    path = write(tmp_path, "agent:\n  port: 7000\n")
    cfg = load_config(path, environ={"SDCADM_AGENT_PORT": "7100",
                                     "SDCADM_AGENT_HEARTBEAT_INTERVAL": "0.5",
                                     "SDCADM_STORE_PATH": "/tmp/x.sqlite"})
    assert cfg.agent.port == 7100 and cfg.agent.heartbeat_interval == 0.5
    assert cfg.store.path == "/tmp/x.sqlite"


def test_every_key_has_an_env_name():
    keys = env_keys()
    assert keys["SDCADM_AGENT_HEARTBEAT_INTERVAL"] == "agent.heartbeat_interval"
    assert keys["SDCADM_RESTORE_DATA_DIR"] == "restore_data_dir"


def test_all_problems_reported_together_naming_file_and_key(tmp_path):
    path = write(tmp_path, "agent:\n  port: high\n  bogus: 1\nstore:\n  backend: mongo\nfoo: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    text = str(exc.value)
    assert str(path) in text
    assert "'agent.port' must be an integer, got 'high'" in text
    assert "unknown key 'agent.bogus'" in text and "unknown key 'foo'" in text
    assert "'store.backend' must be sqlite or etcd" in text


def test_bool_is_not_an_integer(tmp_path):
    with pytest.raises(ConfigError, match="agent.port"):
        load_config(write(tmp_path, "agent: {port: true}\n"), environ={})


def test_section_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="agent: expected a mapping"):
        load_config(write(tmp_path, "agent: 5\n"), environ={})


def test_bad_env_override(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match="environment: key 'agent.port' must be an integer"):
        load_config(path, environ={"SDCADM_AGENT_PORT": "eighty"})
    with pytest.raises(ConfigError, match="SDCADM_AGENT_PROT is not a configuration key"):
        load_config(path, environ={"SDCADM_AGENT_PROT": "1"})


def test_invalid_yaml_and_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "agent: [\n"), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(environ={"SDCADM_CONFIG": str(tmp_path / "nope.yaml")})


def test_under_root_is_idempotent(tmp_path):
    cfg = load_config(write(tmp_path, "root: /lab/hn0\n"), environ={})
    assert cfg.under_root("/var/sdcadm") == "/lab/hn0/var/sdcadm"
    assert cfg.under_root("/lab/hn0/var/sdcadm") == "/lab/hn0/var/sdcadm"


# Hostile and broken files: a clear ConfigError, never a crash or a huge message.

@pytest.mark.parametrize("text, key", [
    ("agent: {heartbeat_interval: .nan}\n", "agent.heartbeat_interval"),
    ("agent: {heartbeat_interval: .inf}\n", "agent.heartbeat_interval"),
    ("agent: {heartbeat_interval: -.inf}\n", "agent.heartbeat_interval"),
    ("agent: {heartbeat_timeout: -1}\n", "agent.heartbeat_timeout"),
    ("agent: {reconcile_interval: 0}\n", "agent.reconcile_interval"),
    ("agent: {stop_timeout: 0}\n", "agent.stop_timeout"),
    ("agent: {stop_timeout: .inf}\n", "agent.stop_timeout"),
    ("agent: {lease_stop_fraction: 0}\n", "agent.lease_stop_fraction"),
    ("agent: {lease_stop_fraction: 1}\n", "agent.lease_stop_fraction"),
    ("restore_data: {sync_interval: -5}\n", "restore_data.sync_interval"),
    ("restore_data: {sync_interval: .nan}\n", "restore_data.sync_interval"),
    ("restore_data: {jitter: 2}\n", "restore_data.jitter"),
    ("restore_data: {concurrency: 0}\n", "restore_data.concurrency"),
    ("restore_data: {prune_grace: -1}\n", "restore_data.prune_grace"),
    ("store: {timeout: 0}\n", "store.timeout"),
    ("datasets: {keep: 0}\n", "datasets.keep"),
    ("ssh: {port: 0}\n", "ssh.port"),
    ("ssh: {connect_timeout: .inf}\n", "ssh.connect_timeout"),
    ("agent: {instance_port: 65536}\n", "agent.instance_port"),
])
def test_numbers_outside_their_range_are_refused(tmp_path, text, key):
    with pytest.raises(ConfigError, match=f"key '{key}' must be a number"):
        load_config(write(tmp_path, text), environ={})


def test_numbers_from_the_environment_are_range_checked_too(tmp_path):
    with pytest.raises(ConfigError, match="'agent.heartbeat_interval' must be a number more than 0"):
        load_config(write(tmp_path, ""), environ={"SDCADM_AGENT_HEARTBEAT_INTERVAL": ".nan"})


def test_the_edges_of_a_range_are_accepted(tmp_path):
    cfg = load_config(write(tmp_path, "restore_data: {jitter: 0, prune_grace: 0, concurrency: 1}\n"
                                      "agent: {port: 65535, heartbeat_interval: 0.05}\n"), environ={})
    assert cfg.restore_data.jitter == 0 and cfg.agent.port == 65535


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "sdcadm.yaml"
    path.write_bytes(b"hostname: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 13\)"):
        load_config(path, environ={})


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, environ={})


def test_a_file_behind_a_directory_without_permission_is_refused_not_a_crash(tmp_path):
    if os.geteuid() == 0:
        # Root passes every permission check; an unreadable path is made
        # another way: a path through a regular file (ENOTDIR).
        path = write(tmp_path, "") / "sdcadm.yaml"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        path = write(locked, "")
        locked.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path, environ={})


def test_a_huge_file_is_refused_without_parsing(tmp_path):
    path = tmp_path / "sdcadm.yaml"
    path.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_config(path, environ={})


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)) + "hostname: *i\n"


def test_a_yaml_alias_bomb_is_refused_with_a_short_message(tmp_path):
    assert len(BOMB) < 600  # a few hundred bytes that would expand to 9**9 values
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, BOMB), environ={})
    assert "expands to more than 10000 values" in str(e.value)
    assert len(str(e.value)) < 500


def test_modest_aliases_are_still_allowed(tmp_path):
    path = write(tmp_path, "agent: {port: &p 7000, instance_port: *p}\n")
    cfg = load_config(path, environ={})
    assert cfg.agent.port == cfg.agent.instance_port == 7000


def test_a_long_bad_value_is_not_echoed_in_full(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "agent: {port: '" + "9" * 100_000 + "'}\n"), environ={})
    assert "must be an integer" in str(e.value)
    assert len(str(e.value)) < 400


def test_a_long_unknown_key_is_not_echoed_in_full(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "? " + "k" * 100_000 + "\n: 1\n"), environ={})
    assert "unknown key" in str(e.value) and len(str(e.value)) < 1000


def test_deep_nesting_is_refused_not_a_crash(tmp_path):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, "agent: " + "[" * 50_000 + "]" * 50_000 + "\n"), environ={})


def test_etcd_endpoints_are_checked_item_by_item(tmp_path):
    path = write(tmp_path, "store:\n  backend: etcd\n  etcd_endpoints: [10.0.0.1:2379, "
                           "'http://10.0.0.2:2379', 'ftp://x:1', 'h:99999', 'h', 7, "
                           "'http://h:1/v3']\n  etcd_prefix: sdcadm\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    text = str(exc.value)
    assert "item 1" not in text and "item 2" not in text  # host:port and http://host:port
    assert "item 3: 'ftp://x:1': the scheme must be http or https" in text
    assert "item 4: 'h:99999': the port must be a number from 1 to 65535" in text
    assert "item 5: 'h': expected host:port" in text
    assert "item 6: expected host:port, got 7" in text
    assert "item 7: 'http://h:1/v3': expected only host:port" in text
    assert "'store.etcd_prefix' must start and end with /" in text


def test_the_etcd_backend_needs_endpoints(tmp_path):
    with pytest.raises(ConfigError, match="store.etcd_endpoints is empty"):
        load_config(write(tmp_path, "store: {backend: etcd}\n"), environ={})
    cfg = load_config(write(tmp_path, "store: {backend: etcd, etcd_endpoints: [h:2379]}\n"),
                      environ={"SDCADM_STORE_ETCD_PREFIX": "/dc2/"})
    assert cfg.store.etcd_endpoints == ["h:2379"] and cfg.store.etcd_prefix == "/dc2/"


def test_an_etcd_store_is_selected_without_io():
    from sdcadm.config import config_from
    from sdcadm.store import store_for

    store = store_for(config_from({"store": {"backend": "etcd",
                                             "etcd_endpoints": ["127.0.0.1:1", "h:2"]}}))
    assert store.backend == "etcd" and store.describe() == (
        "etcd store /sdcadm/ at 127.0.0.1:1, h:2")
    assert store.heartbeat_ttl == 15  # agent.heartbeat_timeout: the lease of a heartbeat

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

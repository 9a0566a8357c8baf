import pytest

from sdcadm.agent.connection import beat_timeout, with_store_timeout
from sdcadm.agent.daemon import cache_path, check_config
from sdcadm.config import read_token
from sdcadm.config import load_config
from sdcadm.errors import ConfigError

ME = "11111111-1111-1111-1111-111111111111"


def config(tmp_path, text):
    path = tmp_path / "sdcadm.yaml"
    path.write_text(text)
    return load_config(path, environ={})


def test_a_good_configuration_passes(tmp_path):
    check_config(config(tmp_path, f"server_uuid: {ME}\n"))


def test_every_number_problem_is_reported_together_when_loading(tmp_path):
    with pytest.raises(ConfigError) as e:
        config(tmp_path, "agent: {reconcile_interval: 0, heartbeat_interval: -1, port: 70000}\n")
    text = str(e.value)
    for key in ("agent.reconcile_interval", "agent.heartbeat_interval", "agent.port"):
        assert key in text
    assert str(tmp_path / "sdcadm.yaml") in text


def test_server_uuid_is_required(tmp_path):
    with pytest.raises(ConfigError, match="'server_uuid' is required"):
        check_config(config(tmp_path, ""))


def test_server_uuid_must_be_a_uuid(tmp_path):
    with pytest.raises(ConfigError, match="server_uuid"):
        check_config(config(tmp_path, "server_uuid: HN0\n"))


def test_token(tmp_path):
    token = tmp_path / "token"
    with pytest.raises(ConfigError, match="does not exist") as e:
        read_token(token)
    assert "agent.token_file" in str(e.value) and str(token) in str(e.value)
    token.write_text("\n  \n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token(token)
    token.write_text("  s3cret\n")
    assert read_token(token) == "s3cret"


def test_cache_path_defaults_under_the_root(tmp_path):
    c = config(tmp_path, f"root: {tmp_path}/hn0\n")
    assert cache_path(c) == f"{tmp_path}/hn0/var/sdcadm/agent-cache.json"
    c = config(tmp_path, f"root: {tmp_path}/hn0\nagent: {{cache_file: /x/c.json}}\n")
    assert cache_path(c) == "/x/c.json"


@pytest.mark.parametrize("store_timeout, lease, expected", [
    (5.0, 4.0, 4.0 / 3),     # the lab: a beat may not wait out the lease on one member
    (5.0, 15.0, 5.0),        # production defaults: store.timeout already a third of it
    (1.0, 30.0, 1.0),
])
def test_the_heartbeat_waits_on_one_member_at_most_a_third_of_the_lease(store_timeout, lease,
                                                                         expected):
    assert beat_timeout(store_timeout, lease) == pytest.approx(expected)


def test_the_heartbeats_own_config_differs_only_in_its_store_timeout(tmp_path):
    loaded = config(tmp_path, f"server_uuid: {ME}\nstore:\n  timeout: 5\n")
    bounded = with_store_timeout(loaded, 1.25)
    assert bounded.store.timeout == 1.25 and loaded.store.timeout == 5
    assert {**bounded.to_dict(), "store": None} == {**loaded.to_dict(), "store": None}
    assert bounded.path == loaded.path

"""`server ls` by column: only the fields asked for, each derived as the
listing documents it."""

import pytest

from sdcadm.cli.server import SERVER_FIELDS, server_columns
from sdcadm.model import Server

NOW = 1000.0
HN = Server(uuid="u-hn0", hostname="hn0", admin_ip="10.0.0.1", headnode=True,
            last_heartbeat=NOW - 3, agent_port=5309)
CN = Server(uuid="u-cn0", hostname="cn0", admin_ip="10.0.0.2", setup=False,
            boot_platform="b", current_platform="c", fenced=True)


def test_only_the_fields_asked_for():
    cols = server_columns([HN, CN], ["hostname", "status", "flags"], "u-hn0", NOW, 10)
    assert cols == {"hostname": ["hn0", "cn0"], "status": ["running", "unreachable"],
                    "flags": [server_flags_of(HN), server_flags_of(CN)]}


def server_flags_of(server):
    from sdcadm.model import server_flags
    return server_flags(server, "u-hn0")


def test_every_field_has_a_value():
    cols = server_columns([HN, CN], SERVER_FIELDS, "u-hn0", NOW, 10)
    assert list(cols) == SERVER_FIELDS
    assert cols["primary"] == [True, False]
    assert cols["heartbeat_age"] == [3.0, None] and cols["last_heartbeat"] == [NOW - 3, None]
    assert cols["agent_url"] == ["http://10.0.0.1:5309", None]


def test_an_unknown_field_is_a_bug_not_a_column():
    with pytest.raises(ValueError, match="not a server field"):
        server_columns([HN], ["generation"], None, NOW, 10)

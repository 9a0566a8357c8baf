"""Which copy `service restore` seeds from, and the RPO limit (issue 8 item 7).

The pure choice (``procedures/planning/freshest.py``), a peer agent's answer
read as the remote input it is, ``restore.max_data_age`` read from the
configuration, and ``RestoreServices.prepare`` over fakes: it asks the other
headnodes, plans a pull step before anything is fenced, and refuses data too
old before anything moves.
"""

import math

import pytest
from click.testing import CliRunner

from sdcadm.cli.main import cli
from sdcadm.config import load_config
from sdcadm.errors import ConfigError, Unreachable
from sdcadm.model import Server
from sdcadm.procedures.planning import (NotViable, PeerHoldings, check_data_age, choose_copy,
                                        freshest_summary, read_holdings, unreachable)
from sdcadm.procedures.restore import RestoreServices
from tests.unit.test_procedures_prepare import config  # noqa: F401 (a fixture)
from tests.unit.test_procedures_prepare import (ASSETS, HN0, HN1, NOW, SAPI, FakeAgents, FakeCopy,
                                                context)

HN2 = Server("22222222-2222-4222-8222-222222222222", "hn2", "127.0.0.3", headnode=True,
             last_heartbeat=NOW - 1, agent_port=5309)
HN3 = Server("33333333-3333-4333-8333-333333333333", "hn3", "127.0.0.4", headnode=True,
             last_heartbeat=NOW - 1, agent_port=5309)
UUID = SAPI.uuid


def row(age, instance=UUID, service="sapi", snapshot="20261130T065000Z", **extra):
    doc = {"service": service, "instance": instance, "alias": "sapi0", "source": "hn0",
           "snapshot": snapshot, "age": age, "bytes": 10, "status": "ok", "error": None,
           "last_success": NOW - age if isinstance(age, (int, float)) else 1.0,
           "last_attempt": NOW}
    doc.update(extra)
    return doc


def peer(hostname, *rows, server=HN2):
    return read_holdings(hostname, server.uuid, {"holdings": list(rows)})


# -- the choice ---------------------------------------------------------------------------------

def test_the_newest_copy_wins_and_every_newer_one_is_a_fallback():
    peers = [peer("hn2", row(3.0)), peer("hn3", row(20.0), server=HN3)]
    choice = choose_copy("sapi0", "sapi", UUID, 38.0, peers)
    assert (choice.source, choice.age, choice.here) == ("hn2", 3.0, False)
    assert [c.hostname for c in choice.pull] == ["hn2", "hn3"]     # hn3's 20 s beats our 38 s


def test_a_tie_goes_to_this_headnode():
    for peer_age in (38.0, 37.5, 40.0):   # within TIE_MARGIN, or older
        choice = choose_copy("sapi0", "sapi", UUID, 38.0, [peer("hn2", row(peer_age))])
        assert choice.here and choice.pull == () and choice.age == 38.0


def test_a_broken_or_missing_copy_here_is_skipped_for_a_peer_one():
    choice = choose_copy("sapi0", "sapi", UUID, None, [peer("hn2", row(300.0))])
    assert (choice.source, choice.here, choice.local_age) == ("hn2", False, None)


def test_broken_and_never_synced_peer_copies_are_not_copies():
    peers = [peer("hn2", row(None, last_success=None)),
             peer("hn3", {"service": "sapi", "instance": None, "status": "broken", "age": None},
                  server=HN3)]
    assert all(p.copies == () for p in peers) and all(p.error is None for p in peers)
    assert choose_copy("sapi0", "sapi", UUID, 38.0, peers).here


def test_unreachable_headnodes_are_listed_not_errors():
    peers = [unreachable("hn2", HN2.uuid, "connection refused"), peer("hn3", row(5.0), server=HN3)]
    choice = choose_copy("sapi0", "sapi", UUID, 38.0, peers)
    assert choice.source == "hn3"
    lines = freshest_summary([choice], peers, 600, "hn1")
    assert "headnode hn2 not asked for its copies: connection refused" in lines


def test_a_copy_of_another_service_with_the_same_uuid_is_not_taken():
    choice = choose_copy("sapi0", "sapi", UUID, 38.0, [peer("hn2", row(1.0, service="imgapi"))])
    assert choice.here


def test_zfs_keeps_our_copy_and_says_where_the_newer_one_is():
    choice = choose_copy("sapi0", "sapi", UUID, 38.0, [peer("hn2", row(3.0))], can_pull=False)
    assert choice.here and choice.pull == ()
    assert "not supported yet: to restore from it, run the restore on hn2" in choice.not_pulled


def test_zfs_with_no_copy_here_says_where_to_run_the_restore():
    choice = choose_copy("sapi0", "sapi", UUID, None, [peer("hn2", row(3.0))], can_pull=False)
    with pytest.raises(NotViable, match="run the restore on hn2"):
        check_data_age([choice], 600.0, accept=True)


def test_no_copy_anywhere_has_no_age():
    choice = choose_copy("sapi0", "sapi", UUID, None, [])
    assert choice.age is None and choice.source is None


# -- the RPO limit ------------------------------------------------------------------------------

def test_every_copy_too_old_is_refused_naming_instances_and_ages():
    old = [choose_copy("sapi0", "sapi", UUID, 900.0, [peer("hn2", row(700.0))]),
           choose_copy("napi0", "napi", ASSETS.uuid, 650.0, [])]
    with pytest.raises(NotViable) as e:
        check_data_age(old, 600.0, accept=False, here="hn1")
    assert "older than restore.max_data_age (600s)" in e.value.message
    assert "sapi0 (sapi): 700s old, on hn2" in e.value.message
    assert "napi0 (napi): 650s old, on hn1" in e.value.message
    assert "--accept-data-age" in e.value.hint


def test_accept_data_age_lets_old_copies_through_and_the_summary_says_so():
    old = [choose_copy("sapi0", "sapi", UUID, 900.0, [])]
    assert check_data_age(old, 600.0, accept=True) == old
    (line,) = freshest_summary(old, [], 600.0, "hn1")
    assert "900s old" in line and "OLDER than restore.max_data_age (600s): accepted" in line


def test_young_copies_pass():
    assert check_data_age([choose_copy("sapi0", "sapi", UUID, 5.0, [])], 600.0, False) == []


# -- a peer's answer is remote input ------------------------------------------------------------

@pytest.mark.parametrize("answer", [None, [], "holdings", 42, {"holdings": "all of them"},
                                    {"holdings": None}, {"nope": []}])
def test_an_answer_that_is_not_a_listing_is_ignored(answer):
    got = read_holdings("hn2", HN2.uuid, answer)
    assert got.reachable and got.copies == () and "not a restore-data listing" in got.error


@pytest.mark.parametrize("bad", [
    "a string", 7, None, [row(3.0)],
    row(-1.0), row(math.nan), row(math.inf), row(True), row("3"), row(1e12),
    row(3.0, last_success=None), row(3.0, last_success=-5), row(3.0, last_success="yesterday"),
    row(3.0, instance="not-a-uuid"), row(3.0, instance=42), row(3.0, service="../etc"),
    row(3.0, service=None), row(3.0, snapshot="../../etc"), row(3.0, snapshot="x" * 10_000),
    row(3.0, snapshot=".."), row(3.0, snapshot=5),
])
def test_malformed_rows_are_dropped_and_counted_never_trusted(bad):
    got = read_holdings("hn2", HN2.uuid, {"holdings": [bad]})
    assert got.copies == () and got.dropped == 1 and "not understood" in got.error
    assert choose_copy("sapi0", "sapi", UUID, 38.0, [got]).here


def test_the_same_instance_twice_counts_once_the_first_time():
    got = read_holdings("hn2", HN2.uuid, {"holdings": [row(3.0), row(0.0)]})
    assert [c.age for c in got.copies] == [3.0] and got.dropped == 1


def test_a_huge_answer_is_ignored_whole():
    got = read_holdings("hn2", HN2.uuid, {"holdings": [row(3.0)] * 100_001})
    assert got.copies == () and "over 100000" in got.error


def test_good_rows_survive_bad_neighbours():
    got = read_holdings("hn2", HN2.uuid, {"holdings": [row(-3.0, instance=ASSETS.uuid),
                                                       row(3.0)]})
    assert [c.instance for c in got.copies] == [UUID] and got.dropped == 1


# -- restore.max_data_age -----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-1", "0", "0.5", ".nan", ".inf", "1e12", "true", "soon"])
def test_max_data_age_out_of_range_is_refused(tmp_path, value):
    path = tmp_path / "sdcadm.yaml"
    path.write_text(f"restore: {{max_data_age: {value}}}\n")
    with pytest.raises(ConfigError, match="restore.max_data_age"):
        load_config(path, environ={})


def test_max_data_age_defaults_to_ten_minutes(tmp_path):
    (tmp_path / "sdcadm.yaml").write_text("")
    assert load_config(tmp_path / "sdcadm.yaml", environ={}).restore.max_data_age == 600.0


def test_restore_help_explains_accept_data_age():
    out = CliRunner().invoke(cli, ["service", "restore", "--help"]).output
    assert "--accept-data-age" in out and "restore.max_data_age" in out


# -- prepare over fakes --------------------------------------------------------------------------

class FakeClient:
    def __init__(self, answer):
        self.answer = answer

    def restore_data(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class PeerAgents(FakeAgents):
    def __init__(self, answers):
        super().__init__()
        self.answers, self.asked = answers, []

    def client(self, url, timeout=5.0):
        self.asked.append(url)
        return FakeClient(self.answers[url])


def url(server):
    return f"http://{server.admin_ip}:{server.agent_port}"


def prepared(config, answers, copies, accept=False):
    agents = PeerAgents(answers)
    ctx, _data = context(config, [SAPI], copies, servers=(HN0, HN1, HN2, HN3), agents=agents)
    proc = RestoreServices(all_services=True, dead=["hn0"], accept_data_age=accept)
    return proc, ctx, agents


def test_prepare_asks_the_other_live_headnodes_and_pulls_before_fencing(config):
    answers = {url(HN2): {"holdings": [row(3.0)]},
               url(HN3): Unreachable("the agent at hn3 does not answer")}
    proc, ctx, agents = prepared(config, answers,
                                 {UUID: FakeCopy(NOW - 38, "sync-7", {"snapshot": "sync-7"})})
    assert proc.prepare(ctx) is True
    assert sorted(agents.asked) == sorted([url(HN2), url(HN3)])     # not hn0 (dead), not us
    assert [s.name for s in proc.steps()] == ["pull sapi0's copy from hn2", "fence hn0",
                                              "restore level 1: sapi"]
    summary = proc.summarize()
    assert any("data of sapi0 (sapi): 3s old, from hn2: pulled here first" in line
               and "ours: 38s old" in line for line in summary), summary
    assert any(line.startswith("headnode hn3 not asked") for line in summary), summary
    assert any("dataset copy 20261130T065000Z as of 3s ago" in line for line in summary), summary


def test_prepare_refuses_data_too_old_before_anything_moves(config):
    answers = {url(HN2): {"holdings": [row(700.0)]}, url(HN3): {"holdings": []}}
    copies = {UUID: FakeCopy(NOW - 900, "sync-7", {"snapshot": "sync-7"})}
    proc, ctx, _ = prepared(config, answers, copies)
    with pytest.raises(NotViable, match="sapi0 \\(sapi\\): 700s old, on hn2"):
        proc.prepare(ctx)                 # FakeStore has no write: nothing could have moved
    proc, ctx, _ = prepared(config, answers, copies, accept=True)
    assert proc.prepare(ctx) is True
    assert proc.steps()[0].name == "pull sapi0's copy from hn2"


def test_prepare_keeps_its_own_copy_when_no_peer_is_newer(config):
    answers = {url(HN2): {"holdings": [row(30.0)]}, url(HN3): "garbage"}
    proc, ctx, _ = prepared(config, answers,
                            {UUID: FakeCopy(NOW - 30, "sync-7", {"snapshot": "sync-7"})})
    assert proc.prepare(ctx) is True
    assert [s.name for s in proc.steps()] == ["fence hn0", "restore level 1: sapi"]
    summary = proc.summarize()
    assert "data from hn1 (this headnode, the newest copy of each): sapi0 30s old" in summary
    assert "headnode hn3: its answer is not a restore-data listing (ignored)" in summary


def test_peer_holdings_are_frozen_records():
    with pytest.raises(AttributeError):
        PeerHoldings("hn2", HN2.uuid, True).reachable = False


# -- the answer on the wire ---------------------------------------------------------------------

def serve_once(body):
    """A one-shot HTTP server answering ``body`` (bytes) with 200; its URL."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.recv(4096)
        try:
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass                    # the client stopped reading: what is tested
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}"


def test_a_huge_answer_is_refused_not_read_whole():
    from sdcadm.errors import AgentError
    from sdcadm.procedures.agent_client import AgentClient

    client = AgentClient(serve_once(b"[" + b"0," * 600_000 + b"0]"), "token", timeout=5)
    with pytest.raises(AgentError, match="over 1000000 bytes"):
        client._call("GET", "/v1/restore-data", limit=1_000_000)


def test_an_answer_nested_too_deeply_is_garbage_not_a_crash():
    from sdcadm.procedures.agent_client import AgentClient

    answer = AgentClient(serve_once(b"[" * 100_000 + b"]" * 100_000), "t", timeout=5).restore_data()
    assert answer is None
    assert "not a restore-data listing" in read_holdings("hn2", HN2.uuid, answer).error

"""`store recover` and `store status`: the pure decisions, and every bad input
(a tampered, truncated or forged snapshot or manifest, a path traversal, a
snapshot of another cluster) refused with the reason and nothing changed."""

import hashlib
import json
import os
import shutil

import pytest

from sdcadm.config import config_from
from sdcadm.errors import ConfigError, LabError
from sdcadm.fsutil import canonical_json
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.store_plan import (Candidate, choose_snapshot, quorum_problem,
                                                   usable)
from sdcadm.restore_data.manifest import ManifestError
from sdcadm.restore_data.store_snapshot import (MANIFEST, check_store_copy,
                                                parse_store_manifest, seal_store_manifest,
                                                snapshot_name)

KEY = b"k" * 32
NOW = 2_000_000.0


def snapshot_bytes(size=8192, seed=b"x"):
    """etcd's snapshot format: a database, then the sha256 of it."""
    db = (seed * size)[:size]
    return db + hashlib.sha256(db).digest()


def manifest(data, revision=10, taken=NOW - 30, cluster="abc", key=KEY, **over):
    sha = hashlib.sha256(data).hexdigest()
    doc = {"backend": "etcd", "file": snapshot_name(revision, sha), "bytes": len(data),
           "sha256": sha, "revision": revision, "cluster_id": cluster, "member_id": "1",
           "endpoint": "127.0.0.1:2379", "taken": taken, "dc_revision": 3, "prefix": "/sdcadm/",
           "receiver": {"server_uuid": "u", "hostname": "hn2"}}
    doc.update(over)
    return seal_store_manifest(doc, key)


def write_copy(directory, data, doc):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / doc["file"]).write_bytes(data)
    (directory / MANIFEST).write_text(canonical_json(doc))
    return directory / doc["file"]


def cand(host, revision, taken=NOW - 10, local=False, cluster="abc", problem=None):
    m = {"revision": revision, "taken": taken, "cluster_id": cluster, "bytes": 1}
    return Candidate(host, local, m, problem)


# -- choosing ---------------------------------------------------------------------------

def test_the_newest_revision_wins_and_at_equal_revision_this_headnodes_own():
    got = choose_snapshot([cand("hn2", 5, local=True), cand("hn0", 9), cand("hn1", 7)],
                          NOW, 600)
    assert got.headnode == "hn0"
    got = choose_snapshot([cand("hn0", 9, taken=NOW - 1), cand("hn2", 9, local=True)], NOW, 600)
    assert got.headnode == "hn2"


def test_no_snapshot_anywhere_is_refused_with_each_reason():
    with pytest.raises(NotViable, match="no good snapshot") as e:
        choose_snapshot([Candidate("hn2", True, problem="no snapshot in /x/store"),
                         Candidate("hn0", False, problem="unreachable: connection refused")],
                        NOW, 600)
    assert "hn2: no snapshot in /x/store" in e.value.message
    assert "hn0: unreachable" in e.value.message
    assert "--from-snapshot" in e.value.hint


def test_a_snapshot_older_than_the_limit_is_refused_unless_forced():
    old = [cand("hn2", 5, taken=NOW - 4000, local=True)]
    with pytest.raises(NotViable, match="4000s old, older than the limit of 900s") as e:
        choose_snapshot(old, NOW, 900)
    assert "--force" in e.value.hint
    assert choose_snapshot(old, NOW, 900, force=True).revision == 5


def test_a_snapshot_of_another_cluster_is_refused():
    good, refused = usable([cand("hn0", 50, cluster="other"), cand("hn2", 5, local=True)],
                           cluster_id="abc")
    assert [c.headnode for c in good] == ["hn2"]
    assert refused == [("hn0", "snapshot of etcd cluster other, not of this headnode's "
                               "cluster abc")]
    with pytest.raises(NotViable, match="not of this headnode's cluster"):
        choose_snapshot([cand("hn0", 50, cluster="other")], NOW, 600, force=True,
                        cluster_id="abc")


def test_a_store_with_a_quorum_is_refused_unless_forced():
    with pytest.raises(NotViable, match="still has a quorum") as e:
        quorum_problem({"a:1": False, "b:1": True})
    assert "b:1" in e.value.message and "--force" in e.value.hint
    assert quorum_problem({"a:1": False, "b:1": False}) is None
    assert quorum_problem({"b:1": True}, force=True) is None


# -- the manifest -----------------------------------------------------------------------

def test_a_good_manifest_reads_back():
    data = snapshot_bytes()
    doc = manifest(data)
    assert parse_store_manifest(canonical_json(doc).encode(), KEY, "m") == doc


@pytest.mark.parametrize("damage, problem", [
    (lambda raw: raw[: len(raw) // 2], "is truncated"),
    (lambda raw: b"", "is empty"),
    (lambda raw: b"[1, 2]", "is not a JSON object"),
    (lambda raw: raw.replace(b'"revision": 10', b'"revision": 11'), "was modified after"),
    (lambda raw: b" " * 70_000, "is over"),
])
def test_a_damaged_manifest_is_refused(damage, problem):
    raw = canonical_json(manifest(snapshot_bytes())).encode()
    with pytest.raises(ManifestError, match=problem):
        parse_store_manifest(damage(raw), KEY, "m")


def test_a_manifest_of_another_dc_or_unsigned_is_refused():
    raw = canonical_json(manifest(snapshot_bytes(), key=b"another DC's key")).encode()
    with pytest.raises(ManifestError, match="signature that does not match"):
        parse_store_manifest(raw, KEY, "m")
    doc = manifest(snapshot_bytes())
    del doc["signature"]
    with pytest.raises(ManifestError, match="signature"):
        parse_store_manifest(canonical_json(doc).encode(), KEY, "m")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "snapshot-1-abc/../x.db",
                                  "snapshot-1-0123456789ab.db/../../x"])
def test_a_manifest_naming_a_path_outside_its_directory_is_refused(name):
    data = snapshot_bytes()
    with pytest.raises(Exception, match="file"):
        manifest(data, file=name)        # never written
    doc = manifest(data)
    doc["file"] = name
    from sdcadm.restore_data.manifest import checksum, signature

    doc["signature"] = signature(doc, KEY)        # a forger holding the key
    doc["checksum"] = checksum(doc)
    with pytest.raises(ManifestError, match="is invalid"):
        parse_store_manifest(canonical_json(doc).encode(), KEY, "m")


# -- the snapshot file ------------------------------------------------------------------

def test_a_good_copy_passes(tmp_path):
    data = snapshot_bytes()
    doc = manifest(data)
    assert check_store_copy(write_copy(tmp_path, data, doc), doc) == []


def test_a_tampered_truncated_missing_or_linked_snapshot_is_refused(tmp_path):
    data = snapshot_bytes()
    doc = manifest(data)
    path = write_copy(tmp_path, data, doc)
    path.write_bytes(data[:100] + b"!" + data[101:])
    assert "does not match the manifest" in check_store_copy(path, doc)[0]
    path.write_bytes(data[:-10])
    assert f"{len(data) - 10} bytes, the manifest says {len(data)}" in \
        check_store_copy(path, doc)[0]
    path.unlink()
    assert "missing" in check_store_copy(path, doc)[0]
    other = tmp_path / "elsewhere.db"
    other.write_bytes(data)
    os.symlink(other, path)
    assert "not a regular file" in check_store_copy(path, doc)[0]


def test_a_snapshot_whose_database_does_not_match_etcds_own_hash_is_refused(tmp_path):
    """A manifest made over a broken file (it matches its sha256) still fails:
    etcd's trailing sha256 of the database is checked too."""
    data = snapshot_bytes()
    broken = data[:-1] + bytes([data[-1] ^ 1])
    doc = manifest(broken)
    problems = check_store_copy(write_copy(tmp_path, broken, doc), doc)
    assert "does not match the sha256 etcd appended" in problems[0]


# -- the candidates of this headnode ----------------------------------------------------

def headnode_config(tmp_path, backend="etcd", member=True, endpoints=None):
    key = tmp_path / "key"
    key.write_bytes(KEY)
    os.chmod(key, 0o600)
    store = {"backend": backend}
    if backend == "etcd":
        store["etcd_endpoints"] = endpoints or ["127.0.0.1:1"]
        if member:
            store["member"] = {"peer_url": "http://127.0.0.1:2", "data_dir": str(tmp_path / "etcd"),
                               "start_command": ["true"], "stop_command": ["true"]}
    else:
        store["path"] = str(tmp_path / "dc.sqlite")
    return config_from({"server_uuid": "11111111-1111-4111-8111-111111111111",
                        "hostname": "hn2", "restore_data_dir": str(tmp_path / "rd"),
                        "restore_data": {"key_file": str(key)}, "store": store}, "test")


def test_local_candidate_reads_this_headnodes_copy(tmp_path):
    from sdcadm.procedures.store_recover import local_candidate

    config = headnode_config(tmp_path)
    assert "no snapshot in" in local_candidate(config).problem
    data = snapshot_bytes()
    path = write_copy(tmp_path / "rd" / "store", data, manifest(data))
    got = local_candidate(config)
    assert got.problem is None and got.revision == 10 and got.path == str(path)
    (tmp_path / "rd" / "store" / MANIFEST).write_text("{")
    assert "truncated" in local_candidate(config).problem


def test_from_snapshot_needs_its_signed_manifest(tmp_path):
    from sdcadm.procedures.store_recover import from_path_candidate

    config = headnode_config(tmp_path)
    data = snapshot_bytes()
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "snap.db").write_bytes(data)
    assert "no manifest.json next to it" in from_path_candidate(config, loose / "snap.db").problem
    doc = manifest(data)
    path = write_copy(tmp_path / "copy", data, doc)
    shutil.copy(path, tmp_path / "copy" / "other.db")
    assert "names " + doc["file"] in from_path_candidate(config, tmp_path / "copy" / "other.db").problem
    assert from_path_candidate(config, path).problem is None
    assert from_path_candidate(config, tmp_path / "copy").problem is None


def test_recover_refuses_a_sqlite_store_and_a_member_it_does_not_know(tmp_path):
    from sdcadm.procedures.store_recover import StoreRecover

    with pytest.raises(NotViable, match="single sqlite file"):
        StoreRecover(headnode_config(tmp_path, backend="sqlite")).prepare()
    with pytest.raises(ConfigError, match="store.member.peer_url is not set"):
        StoreRecover(headnode_config(tmp_path, member=False)).prepare()


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed "
                    "(apt-get install etcd-client)")
def test_recover_with_no_snapshot_anywhere_is_refused_and_changes_nothing(tmp_path):
    """No member answers (nothing listens on the endpoint) and this headnode
    holds no snapshot, nor knows other headnodes: refused, nothing touched."""
    from sdcadm.procedures.store_recover import StoreRecover

    config = headnode_config(tmp_path)
    (tmp_path / "etcd").mkdir()
    (tmp_path / "etcd" / "member").write_text("old data")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(NotViable, match="no good snapshot of the store on any reachable "
                                        "headnode .hn2: no snapshot in"):
        StoreRecover(config).prepare()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# -- status rendering and the drill's options ---------------------------------------------

def test_status_of_a_sqlite_store_says_it_is_one_file(tmp_path):
    from sdcadm.cli.store import status_lines
    from sdcadm.procedures.store_recover import store_status

    doc = store_status(headnode_config(tmp_path, backend="sqlite"))
    assert doc["backend"] == "sqlite"
    lines = status_lines(doc)
    assert "single-file store" in lines[1] and "store.backend: etcd" in lines[1]


def test_status_lines_of_a_store_without_quorum():
    from sdcadm.cli.store import status_lines

    doc = {"backend": "etcd", "cluster_id": "abc", "quorum": False, "leader": None,
           "revision": 70, "db_size": 4096, "members": [], "max_snapshot_age": 900.0,
           "endpoints": [{"endpoint": "a:1", "reachable": True, "member_id": "9", "revision": 70,
                          "leader": None},
                         {"endpoint": "b:1", "reachable": False, "error": "connection refused"}],
           "snapshots": [{"headnode": "hn2", "ok": True, "revision": 60, "age_s": 30.0,
                          "cluster_id": "abc"},
                         {"headnode": "hn0", "ok": False, "problem": "unreachable"}]}
    text = "\n".join(status_lines(doc))
    assert "quorum:    NO (run `sdcadm store recover`" in text
    assert "a:1" in text and "leader NONE" in text and "b:1" in text and "UNREACHABLE" in text
    assert "hn2        revision 60" in text and "hn0        -- unreachable" in text
    json.dumps(doc)


def test_drill_lose_is_checked_before_anything_is_built():
    from sdcadm.lab.drill import check_lose, quorum_lost

    assert check_lose(None, 3) == ["hn0"]
    assert check_lose(["hn0", "hn1", "hn0"], 3) == ["hn0", "hn1"]
    with pytest.raises(LabError, match="not a headnode"):
        check_lose(["cn0"], 3)
    with pytest.raises(LabError, match="leaves no headnode"):
        check_lose(["hn0", "hn1", "hn2"], 3)
    assert quorum_lost(["hn0", "hn1"], 3) and not quorum_lost(["hn0"], 3)
    assert quorum_lost(["hn0", "hn1"], 4) and not quorum_lost(["hn0"], 4)


def test_lab_headnodes_say_how_their_member_starts_and_stops(tmp_path):
    from sdcadm.lab import ctl
    from sdcadm.lab.state import LabState

    servers = [{"hostname": f"hn{i}", "uuid": f"u{i}", "admin_ip": f"127.9.9.{i + 1}",
                "headnode": True} for i in range(3)]
    servers.append({"hostname": "cn0", "uuid": "u3", "admin_ip": "127.9.9.4", "headnode": False})
    state = LabState(dir=str(tmp_path), net="127.9.9.0/24", servers=servers, store="etcd")
    member = ctl.server_config(state, state.server("hn1"))["store"]["member"]
    assert member["name"] == "hn1" and member["peer_url"] == "http://127.9.9.2:2380"
    assert member["data_dir"] == str(tmp_path / "hn1" / "var" / "etcd")
    assert member["start_command"][-4:] == ["--dir", str(tmp_path), "start", "hn1"]
    assert member["stop_command"][-2:] == ["stop", "hn1"]
    assert "member" not in ctl.server_config(state, state.server("cn0"))["store"]
    config_from(ctl.server_config(state, state.server("hn1")), "lab hn1")  # a valid config


def test_recover_points_this_headnodes_config_at_the_new_member_and_keeps_the_old_file(tmp_path):
    import yaml

    from sdcadm.config import load_config
    from sdcadm.procedures.store_recover import StoreRecover

    path = tmp_path / "sdcadm.yaml"
    doc = {"hostname": "hn2", "store": {"backend": "etcd", "etcd_endpoints": ["a:1", "b:1", "c:1"],
                                        "member": {"peer_url": "http://c:2"}},
           "agent": {"port": 5310}}
    path.write_text(yaml.safe_dump(doc))
    os.chmod(path, 0o640)
    before = path.read_bytes()
    proc = StoreRecover(load_config(str(path), environ={}))
    assert proc._point_config_at("c:1") == str(path)
    got = yaml.safe_load(path.read_text())
    assert got["store"]["etcd_endpoints"] == ["c:1"]
    assert got["agent"] == {"port": 5310} and got["store"]["member"] == {"peer_url": "http://c:2"}
    assert (tmp_path / "sdcadm.yaml.pre-recover").read_bytes() == before
    assert os.stat(path).st_mode & 0o777 == 0o640
    after = path.read_bytes()
    proc._point_config_at("c:1")          # again: nothing changes, the first backup stays
    assert path.read_bytes() == after
    assert (tmp_path / "sdcadm.yaml.pre-recover").read_bytes() == before
    assert load_config(str(path), environ={}).store.etcd_endpoints == ["c:1"]

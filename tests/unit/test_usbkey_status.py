"""`sdcadm usbkey status`: every headnode's usbkey against this one's (pure parts)."""

from sdcadm.procedures.usbkey_status import compare, status_lines

A = {"sha256": "a" * 64, "size": 1, "mode": 0o644}
B = {"sha256": "b" * 64, "size": 1, "mode": 0o644}


def test_each_headnode_ok_drifted_or_unreachable_file_by_file():
    reference = {"catalog/core-services.yaml": A, "secrets/agent-token": A}
    rows = compare(reference, {
        "hn1": dict(reference),
        "cn0": {"catalog/core-services.yaml": B, "images/x.json": A},
        "hn2": "ssh to 10.0.0.3: connection refused",
    })
    assert [(r["headnode"], r["state"]) for r in rows] == [
        ("cn0", "drift"), ("hn1", "ok"), ("hn2", "unreachable")]
    assert rows[0]["drift"] == [{"file": "catalog/core-services.yaml", "change": "changed"},
                                {"file": "images/x.json", "change": "extra"},
                                {"file": "secrets/agent-token", "change": "missing"}]
    doc = {"reference": {"headnode": "hn0", "dir": "/usbkey", "files": 2}, "headnodes": rows}
    assert status_lines(doc) == [
        "reference: hn0:/usbkey (2 file(s))",
        "  cn0        DRIFT: 3 file(s)",
        "    changed  catalog/core-services.yaml",
        "    extra    images/x.json",
        "    missing  secrets/agent-token",
        "  hn1        ok",
        "  hn2        UNREACHABLE: ssh to 10.0.0.3: connection refused"]

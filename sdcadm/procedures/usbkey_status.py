"""``sdcadm usbkey status``: whether every headnode's usbkey matches this one's.

This headnode's usbkey directory (``usbkey_dir``) is the reference (a new
headnode is seeded from it: ``server headnode-setup``). Every other headnode
of the DC store is asked over SSH (host keys checked, as every transfer
between servers) for the file table of its own usbkey directory
(``sdcadm usbkey ls -j`` run there: names, sizes, modes and sha256); the
differences are listed file by file (``bundle.drift``: missing, extra,
changed, mode). A headnode that cannot be asked is said so, with the reason.
Nothing is changed. The headnodes are asked at once (one SSH login each).
"""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sdcadm.errors import SdcadmError

OK, DRIFT, UNREACHABLE = "ok", "drift", "unreachable"


def compare(reference, tables):
    """Rows ``{"headnode", "state", "drift", "error"}`` (pure): ``tables`` maps
    a headnode to its file table, or to an error text."""
    from sdcadm.usbkey.bundle import drift

    rows = []
    for host, table in sorted(tables.items()):
        if isinstance(table, str):
            rows.append({"headnode": host, "state": UNREACHABLE, "drift": [], "error": table})
            continue
        changes = drift(reference, table)
        rows.append({"headnode": host, "state": DRIFT if changes else OK, "drift": changes,
                     "error": None})
    return rows


def remote_table(config, server, transport_for, remote_sdcadm):
    """The file table of ``server``'s usbkey directory (over SSH), or an error text."""
    from sdcadm.restore_data.sources import source_root

    usbkey = Path(source_root(config, server)) / config.usbkey_dir.lstrip("/")
    try:
        with transport_for(server) as t:
            out = t.run([remote_sdcadm, "usbkey", "ls", "--dir", str(usbkey), "-j"],
                        timeout=120).stdout
        return json.loads(out)["files"]
    except SdcadmError as e:
        return e.message
    except (ValueError, KeyError, TypeError):
        return "`sdcadm usbkey ls` there answered something that is not its file table"


def usbkey_status(config, store, transport_for, remote_sdcadm):
    """The report (a JSON-able dict) and whether every headnode matches."""
    from sdcadm.usbkey.bundle import scan

    here = Path(config.under_root(config.usbkey_dir))
    reference = scan(here)[0]
    me = config.server_uuid
    others = [s for s in store.list_servers() if s.headnode and s.uuid != me]
    # Every headnode at once: each answer is an SSH login and a scan there.
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(others)))) as pool:
        tables = dict(zip((s.hostname for s in others), pool.map(
            lambda s: remote_table(config, s, transport_for, remote_sdcadm), others)))
    rows = compare(reference, tables)
    return {"reference": {"headnode": config.hostname, "dir": str(here),
                          "files": len(reference)},
            "headnodes": rows, "ok": all(r["state"] == OK for r in rows)}


def status_lines(doc):
    """Lines for people (pure)."""
    ref = doc["reference"]
    lines = [f"reference: {ref['headnode']}:{ref['dir']} ({ref['files']} file(s))"]
    for r in doc["headnodes"]:
        if r["state"] == OK:
            lines.append(f"  {r['headnode']:<10} ok")
        elif r["state"] == UNREACHABLE:
            lines.append(f"  {r['headnode']:<10} UNREACHABLE: {r['error']}")
        else:
            lines.append(f"  {r['headnode']:<10} DRIFT: {len(r['drift'])} file(s)")
            lines += [f"    {c['change']:8} {c['file']}" for c in r["drift"]]
    if not doc["headnodes"]:
        lines.append("  (no other headnode)")
    return lines

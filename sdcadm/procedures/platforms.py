"""What the headnodes hold of the platforms, asked over SSH; `sdcadm platform ls`.

Every other headnode of the DC store is asked (SSH, host keys checked, all at
once) with ``sdcadm platform held -j`` run there on the usbkey directory under
its root, as ``usbkey status`` asks for its file table; this headnode reads
its own. A headnode that cannot be asked is said so, with the reason.
"""

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sdcadm.errors import SdcadmError

ASK_TIMEOUT = 300.0


def remote_usbkey(config, server):
    """``server``'s usbkey directory, as this headnode reaches its files."""
    from sdcadm.restore_data.sources import source_root

    return Path(source_root(config, server)) / config.usbkey_dir.lstrip("/")


def remote_held(config, server, transport_for, remote_sdcadm, versions=(), verify=False):
    """``server``'s held entries (``sdcadm platform held -j`` run there over
    SSH), or the text of what went wrong."""
    argv = [remote_sdcadm, "platform", "held", "--dir", str(remote_usbkey(config, server)),
            "-j", *(["--verify"] if verify else []), *versions]
    try:
        with transport_for(server) as t:
            out = t.run(argv, timeout=ASK_TIMEOUT).stdout
        return parse_held(out)
    except SdcadmError as e:
        return e.message
    except ValueError as e:
        return f"`sdcadm platform held` there answered something else than its platforms: {e}"


def parse_held(text):
    """The entries of ``platform held -j`` output, checked for shape (pure)."""
    doc = json.loads(text)
    if not isinstance(doc, list) or not all(
            isinstance(e, dict) and isinstance(e.get("version"), str)
            and e.get("state") in ("ok", "missing", "damaged") for e in doc):
        raise ValueError("not a list of {version, state, ...}")
    return doc


def ask_headnodes(config, servers, transport_for, remote_sdcadm, versions=(), verify=False):
    """hostname -> held entries or error text, every headnode asked at once."""
    if not servers:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(servers))) as pool:
        answers = pool.map(lambda s: remote_held(config, s, transport_for, remote_sdcadm,
                                                 versions, verify), servers)
        return dict(zip((s.hostname for s in servers), answers))


def this_hostname(config, servers):
    """This server's hostname: configured, else its record's, else the system's."""
    if config.hostname:
        return config.hostname
    mine = [s.hostname for s in servers if s.uuid == config.server_uuid]
    return mine[0] if mine else socket.gethostname()


def listing(config, store, transport_for, remote_sdcadm):
    """``{"platforms": rows, "unreachable": [{"headnode", "error"}]}``: what
    every headnode holds (``planning/platform_plan.listing_rows``) and which
    servers boot which platform."""
    from sdcadm.procedures.planning.platform_plan import listing_rows
    from sdcadm.usbkey.platform import held

    servers = store.list_servers()
    others = [s for s in servers if s.headnode and s.uuid != config.server_uuid]
    holdings = ask_headnodes(config, others, transport_for, remote_sdcadm)
    holdings[this_hostname(config, servers)] = held(config.under_root(config.usbkey_dir))
    return {"platforms": listing_rows(holdings, servers),
            "unreachable": [{"headnode": h, "error": e} for h, e in sorted(holdings.items())
                            if isinstance(e, str)]}

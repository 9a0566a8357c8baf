"""`sdcadm usbkey ...`: the headnode bundle (usbkey-base.tgz) and this headnode's usbkey."""

import json
import socket

import click

from sdcadm.cli.context import pass_state
from sdcadm.errors import ReportedFailure


@click.group("usbkey")
def usbkey():
    """The usbkey: what makes a server a headnode, and its bundle.

    Every headnode keeps a usbkey directory (config usbkey_dir): the core
    services' images, the platforms, the DC-wide configuration, the catalog
    and the DC's secrets. `build` packs it into usbkey-base.tgz with the
    sha256 of every file; `verify` checks a bundle; `seed` replaces this
    server's usbkey directory with a bundle's content, atomically.
    """


_DIR_OPTION = click.option("--dir", "directory", metavar="DIR",
                           help="The usbkey directory (default: usbkey_dir of the configuration).")


def _usbkey_dir(state, directory):
    return directory or state.config.under_root(state.config.usbkey_dir)


def _print(doc, as_json, lines):
    if as_json:
        click.echo(json.dumps(doc, sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


def _summary(manifest):
    files = manifest["files"]
    return f"{len(files)} file(s), {sum(e['size'] for e in files.values())} bytes"


@usbkey.command("build")
@_DIR_OPTION
@click.option("-o", "--output", "out", metavar="FILE", help="Where to write the bundle "
              "(default: <root>/var/sdcadm/usbkey-base.tgz). Mode 0600: it holds the DC's "
              "secrets.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_state
def build_cmd(state, directory, out, as_json):
    """Pack this headnode's usbkey directory into a headnode bundle."""
    from sdcadm.usbkey.bundle import BUNDLE_NAME, PARTS, build

    source = _usbkey_dir(state, directory)
    out = out or state.config.under_root(f"/var/sdcadm/{BUNDLE_NAME}")
    manifest, left_out = build(source, out, source=state.config.hostname or socket.gethostname())
    lines = [f"wrote {out}: {_summary(manifest)} from {source}"]
    if left_out:
        lines.append(f"left out (not a part of a usbkey: {', '.join(PARTS)}): "
                     f"{', '.join(left_out)}")
    _print({"bundle": str(out), "manifest": manifest, "left_out": left_out}, as_json, lines)


@usbkey.command("verify")
@click.argument("bundle_file", metavar="FILE")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def verify_cmd(bundle_file, as_json):
    """Check a headnode bundle: every member against its manifest.

    Refuses (exit 1, saying what and where) a bundle with a member that is
    not in the manifest, does not match its sha256 or size, is a link or a
    device, has an unsafe name (absolute, ..), or is missing; a truncated or
    damaged archive too.
    """
    from sdcadm.usbkey.bundle import verify

    manifest = verify(bundle_file)
    _print({"bundle": bundle_file, "ok": True, "manifest": manifest}, as_json,
           [f"{bundle_file}: ok, {_summary(manifest)} (from {manifest.get('source')})"])


@usbkey.command("seed")
@click.argument("bundle_file", metavar="FILE")
@click.option("--dir", "directory", metavar="DIR", help="The usbkey directory to replace "
              "(default: usbkey_dir of the configuration).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before replacing it.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def seed_cmd(state, bundle_file, directory, yes, as_json):
    """Replace this server's usbkey directory with a bundle's content.

    The bundle is checked member by member while it is extracted beside the
    usbkey directory; only a bundle that checks out whole replaces it, in
    one atomic rename. Anything refused leaves the usbkey directory as it was.
    """
    from sdcadm.usbkey.bundle import seed

    target = _usbkey_dir(state, directory)
    if not yes:
        click.confirm(f"replace {target} with the content of {bundle_file}?", abort=True,
                      err=True)
    manifest = seed(bundle_file, target)
    _print({"bundle": bundle_file, "dir": target, "manifest": manifest}, as_json,
           [f"seeded {target} from {bundle_file}: {_summary(manifest)}"])


@usbkey.command("diff")
@click.argument("bundle_file", metavar="FILE")
@_DIR_OPTION
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@pass_state
def diff_cmd(state, bundle_file, directory, as_json):
    """Where this server's usbkey directory differs from a bundle, file by file.

    Each file is missing (in the bundle, not here), extra (here only),
    changed (content) or mode. Exit 1 when anything differs.
    """
    from sdcadm.usbkey.bundle import drift, scan, verify

    target = _usbkey_dir(state, directory)
    manifest = verify(bundle_file)
    changes = drift(manifest["files"], scan(target)[0])
    _print({"bundle": bundle_file, "dir": target, "drift": changes}, as_json,
           [f"{c['change']:8} {c['file']}" for c in changes]
           or [f"{target} matches {bundle_file}"])
    if changes:
        raise ReportedFailure(f"{len(changes)} file(s) differ")


@usbkey.command("ls")
@_DIR_OPTION
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the file table as JSON.")
@pass_state
def ls_cmd(state, directory, as_json):
    """The files of this server's usbkey directory: size, mode and sha256 of each.

    Only what a headnode bundle carries is listed (the rest is said to be left
    out). `usbkey status` on another headnode runs it here over SSH.
    """
    from sdcadm.usbkey.bundle import scan

    target = _usbkey_dir(state, directory)
    files, left_out = scan(target)
    _print({"dir": target, "files": files, "left_out": left_out}, as_json,
           [f"{e['sha256'][:16]}  {e['mode']:o}  {e['size']:>10}  {name}"
            for name, e in files.items()]
           + ([f"(left out: {', '.join(left_out)})"] if left_out else []))


@usbkey.command("status")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def status_cmd(state, as_json):
    """Whether every headnode's usbkey matches this headnode's, file by file.

    Every other headnode of the DC is asked over SSH (host keys checked) for
    the files of its usbkey directory; each difference is listed: missing
    (here, not there), extra (there only), changed (content) or mode. A
    headnode that cannot be asked is UNREACHABLE, with the reason. Changes
    nothing. Exit 1 on any drift or unreachable headnode; to repair one,
    seed it again: `sdcadm usbkey build`, copy the bundle, `sdcadm usbkey
    seed` there (docs/usbkey.md).
    """
    from sdcadm import sdcadm_program
    from sdcadm.procedures.usbkey_status import status_lines, usbkey_status
    from sdcadm.restore_data.peer_copy import ssh_transport

    config = state.config
    doc = usbkey_status(config, state.store,
                        lambda server: ssh_transport(config, server.admin_ip), sdcadm_program())
    _print(doc, as_json, status_lines(doc))
    if not doc["ok"]:
        bad = [r["headnode"] for r in doc["headnodes"] if r["state"] != "ok"]
        raise ReportedFailure(f"the usbkey of {', '.join(bad)} does not match")

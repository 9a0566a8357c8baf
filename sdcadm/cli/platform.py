"""`sdcadm platform ...`: the platform images every headnode keeps on its usbkey."""

import json

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.output import format_bytes, output_options, render
from sdcadm.cli.procedure import procedure_options, run
from sdcadm.errors import ReportedUnreachable


@click.group("platform")
def platform():
    """Platform images: what a headnode boots the other servers from.

    Every headnode keeps every platform on its usbkey, as
    platforms/VERSION/platform.tgz and its manifest.json (size, sha256), so
    that whichever headnode survives can boot the others. `install` puts one
    on every headnode; `ls` shows which headnode holds which, and which
    servers boot which. VERSION is the UTC time stamp of the build, like
    20240101T000000Z (docs/usbkey.md).
    """


@platform.command("install")
@click.argument("version")
@click.option("--from", "source", metavar="FILE", type=click.Path(dir_okay=False),
              help="The platform file (platform-VERSION.tgz) to put on this headnode's usbkey "
                   "first. Without it, this headnode must already hold VERSION.")
@click.option("--skip-unreachable", is_flag=True,
              help="Install on the headnodes that answer even if some do not (they are "
                   "listed in the plan; run the same command again once they are back).")
@procedure_options
@pass_state
def install_cmd(state, version, source, skip_unreachable, run_options):
    """Put platform VERSION on every headnode's usbkey.

    With --from FILE the file is checked first (a gzip'd tar of regular
    files and directories with safe names, within size limits) and added to
    this headnode's usbkey; then each other headnode (flag H in `sdcadm
    server ls`) that lacks it, or holds a damaged copy, gets it over SSH
    (host keys checked), and its sha256 is verified there. A headnode that
    already holds it is left untouched, so running it again changes nothing;
    a failed run is finished by running the same command again. A headnode
    that holds another file under the same VERSION is refused; one that
    cannot be reached is refused unless --skip-unreachable (exit 3).
    It does not change what any server boots.
    """
    from sdcadm.procedures.platform_install import PlatformInstall
    from sdcadm.usbkey.platform import check_version

    check_version(version)
    run(state, [PlatformInstall(version, source, skip_unreachable=skip_unreachable)],
        run_options)


LS_COLUMNS = ["version", "size", "headnodes", "missing", "boot", "current"]


@platform.command("ls")
@output_options(LS_COLUMNS, LS_COLUMNS + ["sha256", "damaged"],
                formats={"size": format_bytes}, default_sort="version")
@pass_state
def ls_cmd(state, output):
    """Which headnode holds which platform, and which servers boot which.

    One row per platform held by a headnode or named by a server: HEADNODES
    hold it intact, MISSING lack it (`sdcadm platform install VERSION` fixes
    that), DAMAGED hold a copy that does not match its manifest (-o to show
    it), BOOT are the servers set to boot it and CURRENT those running it.
    Every other headnode is asked over SSH; one that cannot be is named on
    stderr and the exit status is 3.
    """
    from sdcadm import sdcadm_program
    from sdcadm.procedures.platforms import listing
    from sdcadm.restore_data.peer_copy import ssh_transport

    config = state.config
    doc = listing(config, state.store, lambda server: ssh_transport(config, server.admin_ip),
                  sdcadm_program())
    render(doc["platforms"], output)
    for u in doc["unreachable"]:
        click.echo(f"sdcadm: {u['headnode']} could not be asked: {u['error']}", err=True)
    if doc["unreachable"]:
        raise ReportedUnreachable("headnodes could not be asked")


_DIR_OPTION = click.option("--dir", "directory", metavar="DIR",
                           help="The usbkey directory (default: usbkey_dir of the "
                                "configuration).")


def _usbkey_dir(state, directory):
    return directory or state.config.under_root(state.config.usbkey_dir)


@platform.command("held")
@click.argument("versions", nargs=-1, metavar="[VERSION]...")
@_DIR_OPTION
@click.option("--verify", is_flag=True,
              help="Read each platform file and check its sha256 (else its size only).")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@pass_state
def held_cmd(state, versions, directory, verify, as_json):
    """The platforms this server's usbkey holds (all, or the VERSIONs named).

    Each is ok, damaged (with the reason) or missing (named, not held).
    `platform install` and `platform ls` on another headnode run it here
    over SSH.
    """
    from sdcadm.usbkey.platform import check_version, held

    for version in versions:
        check_version(version)
    entries = held(_usbkey_dir(state, directory), list(versions) or None, verify=verify)
    if as_json:
        click.echo(json.dumps(entries, sort_keys=True))
        return
    for e in entries:
        size = e["size"] if e["size"] is not None else "-"
        problem = f"  {e['problem']}" if e["problem"] else ""
        click.echo(f"{e['version']:<18}  {e['state']:<8}  {size:>12}  "
                   f"{(e['sha256'] or '-')[:16]:<16}{problem}".rstrip())


@platform.command("add")
@click.argument("version")
@click.argument("platform_file", metavar="FILE", type=click.Path(dir_okay=False))
@_DIR_OPTION
@click.option("--sha256", "sha256", metavar="HEX",
              help="The sha256 the file must have (refused otherwise).")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def add_cmd(state, version, platform_file, directory, sha256, as_json):
    """Put a platform file on this server's usbkey only, checked and atomically.

    The building block `platform install` runs on each headnode over SSH;
    to put a platform on the DC's headnodes, use `sdcadm platform install`.
    Holding VERSION with the same content already changes nothing; a
    damaged copy is replaced; another file under VERSION is refused.
    """
    from sdcadm.usbkey.platform import add

    target = _usbkey_dir(state, directory)
    result = add(target, version, platform_file, sha256=sha256)
    if as_json:
        click.echo(json.dumps({"dir": str(target), **result}, sort_keys=True))
    else:
        click.echo(f"{target}: platform {version} " + (
            "already there" if not result["changed"] else
            "replaced its damaged copy" if result["replaced"] else "added")
            + f" ({result['size']} bytes, sha256 {result['sha256'][:16]}...)")

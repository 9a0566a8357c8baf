"""`sdcadm image import|ls`: the images core-service instances are made from."""

import json

import click

from sdcadm.cli.context import pass_state
from sdcadm.cli.output import format_bytes, output_options, render


@click.group("image")
def image():
    """Images of the core services: import them, list them."""


@image.command("import")
@click.argument("records", metavar="RECORD...", nargs=-1, required=True)
@click.option("--file", "image_file", metavar="FILE",
              help="The image file (default: <uuid>.file beside RECORD; one RECORD only).")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="Print the images as JSON, one per line.")
@pass_state
def import_cmd(state, records, image_file, as_json):
    """Add images to the DC from their records (<uuid>.json) and files.

    Each file must have its record's size and sha256, be a tarball whose
    every entry is safe to unpack, and hold a manifest naming the record's
    name and version; an image built on another (origin) needs that one
    imported first (earlier on the command line will do). Both files are
    copied into this server's image_source, then the record is added to the
    DC store. Importing the same image again changes nothing; another file
    under an existing UUID is refused. Records are imported in order: the
    first refused stops the run, the ones before it stay imported.
    """
    from sdcadm.errors import UsageError
    from sdcadm.images import import_image

    if image_file is not None and len(records) > 1:
        raise UsageError("--file names the file of one image: import the others apart",
                         hint="or leave --file out: each <uuid>.file beside its record")
    directory = state.config.under_root(state.config.image_source)
    for record in records:
        img, already = import_image(state.store, directory, record, image_file)
        if as_json:
            click.echo(json.dumps(dict(img.to_dict(), already=already), sort_keys=True))
        else:
            click.echo(f"image {img.name} {img.version} ({img.uuid}) "
                       + ("was already imported" if already else f"imported into {directory}"))


@image.command("ls")
@output_options(["uuid", "name", "version", "size", "origin"],
                ["uuid", "name", "version", "size", "origin", "sha256"],
                formats={"size": format_bytes}, default_sort="name,version")
@pass_state
def ls(state, output):
    """List the images of the DC store."""
    render([i.to_dict() for i in state.store.list_images()], output)

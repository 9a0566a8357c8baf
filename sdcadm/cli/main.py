"""The ``sdcadm`` command: the top-level group, its subcommands, and main().

Subcommands are registered by name in ``COMMANDS`` and imported only when
they run (or when help lists them), so ``sdcadm server ls`` never pays for
what ``lab`` or ``service migrate`` import. A registered module that does not
exist (yet) is left out of the CLI.

``main()`` is the only place that turns exceptions into exit codes:
0 ok, 1 error, 2 usage, 3 some servers unreachable (``Unreachable``),
130 interrupted: commands raise, the class of the exception carries the code.
An SdcadmError prints ``sdcadm: error: <message>`` (and its hint) on stderr,
with a traceback only under ``--debug`` -- unless the command already printed
what went wrong (``reported``).
"""

import gc
import importlib
import importlib.util
import logging
import sys

import click

from sdcadm import __version__
from sdcadm.cli.context import AppState
from sdcadm.errors import SdcadmError

# name -> "module:attribute" of a click command or group.
COMMANDS = {
    "server": "sdcadm.cli.server:server",
    "insts": "sdcadm.cli.insts:insts",
    "svcs": "sdcadm.cli.insts:svcs",
    "check-health": "sdcadm.cli.health:check_health",
    "lab": "sdcadm.cli.lab:lab",
    "task": "sdcadm.cli.task:task",
    "instance": "sdcadm.cli.instance:instance",
    "service": "sdcadm.cli.service:service",
    "restore-data": "sdcadm.cli.restore_data:restore_data",
    "usbkey": "sdcadm.cli.usbkey:usbkey",
    "platform": "sdcadm.cli.platform:platform",
    "status": "sdcadm.cli.status:status",
    "image": "sdcadm.cli.image:image",
    "create": "sdcadm.cli.create:create",
    "post-setup": "sdcadm.cli.post_setup:post_setup",
    "dc": "sdcadm.cli.dc:dc",
    "store": "sdcadm.cli.store:store",
}

EXIT_INTERRUPTED = 130


def _module_exists(target):
    module = target.split(":", 1)[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy_commands=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx):
        lazy = {name for name, target in self.lazy_commands.items() if _module_exists(target)}
        return sorted(set(self.commands) | lazy)

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        target = self.lazy_commands.get(name)
        if target is None or not _module_exists(target):
            return None
        module, attr = target.split(":", 1)
        command = getattr(importlib.import_module(module), attr)
        self.commands[name] = command
        return command


class SdcadmGroup(LazyGroup):
    """The top-level group; its ``main`` maps exceptions to exit codes."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        state = extra.setdefault("obj", AppState())
        try:
            code = self._run(state, args, prog_name, complete_var, extra)
        finally:
            state.close()
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, state, args, prog_name, complete_var, extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except SdcadmError as e:
            if not e.reported:
                _report(state, e, str(e))
            return e.exit_code
        except click.exceptions.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                return EXIT_INTERRUPTED
            click.echo("sdcadm: aborted", err=True)
            return 1
        except click.exceptions.NoArgsIsHelpError as e:  # a group without its subcommand
            e.show()
            return e.exit_code
        except click.UsageError as e:
            _report(state, e, e.format_message())
            if e.ctx is not None:
                click.echo(f"  hint: see '{e.ctx.command_path} --help'", err=True)
            return e.exit_code
        except click.ClickException as e:
            _report(state, e, e.format_message())
            return e.exit_code
        except KeyboardInterrupt:
            click.echo(err=True)
            return EXIT_INTERRUPTED
        except Exception as e:  # a bug: say so briefly, full traceback with --debug
            _report(state, e, f"internal error: {type(e).__name__}: {e}")
            if not state.debug:
                click.echo("  (this is a bug; run again with --debug for the traceback)", err=True)
            return 1
        # A command may return an exit code or call ctx.exit(code).
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _report(state, exc, text):
    if state.debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"sdcadm: error: {text}", err=True)


@click.group(
    "sdcadm", cls=SdcadmGroup, lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="sdcadm", message="%(prog)s %(version)s",
                      help="Print the version and exit.")
@click.option("-c", "--config", "config_path", metavar="PATH", default=None,
              help="Configuration file (default: $SDCADM_CONFIG, else /etc/sdcadm/sdcadm.yaml).")
@click.option("--debug", is_flag=True,
              help="Log debug messages and show tracebacks for errors (on stderr).")
@click.pass_context
def cli(ctx, config_path, debug):
    """Headnode resilience and recovery: list, check, migrate and restore core services.

    Exit status: 0 ok, 1 error, 2 usage error, 3 some servers unreachable.
    """
    state = ctx.ensure_object(AppState)
    state.config_path, state.debug = config_path, debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                        format="sdcadm: %(levelname)s: %(name)s: %(message)s")


def main():
    """Console-script entry point (``sdcadm``)."""
    # A listing builds ~150,000 acyclic objects for 50,000 instances; the
    # default threshold (700) runs the cyclic GC hundreds of times over them
    # for nothing (~10% of `sdcadm insts` at that size). Collect far less often.
    gc.set_threshold(100_000, 50, 100)
    cli.main(prog_name="sdcadm")


if __name__ == "__main__":
    main()

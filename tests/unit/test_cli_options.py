"""Every number typed on a command line has a range: out of it, or not a
finite number, is a usage error (exit 2) naming the option, and nothing runs."""

import click
import pytest
from click.testing import CliRunner

from sdcadm.cli.main import cli
from sdcadm.cli.options import Seconds

CASES = [
    (["instance", "restart", "sapi0", "--timeout"], ["nan", "inf", "-1", "0", "1e9"]),
    (["service", "restore", "--all", "--timeout"], ["nan", "inf", "0.5", "1e308"]),
    (["service", "migrate", "hn0", "hn1", "--all", "--timeout"], ["nan", "-inf"]),
    (["service", "restore", "--all", "--lock-timeout"], ["nan", "-1", "inf"]),
    (["task", "ls", "--limit"], ["100000000000000000000000", "0"]),
]
# Commands that start real processes (lab up, drill, watch) are covered by
# the structural test below rather than run with values that might slip through.


@pytest.mark.parametrize("argv, value", [(a, v) for a, values in CASES for v in values])
def test_out_of_range_numbers_are_usage_errors(argv, value, monkeypatch, tmp_path):
    monkeypatch.setenv("SDCADM_CONFIG", str(tmp_path / "absent.yaml"))
    result = CliRunner().invoke(cli, [*argv, value])
    assert result.exit_code == 2, (argv, value, result.output)
    assert argv[-1] in result.output
    assert not list(tmp_path.iterdir())      # nothing ran, nothing was written


def every_option(command, path=(), ctx=None):
    """(command path, option) for every option of every sdcadm command
    (lazily loaded groups included)."""
    ctx = ctx or click.Context(command)
    for param in command.params:
        if isinstance(param, click.Option):
            yield " ".join(path), param
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            yield from every_option(sub, (*path, name), click.Context(sub, parent=ctx))


def test_every_number_option_of_every_command_is_bounded():
    numeric = []
    for where, option in every_option(cli):
        kind = option.type
        if isinstance(kind, (click.types.FloatParamType, click.types.IntParamType)):
            numeric.append(f"{where} {option.opts[0]}")
            assert isinstance(kind, (Seconds, click.IntRange)), \
                f"{where} {option.opts[0]}: unbounded {kind.name}; use cli.options"
            assert kind.min is not None and kind.max is not None, f"{where} {option.opts[0]}"
    assert "lab up --heartbeat-interval" in numeric and "task ls --limit" in numeric


@pytest.mark.parametrize("value, ok", [("1.5", True), ("0", True), ("86400", True), ("nan", False),
                                       ("inf", False), ("-inf", False), ("-0.1", False),
                                       ("86401", False), ("x", False)])
def test_seconds(value, ok):
    @click.command()
    @click.option("--t", type=Seconds(0))
    def command(t):
        click.echo(repr(t))

    result = CliRunner().invoke(command, ["--t", value])
    assert (result.exit_code == 0) is ok, result.output

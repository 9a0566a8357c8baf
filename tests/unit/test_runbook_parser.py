"""The reader of docs/operator-guide.md's runbooks (tests/runbooks.py): what
it takes from a document, and the clear failure a malformed one gets."""

import pytest

from tests.runbooks import (GUIDE, RUNBOOKS, Block, RunbookError, blocks, guide_runbooks,
                             runbooks, sh_commands)

DOC = """# Guide

Some prose.

```sh runbook=build on=hn0
sdcadm server ls            # a comment after the command stays: the shell drops it

# a comment line
sdcadm server setup cn1 \\
    -y
```

Output, not run:

```
sdcadm server ls
HOSTNAME ...
```

   ```sh runbook=build on=hn1
   sdcadm status
   ```

````sh runbook=ha on=hn0
sdcadm post-setup ha-binder -y
````
"""


def test_blocks_in_document_order_with_their_server_and_commands():
    found = blocks(DOC, known=("build", "ha"))
    assert found == [
        Block("build", "hn0", ("sdcadm server ls            # a comment after the command "
                               "stays: the shell drops it",
                               "sdcadm server setup cn1 -y"), 5),
        Block("build", "hn1", ("sdcadm status",), 20),
        Block("ha", "hn0", ("sdcadm post-setup ha-binder -y",), 24)]


def test_unmarked_blocks_are_not_read():
    assert blocks("```\nsdcadm server delete hn0\n```\n```sh\nrm -rf /\n```\n") == []


def test_runbooks_groups_blocks_by_name():
    got = runbooks(DOC, known=("build", "ha"))
    assert [b.on for b in got["build"]] == ["hn0", "hn1"] and len(got["ha"]) == 1


@pytest.mark.parametrize("doc, message", [
    ("```sh runbook=nosuch on=hn0\nsdcadm status\n```\n", "unknown runbook 'nosuch'"),
    ("```sh runbook=build on=hn0\n\n# only a comment\n```\n",
     "line 1: runbook block holds no command"),
    ("```sh runbook=build\nsdcadm status\n```\n", "block without on=SERVER"),
    ("```sh runbook=build on=hn0 as=root\nsdcadm status\n```\n", "unknown option 'as'"),
    ("```sh runbook=build on=hn0 on=hn1\nsdcadm status\n```\n", "on= given twice"),
    ("```sh runbook=build on\nsdcadm status\n```\n", "'on' in the info string is not KEY=VALUE"),
    ("```runbook=build on=hn0\nsdcadm status\n```\n", "starts with its language, sh"),
    ("```bash runbook=build on=hn0\nsdcadm status\n```\n", "not 'bash'"),
    ("text\n```sh runbook=build on=hn0\nsdcadm status\n", "line 2: runbook block never closed"),
    ("```sh runbook=build on=hn0\nsdcadm server setup cn1 \\\n```\n",
     "ends on a continued line"),
    ("```sh runbook=build on=hn0\nsdcadm status\nHOSTNAME  UUID\n```\n",
     "'HOSTNAME  UUID' is not an sdcadm command"),
])
def test_a_malformed_block_is_refused_saying_where_and_why(doc, message):
    with pytest.raises(RunbookError, match=message.replace("(", r"\(").replace(")", r"\)")):
        blocks(doc, known=("build",))


def test_a_runbook_without_a_block_is_named():
    with pytest.raises(RunbookError, match="no runbook block for ha, status"):
        runbooks("```sh runbook=build on=hn0\nsdcadm status\n```\n",
                 known=("build", "ha", "status"))


def test_the_guide_holds_every_runbook():
    """docs/operator-guide.md itself: every runbook there, well formed, each
    command one the installed CLI knows (the integration test runs them)."""
    got = guide_runbooks()
    assert list(got) == list(RUNBOOKS)
    assert all(got[name] for name in RUNBOOKS)


def parses(argv):
    """The click command ``sdcadm ARGV`` names, its arguments parsed (a
    click.UsageError for an unknown command, option or missing argument)."""
    import click

    from sdcadm.cli.main import cli

    command, ctx, name, argv = cli, None, "sdcadm", list(argv)
    while isinstance(command, click.Group):
        ctx = click.Context(command, info_name=name, parent=ctx)
        if not argv:
            raise click.UsageError(f"`{name}` needs a subcommand", ctx)
        name, argv = argv[0], argv[1:]
        command = command.get_command(ctx, name)
        if command is None:
            raise click.UsageError(f"no such command {name!r}", ctx)
    command.make_context(name, argv, parent=ctx)
    return command


def test_every_runbook_command_is_one_the_cli_parses():
    """A typo in the guide (an unknown subcommand or option, a missing
    argument) is caught here in milliseconds, before any lab runs it."""
    import shlex

    for name, found in guide_runbooks().items():
        for block in found:
            for line in block.commands:
                argv = shlex.split(line, comments=True)[1:]
                try:
                    parses(argv)
                except Exception as e:  # noqa: BLE001 - reported with the line
                    pytest.fail(f"runbook {name} (line {block.line}): `{line}`: {e}")


def test_the_commands_no_lab_runs_parse_too():
    """The first headnode's commands (`dc init`, `image import`, `create`)
    are in an unmarked sh block: no lab runs them, the CLI still parses them."""
    import shlex

    lines = sh_commands(GUIDE.read_text())
    assert any(line.startswith("sdcadm dc init") for line in lines), lines
    for line in lines:
        try:
            parses(shlex.split(line, comments=True)[1:])
        except Exception as e:  # noqa: BLE001 - reported with the line
            pytest.fail(f"`{line}`: {e}")


def test_sh_commands_reads_sh_blocks_only():
    doc = ("```sh\nsdcadm dc init --admin-net 10.0.0.0/24\n```\n"
           "```\nsdcadm server ls   (an output example)\n```\n"
           "````sh runbook=build on=hn0\nsdcadm status\n```\nsdcadm still inside\n````\n")
    assert sh_commands(doc) == ["sdcadm dc init --admin-net 10.0.0.0/24", "sdcadm status",
                                "sdcadm still inside"]


def test_a_typo_in_a_command_is_caught():
    import click

    with pytest.raises(click.UsageError):
        parses(["server", "delete", "hn0", "--forse"])
    with pytest.raises(click.UsageError):
        parses(["server", "headnode-set", "cn0"])
    with pytest.raises(click.UsageError):
        parses(["service", "migrate", "hn0"])
    assert parses(["server", "delete", "hn0", "--force", "-y"]).name == "delete"

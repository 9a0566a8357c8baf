"""The runbooks of docs/operator-guide.md as data: the commands of each, in
order, read from the document itself, so that the test that runs them
follows the document (tests/integration/test_runbooks.py).

The convention (stated at the top of the guide): a fenced code block whose
info string is ``sh runbook=NAME on=SERVER`` holds commands of runbook NAME,
typed in a shell on SERVER (a server of the lab), one per line; blank lines
and lines starting with ``#`` are skipped, a line ending with ``\\`` goes on
on the next. A runbook may have several blocks: they run in the order of the
document, and what the operator does between them away from the keyboard
(powering a server off) is said in prose and done by the test. Every other
block (output examples, configuration) is not read.
"""

import re
from dataclasses import dataclass
from pathlib import Path

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "operator-guide.md"

# Every runbook the guide must have, each run by one integration test.
RUNBOOKS = ("build", "headnodes", "ha", "status", "decommission", "lost-headnode",
            "lost-quorum")

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


class RunbookError(ValueError):
    """The guide does not hold the runbooks as the convention says."""


@dataclass(frozen=True)
class Block:
    runbook: str
    on: str               # the server whose shell runs the commands
    commands: tuple       # each one command line, as typed
    line: int             # where the block starts in the document (1-based)


def _options(info, line):
    """The ``key=value`` words of a runbook block's info string."""
    words = info.split()
    if words[0] != "sh":
        raise RunbookError(f"line {line}: a runbook block's info string starts with its "
                           f"language, sh (```sh runbook=NAME on=SERVER), not {words[0]!r}")
    options = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not value:
            raise RunbookError(f"line {line}: {word!r} in the info string is not KEY=VALUE")
        if key not in ("runbook", "on"):
            raise RunbookError(f"line {line}: unknown option {key!r} (runbook=, on=)")
        if key in options:
            raise RunbookError(f"line {line}: {key}= given twice")
        options[key] = value
    if "on" not in options:
        raise RunbookError(f"line {line}: runbook {options['runbook']!r} block without "
                           "on=SERVER (the server whose shell runs it)")
    return options


def _commands(body, line):
    commands, pending = [], ""
    for text in body:
        text = text.strip()
        if not pending and (not text or text.startswith("#")):
            continue
        if text.endswith("\\"):
            pending += text[:-1].strip() + " "
            continue
        commands.append(pending + text)
        pending = ""
    if pending:
        raise RunbookError(f"line {line}: the block ends on a continued line (`\\`)")
    if not commands:
        raise RunbookError(f"line {line}: runbook block holds no command")
    for command in commands:
        if not command.startswith("sdcadm "):
            raise RunbookError(f"line {line}: {command!r} is not an sdcadm command "
                               "(prose or output in a runbook block?)")
    return tuple(commands)


def blocks(text, known=RUNBOOKS):
    """Every runbook block of the document ``text``, in order; RunbookError
    for a block that breaks the convention (an unknown runbook, no server, no
    command, a fence never closed)."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, info, start = opened.group(1), opened.group(2).strip(), i + 1
        end = next((j for j in range(i + 1, len(lines))
                    if lines[j].strip().startswith(fence[0] * len(fence))
                    and not lines[j].strip().strip(fence[0])), None)
        if "runbook=" in info:
            if end is None:
                raise RunbookError(f"line {start}: runbook block never closed")
            options = _options(info, start)
            if options["runbook"] not in known:
                raise RunbookError(f"line {start}: unknown runbook {options['runbook']!r} "
                                   f"(known: {', '.join(known)})")
            found.append(Block(options["runbook"], options["on"],
                               _commands(lines[i + 1:end], start), start))
        i = len(lines) if end is None else end + 1
    return found


def sh_commands(text):
    """Every ``sdcadm`` line of every ``sh`` block, marked or not: the
    commands of the guide that no lab runs are at least checked to parse."""
    found, closing, is_sh = [], None, False
    for line in text.splitlines():
        opened = _FENCE.match(line)
        if closing is None:
            if opened:
                closing, is_sh = opened.group(1), opened.group(2).split()[:1] == ["sh"]
            continue
        if opened and not opened.group(2).strip() and opened.group(1).startswith(closing):
            closing = None
        elif is_sh and line.strip().startswith("sdcadm "):
            found.append(line.strip())
    return found


def runbooks(text, known=RUNBOOKS):
    """``{name: [Block, ...]}`` for every runbook in ``known``; RunbookError
    when one has no block in the document."""
    found = blocks(text, known)
    missing = [name for name in known if not any(b.runbook == name for b in found)]
    if missing:
        raise RunbookError(f"no runbook block for {', '.join(missing)} "
                           "(```sh runbook=NAME on=SERVER)")
    return {name: [b for b in found if b.runbook == name] for name in known}


def guide_runbooks(path=GUIDE):
    return runbooks(Path(path).read_text())

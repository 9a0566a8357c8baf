"""How the runner talks to the operator: the plan, warnings and the question.

``info`` writes the plan and the outcome (stdout; stderr when stdout carries
JSON), ``warn`` writes to stderr, ``confirm`` asks on stderr and reads a line
from stdin. Streams are looked up at call time (so click's test runner and
redirections are honoured).
"""

import sys

from sdcadm.procedures.base import NeedsConfirmation


def stdin_is_terminal():
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


class Console:
    def __init__(self, info_to_stderr=False, interactive=None):
        self.info_to_stderr = info_to_stderr
        # None: ask stdin_is_terminal() when it matters.
        self.interactive = interactive

    def _write(self, stream, text):
        stream.write(text + "\n")
        stream.flush()

    def info(self, text=""):
        self._write(sys.stderr if self.info_to_stderr else sys.stdout, text)

    def warn(self, text):
        self._write(sys.stderr, text)

    def can_confirm(self):
        return stdin_is_terminal() if self.interactive is None else self.interactive

    def check_can_confirm(self):
        if not self.can_confirm():
            raise NeedsConfirmation(
                "this command changes the DC and asks for confirmation first, "
                "but stdin is not a terminal",
                hint="pass -y (--yes) to proceed without asking, or -n (--dry-run) to only "
                     "see the plan")

    def confirm(self, question="Would you like to continue? [y/N] "):
        """Ask; only an answer starting with y/Y is yes (end of input is no)."""
        self.check_can_confirm()
        sys.stdout.flush()
        sys.stderr.write(question)
        sys.stderr.flush()
        answer = sys.stdin.readline()
        if not answer.endswith("\n"):
            sys.stderr.write("\n")
        return answer.strip().lower() in ("y", "yes")


class QuietConsole(Console):
    """Says nothing and never asks (for library callers that pass yes=True)."""

    def info(self, text=""):
        pass

    def warn(self, text):
        pass

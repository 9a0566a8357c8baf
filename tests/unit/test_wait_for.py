"""The tests' one way to wait: ``wait_for`` polls a condition with a deadline."""

import pytest

from tests.conftest import wait_for


def test_returns_the_first_truthy_answer():
    answers = iter([None, 0, "", "ready", "later"])
    assert wait_for(lambda: next(answers), timeout=5, what="ready", interval=0) == "ready"


def test_fails_naming_what_never_happened():
    with pytest.raises(AssertionError, match="the pool to drain never happened"):
        wait_for(lambda: False, timeout=0, what="the pool to drain", interval=0)


def test_an_exception_is_not_yet_and_is_named_at_the_end():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("still starting")
        return len(calls)

    assert wait_for(flaky, timeout=5, interval=0) == 3

    def refused():
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(AssertionError, match="ConnectionRefusedError"):
        wait_for(refused, timeout=0, interval=0)

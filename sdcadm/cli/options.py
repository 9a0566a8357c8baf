"""Bounded number types for command-line options.

Every number an operator types has a range: an integer with no upper bound
ends up as an OverflowError deep in the store (``task ls --limit 10^23``),
and click's FloatRange lets ``nan`` and ``inf`` through (comparisons with NaN
are false). These refuse both with a usage error naming the option.
"""

import math

import click

DAY = 86400.0


class Seconds(click.FloatRange):
    """A finite number of seconds in [low, high]."""

    name = "seconds"

    def __init__(self, low=0.0, high=DAY, low_open=False):
        super().__init__(min=low, max=high, min_open=low_open)

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return super().convert(number, param, ctx)


def count(low=1, high=10_000):
    """A whole number in [low, high]."""
    return click.IntRange(min=low, max=high)

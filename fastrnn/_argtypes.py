"""Argument checks shared by the layers, the model, checkpoints and the command lines.

`check_int` and `check_number` take a value from Python code or a file; the
argparse types below parse a flag's text and apply the same checks. Each
refuses what it cannot use, with a message that names the argument.
"""

import argparse
import math
import numbers


def check_int(value, what, *, low=1):
    """`value` as an int if it is an integer >= `low` (a bool is not), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        expected = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{what} must be {expected}, got {value!r}")
    return int(value)


def check_number(value, what, *, positive=False):
    """`value` as a float if it is a finite real number (> 0 where `positive`), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or (positive and value <= 0):
        expected = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{what} must be {expected}, got {value!r}")
    return float(value)


def check_dropout(dropout):
    """`dropout` as a float in [0, 1), else TypeError or ValueError naming the fix."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout must be a number in [0, 1) (the probability of zeroing "
                        f"each output between layers), got {dropout!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1) (the probability of zeroing each "
                         f"output between layers), got {dropout!r}")
    return float(dropout)


def _flag_type(parse, check, expected):
    """An argparse type: `parse` the text, then `check` the value."""
    def convert(text):
        try:
            return check(parse(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    return convert


positive_int = _flag_type(int, lambda n: check_int(n, "value"), "a positive integer")
non_negative_int = _flag_type(int, lambda n: check_int(n, "value", low=0), "an integer >= 0")
positive_float = _flag_type(float, lambda v: check_number(v, "value", positive=True),
                            "a positive finite number")
finite_float = _flag_type(float, lambda v: check_number(v, "value"), "a finite number")

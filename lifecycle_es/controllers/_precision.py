"""How precisely the expert coordinator writes numbers to the log.

A long run's log is mostly numbers: basin metrics at every checkpoint and the values each gate
observed. Seventeen significant digits of a routing share say nothing a threshold can use, so
the coordinator records metrics to `METRIC_DIGITS` significant digits (and decides on the
values as recorded, so a replay decides alike) and a gate's evidence to `GATE_DIGITS` (the
verdict is reached on exact values and recorded beside them).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["GATE_DIGITS", "METRIC_DIGITS", "rounded", "rounded_all"]

METRIC_DIGITS = 6
"""Significant digits of a recorded metric: a share to one token in a million."""
GATE_DIGITS = 4
"""Significant digits of a value a gate observed or compared against, for the reader."""


def rounded(value: float, digits: int) -> float:
    """Return `value` to `digits` significant digits; an integral value as an int, written as `3`."""
    if float(value).is_integer():
        return int(value)
    return float(f"{value:.{digits}g}")


def rounded_all(values: Mapping[str, float], digits: int) -> dict[str, float]:
    """Return every value of `values` to `digits` significant digits, keys in order."""
    return {name: rounded(value, digits) for name, value in values.items()}

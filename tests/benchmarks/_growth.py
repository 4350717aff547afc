"""Whether a long run slows down: the first 10% of its boundaries against the last 10%.

DESIGN.md section 9 wants a 30,000-step demo's last boundaries within 1.2 x of its first;
the soak and the long-demo benchmark print the same line. Nothing here is collected by pytest.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["first_last"]


def first_last(seconds: Sequence[float], what: str = "boundary") -> str:
    """Return the median and mean ms of the first and last 10% of `seconds`, and their ratios."""
    k = max(1, len(seconds) // 10)
    head, tail = seconds[:k], seconds[-k:]
    parts = []
    for name, average in (("median", statistics.median), ("mean", statistics.fmean)):
        first, last = average(head) * 1e3, average(tail) * 1e3
        parts.append(f"{name} {first:.2f} -> {last:.2f} ms (x{last / first:.2f})")
    return f"{what} time, first vs last 10% ({k} of {len(seconds)} each): " + "; ".join(parts)

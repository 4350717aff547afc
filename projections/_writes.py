"""A plan's writes as the int32 sequences of one upload, in two layouts by batch size.

A batch of an evaluation step holds a transition or a few, and then its cost is the number of
torch calls, not the data: each costs microseconds on the host and is a kernel launch on CUDA.
So a small batch (at most `SMALL_BATCH` transitions) takes the flat layout: every index is built
here, on the host, the transitions are written over the plan's cells and keys in order (so
last-write-wins is still decided before any `index_put_`), and the state takes one write for
the whole batch. A larger batch takes the round layout: each round's rows, moves and keys go up
as they are and the device writes them, as building indices per transition in Python would
cost more than the calls it saves. Both end in the same tensors (tests/projections pin it).
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from projections._state_plan import COLUMNS, HISTORY_DEPTH, MOVE_COLUMNS, Plan, Round

__all__ = ["SMALL_BATCH", "Writes"]

SMALL_BATCH = 8
"""The most transitions a batch may hold to take the flat layout."""
_WIDTH = len(COLUMNS)
_RING = 2 * HISTORY_DEPTH
_KEPT = _RING - 2


@dataclass(slots=True)
class Writes:
    """What one upload carries: the cells, keys and metrics, then the rounds or ring pushes."""

    cells: Collection[int]
    """Flat indices of the int32 state tensor; `cell_values` holds their values."""
    cell_values: Collection[int]
    keys: Collection[int]
    """Rows of `state_keys`; `key_values` holds their values."""
    key_values: Collection[int]
    metrics: Collection[int]
    """Flat indices of the float32 metrics tensor; `metric_bits` holds their float32 bits."""
    metric_bits: array[int]
    flat: bool
    """Whether the transitions are in the cells and `rounds` holds ring pushes."""
    rounds: list[Collection[int]] = field(default_factory=list)
    """Round layout: per round its rows, moves and keys. Flat layout: per round, the flat
    history cells a push reads, the cells it writes them to, its head cells and (from, to) pairs."""

    @classmethod
    def of(cls, plan: Plan, rounds: Sequence[Round], *, small: int = SMALL_BATCH) -> Writes:
        """The writes of a plan whose history rounds are `rounds`: flat with at most `small`
        transitions, else by rounds."""
        flat = sum(len(round_.rows) for round_ in rounds) <= small
        cells, keys = (dict(plan.cells), dict(plan.keys)) if flat else (plan.cells, plan.keys)
        pushed: list[Collection[int]] = []
        for round_ in rounds:
            pushed += _pushes(round_, cells, keys) if flat else (round_.rows, round_.moves, round_.keys)
        bits = array("i", array("f", plan.values.values()).tobytes())
        metrics = plan.values.keys()
        return cls(cells.keys(), cells.values(), keys.keys(), keys.values(), metrics, bits, flat, pushed)

    def parts(self) -> list[Collection[int]]:
        """The sequences to upload, in order: every field but `flat`, then `rounds`."""
        fixed = (self.cells, self.cell_values, self.keys, self.key_values, self.metrics, self.metric_bits)
        return [*fixed, *self.rounds]


def _pushes(round_: Round, cells: dict[int, int], keys: dict[int, int]) -> list[array[int]]:
    """Write a round's transitions into `cells` and `keys`; return its ring push as flat cells."""
    source, target, heads, pairs = array("i"), array("i"), array("i"), array("i")
    for i, row in enumerate(round_.rows):
        move = round_.moves[3 * i : 3 * i + 3]
        for column, value in zip(MOVE_COLUMNS, move, strict=True):
            cells[row * _WIDTH + column] = value
        keys[row] = round_.keys[i]
        ring = row * _RING
        source.extend(range(ring, ring + _KEPT))
        target.extend(range(ring + 2, ring + _RING))
        heads.extend((ring, ring + 1))
        pairs.extend(move[:2])
    return [source, target, heads, pairs]

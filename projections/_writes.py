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
from dataclasses import dataclass
from itertools import chain

from projections._state_plan import COLUMNS, HISTORY_DEPTH, MOVE_COLUMNS, Plan, Round

__all__ = ["SMALL_BATCH", "Writes"]

SMALL_BATCH = 8
"""The most transitions a batch may hold to take the flat layout."""
_WIDTH = len(COLUMNS)
_RING = 2 * HISTORY_DEPTH
_KEPT = _RING - 2


@dataclass(slots=True)
class Writes:
    """What a batch uploads: int64 indices and int32 values, one transfer each, in step.

    Both lists start with three parts: the flat cells of the state tensor, the rows of
    `state_keys` and the flat cells of the metrics tensor, and their values (the metrics as
    their float32 bits). Then, per round, in the round layout its rows, moves and keys among the
    values (int32 as the scan built them); in the flat layout the history cells a ring push
    reads, the cells it writes them to and its head cells among the indices, and the
    (from, to) pairs among the values.
    """

    flat: bool
    """Whether the transitions are in the first parts and the rounds are ring pushes."""
    indices: list[Collection[int]]
    values: list[Collection[int]]

    @classmethod
    def of(cls, plan: Plan, rounds: Sequence[Round], *, small: int = SMALL_BATCH) -> Writes:
        """The writes of a plan whose history rounds are `rounds`: flat with at most `small`
        transitions, else by rounds."""
        flat = sum(len(round_.rows) for round_ in rounds) <= small
        cells, keys = (dict(plan.cells), dict(plan.keys)) if flat else (plan.cells, plan.keys)
        pushes = [_pushes(round_, cells, keys) if flat else _as_round(round_) for round_ in rounds]
        bits = array("i", array("f", plan.values.values()).tobytes())
        return cls(
            flat,
            [cells.keys(), keys.keys(), plan.values.keys(), *chain.from_iterable(i for i, _ in pushes)],
            [cells.values(), keys.values(), bits, *chain.from_iterable(v for _, v in pushes)],
        )


_Parts = tuple[Sequence[Collection[int]], Sequence[Collection[int]]]


def _as_round(round_: Round) -> _Parts:
    return (), (round_.rows, round_.moves, round_.keys)  # rows widened on the device: no loop


def _pushes(round_: Round, cells: dict[int, int], keys: dict[int, int]) -> _Parts:
    """Write a round's transitions into `cells` and `keys`; return its ring push as flat cells."""
    source, target, heads, pairs = array("q"), array("q"), array("q"), array("i")
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
    return (source, target, heads), (pairs,)

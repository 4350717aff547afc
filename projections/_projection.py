"""The projection protocol: a read model folded from events in seq order, in batches.

A projection is idempotent (a seq it already applied is skipped), refuses gaps, snapshots as
(state, seq) and resumes from a snapshot. Events arrive as field mappings: records read back
from a log, or the `__dict__` of event models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from bus import Record
from lifecycle_es.codec import TypedLines
from lifecycle_es.errors import SequenceGapError

__all__ = ["Projection", "Record", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A projection's state as plain data and tensors, and the last seq folded into it.

    `state` holds only what `torch.save` stores and `torch.load(weights_only=True)` reads back:
    tensors, numbers, strings, None, and lists, tuples and dicts of those.
    """

    kind: str
    seq: int
    state: dict[str, Any]


class Projection(ABC):
    """A read model that consumes events in seq order; `apply` is the one way in."""

    name: str = "projection"
    """Stable name, used as the key of the projection's snapshot in a checkpoint."""

    def __init__(self) -> None:
        self.seq = 0

    def apply(self, records: Sequence[Record]) -> int:
        """Fold a batch of consecutive records, skipping those already applied; return how many.

        A record whose seq is not one past the previous raises `SequenceGapError` before the
        projection changes.
        """
        if records and records[0]["seq"] == self.seq + 1 and _consecutive(records):
            fresh = records  # the common case, checked at C speed: a page that follows on
        else:
            fresh = self._fresh(records)
        if fresh:
            self._apply_batch(fresh)
            self.seq = fresh[-1]["seq"]
        return len(fresh)

    def apply_lines(self, lines: TypedLines) -> int:
        """`apply` for a page of typed lines (`Codec.decode_typed_lines`); by default the
        page's records go through `apply`. A projection that reads the lines themselves
        overrides this with `_apply_following`."""
        return self.apply(lines.records())

    def _apply_following(self, lines: TypedLines, fold: Callable[[TypedLines], None]) -> int:
        """`apply_lines` for a projection that folds typed lines with `fold`: a page that
        follows on goes to `fold`, another one (part applied, or a gap) through `apply`."""
        if lines.first_seq != self.seq + 1:
            return self.apply(lines.records())
        fold(lines)
        self.seq = lines.last_seq
        return len(lines)

    def _fresh(self, records: Sequence[Record]) -> Sequence[Record]:
        """The records past the projection's seq, checked to follow on one by one."""
        fresh = [r for r in records if r["seq"] > self.seq]
        expected = self.seq + 1
        for record in fresh:
            if record["seq"] != expected:
                raise SequenceGapError(
                    f"{self.name}: record seq {record['seq']} does not follow seq {expected - 1}"
                )
            expected += 1
        return fresh

    @abstractmethod
    def _apply_batch(self, records: Sequence[Record]) -> None:
        """Fold a non-empty batch of consecutive, not yet applied records."""

    @abstractmethod
    def snapshot(self) -> Snapshot:
        """Return the projection's state and seq, detached from the live object."""

    @abstractmethod
    def restore(self, snapshot: Snapshot) -> None:
        """Replace the projection's state with a snapshot's, including its seq."""


_seq = itemgetter("seq")


def _consecutive(records: Sequence[Record]) -> bool:
    """Whether the records' seqs run up by one from the first's."""
    first = records[0]["seq"]
    return list(map(_seq, records)) == list(range(first, first + len(records)))

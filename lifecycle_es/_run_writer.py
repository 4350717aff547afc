"""`RunWriter`: the log side of a `Lifecycle`, where its events become records and state.

Events are appended as one atomic batch with `expected_seq` (one writer per run), then folded
into the registry; a batch gathers appends into one; records other writers appended are folded
on `catch_up`. `Lifecycle` adds the commands that make the events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from bus import Log, LogOwner
from lifecycle_es._arguments import check_mapping, shown
from lifecycle_es.codec import Codec
from lifecycle_es.errors import SchemaError, UsageError
from lifecycle_es.events import EventBase
from lifecycle_es.registry import Registry, fold_record, fold_records

__all__ = ["RunWriter"]


class RunWriter(LogOwner):
    """Appends a run's events to its log with the concurrency check and folds them into its registry."""

    log: Log
    """The run's log."""
    run_id: str
    """The run the log belongs to."""
    registry: Registry
    """The run's state: every record of the log folded, in order."""
    codec: Codec
    """Turns events into records."""
    _owns_log: bool
    _pending: list[dict[str, Any]] | None

    def append(self, events: Sequence[EventBase]) -> list[dict[str, Any]]:
        """Append events as one atomic batch with the concurrency check, then fold them.

        Inside `batch()` the events are folded at once and written when the batch ends.
        Returns the records with their seqs.
        """
        if not isinstance(events, Sequence) or not all(isinstance(e, EventBase) for e in events):
            raise UsageError("append(events=...) takes a sequence of events")
        for event in events:
            if event.run_id != self.run_id:
                raise UsageError(f"event of run {event.run_id!r} cannot go to run {self.run_id!r}")
        return self._append(events)

    def _append(self, events: Sequence[EventBase], *, plain: bool = False) -> list[dict[str, Any]]:
        """`append` for events this lifecycle's commands built, whose run and types are known.

        `plain`: every value of the events is plain and shared with no caller, so the log
        takes the records as they are (`Log.append(plain=True)`) instead of copying them.
        """
        last = self.registry.seq
        to_record = self.codec.to_record
        records = []
        for event in events:
            record = to_record(event)
            del record["seq"]  # the log assigns it (an event's own is 0 until appended)
            records.append(record)
        if self._pending is None:
            self.log.append(records, expected_seq=last, plain=plain)
        for record in records:
            last += 1
            record["seq"] = last
        fold_records(self.registry, records)
        if self._pending is not None:
            self._pending.extend(records)
        return records

    @contextlib.contextmanager
    def batch(self, *, rollback: Literal["refold", "copy"] = "refold") -> Iterator[list[dict[str, Any]]]:
        """Gather every append inside the block into one atomic log append at its end.

        Commands see their own events at once (each is folded when made), and readers of the
        log see all of them or none. If the block or the append raises, nothing is written and
        the registry is folded again from the log, back to where it was; with
        `rollback="copy"` it is put back from a copy taken when the batch opened instead
        (cheaper when failures are common and the registry keeps few metric windows, as an
        agent service's does). Yields the list of records gathered so far.
        """
        if self._pending is not None:
            raise UsageError("a lifecycle batch is already open")
        start = self.registry.seq
        saved = self.registry.copy() if rollback == "copy" else None
        pending: list[dict[str, Any]] = []
        self._pending = pending
        try:
            yield pending
            if pending:
                self.log.append(pending, expected_seq=start)
        except BaseException:
            if saved is not None:
                self.registry = saved
            elif pending:
                # Fold the log again rather than copying the registry on every batch: a copy
                # grows with every metric window ever kept, and failures are rare.
                self.registry = Registry(self.registry.specs, window=self.registry.window)
                self.catch_up()
            raise
        finally:
            self._pending = None

    def fold(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Fold records read from this run's log, skipping those folded already; return how many."""
        folded = 0
        for record in records:
            if not isinstance(record, Mapping) or not isinstance(record.get("seq"), int):
                raise SchemaError(f"fold takes log records, mappings with an int 'seq', got {shown(record)}")
            if record["seq"] > self.registry.seq:
                fold_record(self.registry, self.codec.check(record))
                folded += 1
        return folded

    def catch_up(self) -> int:
        """Fold the records other writers appended since the last fold; return how many."""
        return sum(self.fold(page) for page in self.log.pages(self.registry.seq))

    def restore(self, state: Mapping[str, Any]) -> None:
        """Replace the registry with a `Registry.to_state()` snapshot of this run, e.g. a checkpoint's.

        The next `catch_up()` or `fold()` continues from the snapshot's seq.
        """
        check_mapping(state, "restore(state=...)")
        if state.get("run_id") not in (None, self.run_id):
            raise UsageError(
                f"registry snapshot of run {state['run_id']!r} cannot restore run {self.run_id!r}"
            )
        try:
            registry = Registry.from_state(self.registry.specs, state)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            # A snapshot is plain data a caller may have built or edited; what breaks rebuilding
            # it says the same thing whatever the builtin: it is no to_state() output.
            raise UsageError(
                f"restore(state=...) takes a Registry.to_state() snapshot, but rebuilding it failed "
                f"({type(e).__name__}: {shown(e)})"
            ) from e
        self.registry = registry

"""The runner: keeps a set of projections up to date with a run's log, in batches.

It catches up from wherever the projections are (fresh, or restored from snapshots), then
follows the log live, in the foreground or on a thread of its own. Records read back from our
own log take the trusted path: kind, schema and shape are checked (`Codec.check`), field
validation is skipped; `validate=True` decodes every record through the event models instead.
A JSONL log's catch-up decodes its lines straight into typed structs that check the same in C
(`Codec.decode_typed_lines`), which the registry and the state tensors fold without building
a dict per record; a page with a line they decline is parsed and checked record by record.
A Redis log's catch-up does the same with its entries' msgpack payloads
(`Codec.decode_typed_payloads`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Self

from bus import JsonlLog, Log, RedisLog, gc_paused
from lifecycle_es.codec import CODEC, Codec, TypedLines
from lifecycle_es.errors import ConfigError, UsageError
from projections._projection import Projection, Record

__all__ = ["Runner", "gc_paused"]


class Runner:
    """Feeds one log's records to several projections; the slowest projection sets the start."""

    def __init__(
        self,
        log: Log,
        projections: Iterable[Projection],
        *,
        codec: Codec = CODEC,
        batch_size: int = 10_000,
        validate: bool = False,
    ) -> None:
        self.log = log
        self.projections = tuple(projections)
        if not self.projections:
            raise ConfigError("a runner needs at least one projection")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.codec = codec
        self.batch_size = batch_size
        self.validate = validate
        """Decode every record with full model validation, for logs not written by this library."""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    @property
    def seq(self) -> int:
        """The last seq every projection has applied."""
        return min(p.seq for p in self.projections)

    def apply(self, batch: Sequence[Record]) -> None:
        """Check a batch's kinds, schemas and shapes (upcasting old ones), then apply it to every
        projection; with `validate` every record is decoded into its event model and back."""
        if self.validate:
            decode, encode = self.codec.from_record, self.codec.to_record
            batch = [encode(decode(record)) for record in batch]
        else:
            check = self.codec.check
            batch = [check(record) for record in batch]
        self._fold(batch)

    def _fold(self, batch: Sequence[Record]) -> None:
        for projection in self.projections:
            projection.apply(batch)

    def catch_up(self) -> int:
        """Apply every record the log holds past the projections; return how many were read."""
        total = 0
        with gc_paused():
            for page in self._pages():
                if isinstance(page, TypedLines):
                    for projection in self.projections:
                        projection.apply_lines(page)
                else:
                    self.apply(page)
                total += len(page)
        return total

    def _pages(self) -> Iterator[Sequence[Record] | TypedLines]:
        """The log's pages past the projections: on the trusted path a JSONL log's lines are
        decoded and checked in one typed pass (`Codec.decode_typed_lines`); lines that need
        more are parsed into records, which go through `apply`."""
        log = self.log
        if not self.validate and isinstance(log, RedisLog):
            yield from self._redis_pages(log)
            return
        if self.validate or not isinstance(log, JsonlLog) or log.lenient:
            yield from log.pages(self.seq, size=self.batch_size)
            return
        after = self.seq
        while True:
            text, count = log.read_lines(after, self.batch_size)
            if not count:
                return
            lines = self.codec.decode_typed_lines(text, after + 1, count, ignore=log.BATCH_KEY)
            yield log.parse_lines(text, after + 1, count) if lines is None else lines
            after += count

    def _redis_pages(self, log: RedisLog) -> Iterator[Sequence[Record] | TypedLines]:
        """`_pages` for a Redis log: its entries' msgpack payloads decoded and checked in one
        typed pass (`Codec.decode_typed_payloads`), or decoded into records when a payload or
        an entry id needs more."""
        after = self.seq
        while entries := log.read_entries(after, self.batch_size):
            payloads = log.stored_payloads(entries, after + 1)
            lines = None if payloads is None else self.codec.decode_typed_payloads(payloads, after + 1)
            if lines is None:
                records = log.decode_entries(entries)
                yield records
                after = records[-1]["seq"]
            else:
                yield lines
                after = lines.last_seq

    def follow(self, *, stop: threading.Event | None = None, timeout: float | None = None) -> None:
        """Catch up, then apply live batches until `stop` is set (or the follow times out)."""
        for batch in self.log.follow_batches(self.seq, timeout=timeout, stop=stop):
            self.apply(batch)

    # -- on a thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Follow the log on a daemon thread until `stop()`."""
        if self._thread is not None:
            raise UsageError("the runner is already following its log")
        self._stop.clear()
        self._error = None
        self._thread = threading.Thread(target=self._follow_safely, name="lifecycle-es-runner", daemon=True)
        self._thread.start()

    def _follow_safely(self) -> None:
        try:
            self.follow(stop=self._stop)
        except BaseException as e:  # handed to the caller of stop(), who re-raises it
            self._error = e

    def stop(self, timeout: float | None = None) -> None:
        """Stop following, wait for the thread, and re-raise any error a projection raised."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout)
        error, self._error = self._error, None
        if error is not None:
            raise error

    @property
    def running(self) -> bool:
        """Whether the follow thread is alive (it ends on stop() or on a projection's error)."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self.stop()

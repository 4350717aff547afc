"""The log protocol: one append-only, gapless, per-run log of plain records.

`Log` holds everything the backends share (validation, the retry rule, follow, context
management); a backend implements five small methods: `_append`, `read`, `_wait`,
`last_seq` and `_close`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Self, cast

from bus._records import DEFAULT_MAX_RECORD_BYTES, Record, normalize_batch
from bus.errors import BusError, FollowTimeoutError, InvalidArgumentError


class Log(ABC):
    """An append-only log of records for one run; seqs are 1, 2, 3, ... with no gaps.

    A record is a mapping of JSON/msgpack-compatible plain values; the log assigns `seq`
    and returns records as new dicts with 'seq' as the first key.
    """

    run_id: str
    """The run this log belongs to, validated by `validate_run_id` before any key or path."""
    url: str
    """Where the log lives, for messages; never contains a password."""
    id_key: str = "event_id"
    """The record field that identifies a record when a retried batch is recognised."""
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    """A record whose encoding in the backend's format is larger is rejected."""
    poll_interval: float = 0.05
    """Seconds a follower waits between checks; `stop` is honoured within about this long."""
    follow_batch_size: int = 10_000
    """Most records one `follow_batches` batch holds while catching up."""
    page_size: int = 50_000
    """Most records one `pages` page holds by default."""

    _closed: bool = False

    def append(
        self, records: Sequence[Record], expected_seq: int | None = None, *, plain: bool = False
    ) -> int:
        """Append a batch atomically and return the first seq assigned to it.

        An empty batch writes nothing and returns `last_seq() + 1` (`expected_seq` is not
        checked: there is nothing to conflict with). With `expected_seq` the append succeeds
        only if `last_seq() == expected_seq`; otherwise, if the records at seqs
        `expected_seq + 1, ...` already carry this batch's `id_key` values in order (a retry
        of a batch that landed), their first seq is returned and nothing is written; else
        `ConcurrencyError(expected_seq, actual)` is raised. Invalid records raise
        `InvalidRecordError` before anything is written.

        `plain=True` is for a writer that builds its records from values it has already checked
        (`lifecycle_es`'s commands, a mirror passing on a batch its primary took): the records
        are handed over, dicts of plain JSON values only (str keys; None, bool, 64-bit int,
        finite float, str, list, dict; no subclass, no tuple) without 'seq' or the reserved
        key, and the caller keeps no reference to them. The log then stores them without the
        checking copy; the size limit is still checked.
        """
        self._check_append(expected_seq)
        batch = cast("list[dict[str, Any]]", list(records)) if plain else normalize_batch(records)
        if not batch:
            return self.last_seq() + 1
        return self._append(batch, expected_seq)

    def _check_append(self, expected_seq: int | None) -> None:
        """Raise unless the log is open and `expected_seq` is None or a non-negative int."""
        self._check_open()
        if expected_seq is not None and (type(expected_seq) is not int or expected_seq < 0):
            raise InvalidArgumentError(f"expected_seq must be a non-negative int, got {expected_seq!r}")

    @abstractmethod
    def _append(self, batch: list[dict[str, Any]], expected_seq: int | None) -> int:
        """Store a non-empty batch of normalized records (without 'seq'); see `append`."""

    @abstractmethod
    def read(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Return up to `limit` records with seq > `after`, in order, as new dicts with
        'seq' as the first key."""

    @abstractmethod
    def _wait(self, after: int, timeout: float) -> list[dict[str, Any]]:
        """Wait up to `timeout` seconds for records after `after`; return them (maybe none)."""

    @abstractmethod
    def last_seq(self) -> int:
        """Return the seq of the last record, 0 for an empty log."""

    @abstractmethod
    def _close(self) -> None:
        """Release the backend's resources; called once."""

    def pages(self, after: int = 0, *, size: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """Yield the records after `after` as pages of consecutive records, to the log's end.

        The one way to catch up on a log: each page is one `read` of at most `size` records
        (default `page_size`), so memory stays bounded however long the log; records appended
        while the pages are read are included, and the iteration ends at the first empty read.
        """
        limit = self.page_size if size is None else size
        if type(limit) is not int or limit < 1:
            raise InvalidArgumentError(f"a page holds at least 1 record, got size={size!r}")
        while page := self.read(after, limit):
            yield page
            after = page[-1]["seq"]

    def follow(
        self,
        after: int = 0,
        *,
        timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield every record after `after`: first those stored, then live ones as they
        arrive; never skips or repeats a seq. See `follow_batches` for timeout and stop."""
        for batch in self.follow_batches(after, timeout=timeout, stop=stop):
            yield from batch

    def follow_batches(
        self,
        after: int = 0,
        *,
        timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield non-empty batches of consecutive records after `after`, catching up first.

        `timeout` bounds the wait for the next record: when it passes with nothing new,
        `FollowTimeoutError(after=last seq yielded)` is raised. When `stop` is set the
        generator returns within about `poll_interval` seconds.
        """
        while True:
            batch = self._next_batch(after, timeout, stop)
            if batch is None:
                return
            yield batch
            after = batch[-1]["seq"]

    def _next_batch(
        self, after: int, timeout: float | None, stop: threading.Event | None
    ) -> list[dict[str, Any]] | None:
        """The next non-empty batch after `after`, or None once `stop` is set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while stop is None or not stop.is_set():
            self._check_open()
            batch = self.read(after, self.follow_batch_size)
            if batch:
                return batch
            wait = self.poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FollowTimeoutError(after, timeout or 0.0)
                wait = min(wait, left)
            batch = self._wait(after, wait)
            if batch:
                return batch
        return None

    def close(self) -> None:
        """Release the log's resources; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._close()

    def _check_open(self) -> None:
        if self._closed:
            raise BusError(f"the log {self.url} (run {self.run_id}) is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, run_id={self.run_id!r})"

    def _ids_landed(self, batch: Sequence[Record], expected_seq: int) -> bool:
        """True if seqs `expected_seq + 1, ...` carry this batch's ids in order (a retry)."""
        stored = self.read(expected_seq, len(batch))
        return ids_match(stored, batch, self.id_key)


def ids_match(stored: Sequence[Record], batch: Sequence[Record], id_key: str) -> bool:
    """True if both hold the same non-missing `id_key` values in the same order."""
    if len(stored) != len(batch):
        return False
    for old, new in zip(stored, batch, strict=True):
        new_id = new.get(id_key)
        if new_id is None or old.get(id_key) != new_id:
            return False
    return True

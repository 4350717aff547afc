"""The in-process log: the reference implementation the contract tests hold others to."""

from __future__ import annotations

import threading
from typing import Any

from bus._log import Log
from bus._records import DEFAULT_MAX_RECORD_BYTES, check_size, copy_record, pack_msgpack
from bus._runid import validate_run_id
from bus.errors import ConcurrencyError


class _Stream:
    """The records of one memory log, shared by every handle attached to it."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        """Guards the records; taken directly where no one waits (a Condition's own `with`
        is Python code, the lock's is C: an append's cost)."""
        self.changed = threading.Condition(self.lock)
        self.waiting = 0
        """Handles waiting on `changed` (guarded by it): an append with none skips the notify."""


class MemoryLog(Log):
    """A log held in this process's memory; `attach` opens another handle on the same records.

    Every `MemoryLog(run_id)` (and every `bus.open("memory://", run_id)`) starts empty: there
    is no process-wide registry, so tests never see each other's records.
    """

    def __init__(
        self,
        run_id: str,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        id_key: str = "event_id",
        _stream: _Stream | None = None,
    ) -> None:
        self.run_id = validate_run_id(run_id)
        self.url = "memory://"
        self.id_key = id_key
        self.max_record_bytes = max_record_bytes
        self._stream = _stream or _Stream()

    def attach(self) -> MemoryLog:
        """Return a new handle on the same records (as opening a file twice would)."""
        return MemoryLog(
            self.run_id,
            max_record_bytes=self.max_record_bytes,
            id_key=self.id_key,
            _stream=self._stream,
        )

    def _append(self, batch: list[dict[str, Any]], expected_seq: int | None) -> int:
        # The size check uses msgpack, the Redis encoding, so oversize behaves the same here.
        # One encoding of the whole batch bounds each record's (a list adds a few bytes to
        # the sum of its items'): only a batch over the limit is measured record by record.
        limit = self.max_record_bytes
        if len(pack_msgpack(batch)) > limit:
            for i, record in enumerate(batch):
                check_size(len(pack_msgpack(record)), i, limit)
        stream = self._stream
        with stream.lock:
            last = len(stream.records)
            if expected_seq is not None and expected_seq != last:
                if self._ids_landed(batch, expected_seq):
                    return expected_seq + 1
                raise ConcurrencyError(expected_seq, last)
            stream.records.extend([{"seq": seq, **r} for seq, r in enumerate(batch, last + 1)])
            if stream.waiting:
                stream.changed.notify_all()
        return last + 1

    def read(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        self._check_open()
        start = max(after, 0)
        stop = None if limit is None else start + max(limit, 0)
        with self._stream.lock:
            window = self._stream.records[start:stop]
        return [copy_record(r) for r in window]

    def _wait(self, after: int, timeout: float) -> list[dict[str, Any]]:
        stream = self._stream
        with stream.changed:
            stream.waiting += 1
            try:
                stream.changed.wait_for(lambda: len(stream.records) > after, timeout)
            finally:
                stream.waiting -= 1
        return self.read(after, self.follow_batch_size)

    def last_seq(self) -> int:
        self._check_open()
        return len(self._stream.records)

    def _close(self) -> None:
        """Nothing to release: the records live as long as any handle does."""

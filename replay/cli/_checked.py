"""A read-only view of a run's log that checks each record's shape before a command sees it."""

from __future__ import annotations

from typing import Any

from bus import BusError, Log
from lifecycle_es.codec import CODEC
from lifecycle_es.errors import SchemaError


class CheckedLog(Log):
    """Reads through `inner`, raising `SchemaError` for a record whose fields have the wrong
    JSON type (a str step, a list of metrics, a list kind), or, when `lenient`, skipping and
    counting it, so no command meets a TypeError or KeyError deep in its formatting or fold."""

    def __init__(self, inner: Log, *, lenient: bool) -> None:
        self.inner, self.lenient = inner, lenient
        self.run_id, self.url, self.id_key = inner.run_id, inner.url, inner.id_key
        self.poll_interval, self.follow_batch_size = inner.poll_interval, inner.follow_batch_size
        self.page_size = inner.page_size
        self._bad: set[int] = set()

    @property
    def skipped(self) -> int:
        """Records and lines skipped in lenient mode: unreadable lines and misshapen records."""
        return int(getattr(self.inner, "skipped", 0)) + len(self._bad)

    def _append(self, batch: list[dict[str, Any]], expected_seq: int | None) -> int:
        raise BusError(f"the log {self.url} (run {self.run_id}) is open read-only")

    def read(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return self._checked(self.inner.read(after, limit))

    def _wait(self, after: int, timeout: float) -> list[dict[str, Any]]:
        return self._checked(self.inner._wait(after, timeout))

    def last_seq(self) -> int:
        return self.inner.last_seq()

    def _close(self) -> None:
        self.inner.close()

    def _checked(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for record in records:
            try:
                CODEC.check_shape(record)
            except SchemaError:
                if not self.lenient:
                    raise
                self._bad.add(record["seq"])
                continue
            out.append(record)
        return out

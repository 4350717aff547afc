"""The JSONL file log: `DIR/<run_id>.jsonl`, one JSON object per line, 'seq' first.

Locking (fcntl.flock on the log file itself):
- every append holds an exclusive lock while it checks the tail, compares `expected_seq`
  and writes its batch with one `write` call, so writers in several processes serialise
  batch by batch and never interleave (each seq is won by exactly one of them);
- readers and followers take a shared lock only for the instant they learn where the last
  complete line ends, so they see whole batches and never wait on a long read.
Batches are all or none on disk (the rule is in `bus._jsonl_scan`): the first line of a
batch of n > 1 records carries `"_batch": n` after its seq, stripped on read. Every open
checks each line's seq and every batch's size; readers stop before a torn tail (a partial
line, a partial batch left by a writer killed inside its write), and only a writer cuts it,
whole, into `<run_id>.jsonl.corrupt`, with a warning: when it opens, and before each append,
under the exclusive lock (so the tail cannot be a write in progress). A read-only handle
(`readonly=True`: the CLI's readers) never creates, locks for writing or changes the file.

No index of line offsets is kept (a handle costs no memory per record): a read continues
from where the previous one stopped, and any other position is found by counting newlines
from the start at C speed (about 0.1 s per million lines).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

from bus import _jsonl_file as jf
from bus._gc import gc_paused
from bus._jsonl_scan import BATCH_KEY, Position, scan
from bus._log import Log, ids_match
from bus._records import DEFAULT_MAX_RECORD_BYTES, check_size
from bus._runid import validate_run_id
from bus.errors import (
    BusError,
    BusUnavailableError,
    ConcurrencyError,
    CorruptLogError,
    InvalidArgumentError,
    InvalidRecordError,
    UnknownRunError,
)

FsyncPolicy = Literal["always", "batch", "never"]

GROUP_COMMIT_S = 1.0
"""With fsync="batch", the longest an appended batch stays unsynced while appends go on."""

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False)


class JsonlLog(Log):
    """A log in one JSONL file; many processes may append and follow it on one machine.

    fsync: "always" syncs every batch before `append` returns; "batch" (group commit)
    syncs at most once every `GROUP_COMMIT_S` seconds and at close, so a crash of the
    process loses nothing and a power loss at most that window; "never" leaves it to the OS.
    lenient: skip lines that cannot be read instead of raising `CorruptLogError`; `skipped`
    counts them.
    readonly: open an existing file for reading only (`UnknownRunError` when there is none):
    nothing is created, cut or written, and `append` raises `BusError`.
    """

    BATCH_KEY = BATCH_KEY
    """The top-level key marking the first line of a batch of several records (`read_lines`)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        run_id: str,
        *,
        fsync: FsyncPolicy = "batch",
        lenient: bool = False,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        id_key: str = "event_id",
        readonly: bool = False,
    ) -> None:
        self.run_id = validate_run_id(run_id)
        if fsync not in ("always", "batch", "never"):
            raise InvalidArgumentError(f"fsync must be 'always', 'batch' or 'never', got {fsync!r}")
        self.path = Path(directory) / f"{run_id}.jsonl"
        self.url = f"jsonl://{directory}"
        self.fsync, self.lenient, self.id_key, self.readonly = fsync, lenient, id_key, readonly
        self.max_record_bytes = max_record_bytes
        self._bad_lines: set[int] = set()
        self._mutex = threading.RLock()  # one flock per fd: threads must not convert it
        self._tail = Position()  # just past the last complete batch: offset, line, seq
        self._cursor = (1, 0)  # (next seq, its offset) where the previous read stopped
        self._synced_at, self._unsynced = time.monotonic(), False
        self._fd = self._open_file()
        try:
            with self._mutex, jf.flocked(self._fd, exclusive=not readonly):
                self._refresh(exclusive=not readonly)
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def skipped(self) -> int:
        """Number of distinct bad lines skipped so far in lenient mode."""
        return len(self._bad_lines)

    @property
    def _end(self) -> int:
        return self._tail.offset

    @property
    def _last(self) -> int:
        return self._tail.seq

    def _open_file(self) -> int:
        if self.readonly:
            return self._open_readonly()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise BusUnavailableError(self.url, e.strerror or type(e).__name__) from e
        if created and self.fsync == "always":
            jf.fsync_path(self.path.parent)
        return fd

    def _open_readonly(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise UnknownRunError(self.run_id, self.url) from e
        except OSError as e:
            raise BusUnavailableError(self.url, e.strerror or type(e).__name__) from e

    def _refresh(self, exclusive: bool) -> None:
        """Check the lines other handles appended and learn the end of the complete batches;
        a writer (`exclusive`) also cuts a torn tail.

        The caller holds the mutex and an flock (exclusive when `exclusive`), so a torn tail
        seen under the exclusive lock cannot be a write in progress.
        """
        size = os.fstat(self._fd).st_size
        if size == self._end:
            return
        if size < self._end:
            why = f"the file shrank from {self._end} to {size} bytes while open"
            raise CorruptLogError(str(self.path), 0, why)
        found = scan(self._fd, self.path, self._tail, size, lenient=self.lenient)
        self._bad_lines.update(found.bad)
        self._tail = found.end
        if exclusive and found.end.offset < size:
            why = "a torn line or partial batch left by a writer that died in its write"
            jf.cut_tail(self._fd, self.path, found.end.offset, size, why)

    def _append(self, batch: list[dict[str, Any]], expected_seq: int | None) -> int:
        bodies = self._encode(batch)
        with self._mutex, jf.flocked(self._fd, exclusive=True):
            self._check_open()
            self._refresh(exclusive=True)
            last = self._last
            if expected_seq is not None and expected_seq != last:
                stored = self._read_range(expected_seq, len(batch))
                if ids_match(stored, batch, self.id_key):
                    return expected_seq + 1
                raise ConcurrencyError(expected_seq, last)
            self._write(_lines(bodies, last + 1))
        return last + 1

    def check(self, batch: list[dict[str, Any]]) -> None:
        """Run every check an append of `batch` makes before writing, and write nothing
        (a mirror runs it before its primary stores the batch)."""
        self._check_writable()
        _utf8("".join(self._encode(batch)))

    def _check_writable(self) -> None:
        if self.readonly:
            raise BusError(f"the log {self.path} is open read-only")

    def _encode(self, batch: list[dict[str, Any]]) -> list[str]:
        """JSON bodies of the records (without seq), size-checked before anything is written."""
        self._check_writable()
        bodies = [_ENCODER.encode(record) for record in batch]
        limit = self.max_record_bytes
        for i, body in enumerate(bodies):
            # len(body) counts characters; only bodies that could be over in UTF-8 are encoded.
            if len(body) * 4 > limit:
                check_size(len(body.encode("utf-8", "surrogatepass")), i, limit)
        return bodies

    def _write(self, text: str) -> None:
        """Write one batch with one `write` call; on failure, cut back to the last good line."""
        data = _utf8(text)
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (disk nearly full): finish or fail
                written += os.write(self._fd, data[written:])
        except OSError as e:
            os.ftruncate(self._fd, self._end)
            raise BusUnavailableError(self.url, e.strerror or type(e).__name__) from e
        seq = self._tail.seq + data.count(b"\n")
        self._tail = Position(self._tail.offset + len(data), self._tail.line + data.count(b"\n"), seq)
        self._sync()

    def _sync(self) -> None:
        if self.fsync == "never":
            return
        now = time.monotonic()
        if self.fsync == "always" or now - self._synced_at >= GROUP_COMMIT_S:
            os.fsync(self._fd)
            self._synced_at, self._unsynced = now, False
        else:
            self._unsynced = True

    def read(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        self._check_open()
        with self._mutex, jf.flocked(self._fd, exclusive=False):
            self._refresh(exclusive=False)
        with gc_paused():  # a read of many records would set off full collections (bus._gc)
            return self._read_range(after, limit)

    def _read_range(self, after: int, limit: int | None) -> list[dict[str, Any]]:
        """Records after `after` up to the end learnt by the last refresh."""
        end, last, after = self._tail.offset, self._tail.seq, max(after, 0)
        count = last - after if limit is None else min(limit, last - after)
        if count <= 0:
            return []
        if self.lenient:
            return self._read_lenient(after, count, end)
        base_seq, base = self._cursor if self._cursor[0] <= after + 1 else (1, 0)
        offset = jf.skip_lines(self._fd, base, after + 1 - base_seq, end)
        return self._parse_from(offset, after + 1, count, end)

    def read_lines(self, after: int = 0, limit: int | None = None) -> tuple[bytes, int]:
        """The stored lines of the records after `after` (at most `limit`), for a reader that
        decodes them itself: their text, joined by newlines, and how many lines it holds. The
        first line of a batch holds the key `BATCH_KEY`, which is not part of its record.
        `parse_lines` turns such text into records or names a bad line."""
        self._check_open()
        if self.lenient:
            raise InvalidArgumentError("a lenient log skips bad lines: read it record by record")
        with self._mutex, jf.flocked(self._fd, exclusive=False):
            self._refresh(exclusive=False)
        end, last, after = self._tail.offset, self._tail.seq, max(after, 0)
        count = last - after if limit is None else min(limit, last - after)
        if count <= 0:
            return b"", 0
        base_seq, base = self._cursor if self._cursor[0] <= after + 1 else (1, 0)
        offset = jf.skip_lines(self._fd, base, after + 1 - base_seq, end)
        texts, got = [], 0
        while got < count and offset < end:
            text, lines, used = self._lines_at(offset, end, count - got)
            texts.append(text)
            got, offset = got + lines, offset + used
        self._cursor = (after + 1 + got, offset)
        return b"\n".join(texts), got

    def parse_lines(self, text: bytes, first_seq: int, count: int) -> list[dict[str, Any]]:
        """Parse text from `read_lines` into its records, or raise `CorruptLogError` naming the
        first bad line (the seqs must run from `first_seq`)."""
        records = jf.parse_fast(text, count, first_seq)
        return records if records is not None else self._parse_each(text, first_seq)

    def _parse_from(self, offset: int, seq: int, count: int, end: int) -> list[dict[str, Any]]:
        """Parse `count` lines from `offset`, whose first line must hold `seq`."""
        out: list[dict[str, Any]] = []
        while len(out) < count and offset < end:
            text, lines, used = self._lines_at(offset, end, count - len(out))
            records = jf.parse_fast(text, lines, seq)
            out.extend(records if records is not None else self._parse_each(text, seq))
            offset, seq = offset + used, seq + lines
        self._cursor = (seq, offset)
        return out

    def _lines_at(self, offset: int, end: int, most: int) -> tuple[bytes, int, int]:
        """Up to `most` complete lines from `offset`, without their last newline: the text,
        the number of lines and the bytes they take in the file."""
        size = jf.CHUNK
        while True:
            data = os.pread(self._fd, min(size, end - offset), offset)
            cut = data.rfind(b"\n") + 1
            if cut or offset + len(data) >= end:
                break
            size *= 2  # a single line longer than a chunk
        lines = data.count(b"\n", 0, cut)
        if lines > most:
            lines, cut = most, jf.skip_in(data, most)
        return data[: cut - 1], lines, cut

    def _parse_each(self, text: bytes, seq: int) -> list[dict[str, Any]]:
        """The slow path: parse line by line to name the first bad line."""
        out = []
        for i, line in enumerate(text.split(b"\n")):
            record = jf.parse_line(line, self.path, seq + i)
            if record["seq"] != seq + i:
                why = f"expected seq {seq + i}, found {record['seq']}"
                raise CorruptLogError(str(self.path), seq + i, why)
            out.append(record)
        return out

    def _read_lenient(self, after: int, count: int, end: int) -> list[dict[str, Any]]:
        """Scan from the start, skipping (and counting) lines that are bad or out of order."""
        out: list[dict[str, Any]] = []
        offset, line_no, prev = 0, 0, 0
        while len(out) < count and offset < end:
            text, _, used = self._lines_at(offset, end, end)
            for line in text.split(b"\n"):
                line_no += 1
                record = jf.loads_or_none(line)
                seq = record.get("seq") if isinstance(record, dict) else None
                if type(seq) is not int or seq <= prev:
                    self._bad_lines.add(line_no)
                    continue
                prev = seq
                if seq > after and len(out) < count:
                    out.append(jf.strip_markers([record])[0])
            offset += used
        return out

    def _wait(self, after: int, timeout: float) -> list[dict[str, Any]]:
        # Poll the size: cheap, and a partial line (a write in progress, or a dead writer's
        # torn tail) leaves it unchanged, so that does not turn into a busy loop. The pause
        # grows with the wait (a quarter of it, 0.2 to 5 ms): a record that comes soon, as a
        # leader's seal does, is seen within a fraction of a millisecond; an idle tail still
        # polls only 200 times a second.
        start = time.monotonic()
        deadline = start + timeout
        seen = os.fstat(self._fd).st_size
        while True:
            if os.fstat(self._fd).st_size != seen:
                return self.read(after, self.follow_batch_size)
            now = time.monotonic()
            if now >= deadline:
                return []
            time.sleep(min(max((now - start) / 4, 0.0002), 0.005, deadline - now))

    def last_seq(self) -> int:
        self._check_open()
        with self._mutex, jf.flocked(self._fd, exclusive=False):
            self._refresh(exclusive=False)
            return self._last

    def _close(self) -> None:
        with self._mutex:
            if self._unsynced:
                os.fsync(self._fd)
            os.close(self._fd)


def _lines(bodies: list[str], first: int) -> str:
    """The batch's text: each body with its seq spliced in as the first key, and the first
    line of a batch of several marked with its size."""
    if len(bodies) > 1:
        head, mark = bodies[0], f'{{"{BATCH_KEY}":{len(bodies)}'
        bodies = [f"{mark},{head[1:]}" if len(head) > 2 else f"{mark}}}", *bodies[1:]]
    return "".join(
        f'{{"seq":{seq},{body[1:]}\n' if len(body) > 2 else f'{{"seq":{seq}}}\n'
        for seq, body in enumerate(bodies, first)
    )


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRecordError("a record holds a lone surrogate in a string") from e

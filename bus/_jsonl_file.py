"""Byte-level helpers for a JSONL log file: locking, finding the last line, cutting torn tails,
and parsing lines in bulk.

A line is one JSON object with "seq" first; line N holds seq N. These helpers work on a raw
file descriptor with `os.pread`, so readers never move a shared file position.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec

from bus._records import RESERVED_KEY as _BATCH_KEY
from bus.errors import CorruptLogError

log = logging.getLogger("bus.jsonl")

CHUNK = 4 << 20
"""Bytes read per `pread` when scanning or parsing; large reads keep the per-call cost low."""

_seq_of = itemgetter("seq")
_BATCH_BYTES = f',"{_BATCH_KEY}":'.encode()  # the batch marker (bus._jsonl_scan), stripped on read


_DECODER = msgspec.json.Decoder()


def loads(data: bytes) -> Any:
    """Parse JSON as `json.loads` would, about twice as fast: msgspec refuses NaN, Infinity and
    floats out of range (the writer never stores one) with a ValueError, and too deep nesting
    with a RecursionError, turned into ValueError here."""
    try:
        return _DECODER.decode(data)
    except RecursionError as e:
        raise ValueError("the line is nested too deeply") from e


def loads_or_none(data: bytes) -> Any:
    """The parsed line, or None when it is not valid (finite, reasonably nested) JSON."""
    try:
        return loads(data)
    except ValueError:
        return None


def pread(fd: int, size: int, offset: int) -> bytes:
    """`os.pread` of exactly [offset, offset + size) of a file that holds it."""
    return os.pread(fd, size, offset)


def line_blocks(fd: int, start: int, stop: int) -> Iterator[bytes]:
    """Blocks of whole lines (each ending in a newline) from [start, stop); a partial last
    line is left out."""
    offset, size = start, CHUNK
    while offset < stop:
        data = os.pread(fd, min(size, stop - offset), offset)
        cut = data.rfind(b"\n") + 1
        if not cut:
            if offset + len(data) >= stop:
                return
            size *= 2  # a single line longer than a chunk
            continue
        yield data[:cut] if cut < len(data) else data
        offset, size = offset + cut, CHUNK


def strip_markers(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Remove the batch marker from records parsed from lines."""
    for record in records:
        if _BATCH_KEY in record:
            del record[_BATCH_KEY]
    return records


@contextmanager
def flocked(fd: int, exclusive: bool) -> Iterator[None]:
    """Hold an flock on `fd` (exclusive for writers and repairs, shared for readers)."""
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def last_newline(fd: int, start: int, end: int) -> int:
    """Offset of the last b"\\n" in [start, end), or -1; reads backwards in chunks."""
    hi = end
    while hi > start:
        lo = max(start, hi - CHUNK)
        found = os.pread(fd, hi - lo, lo).rfind(b"\n")
        if found >= 0:
            return lo + found
        hi = lo
    return -1


def line_ending_at(fd: int, newline: int) -> tuple[int, bytes]:
    """The (start offset, bytes) of the line whose terminating newline is at `newline`."""
    before = last_newline(fd, 0, newline)
    return before + 1, os.pread(fd, newline - before - 1, before + 1)


def parse_seq(line: bytes) -> int | None:
    """The seq of one line, or None when the line is not a JSON object with an int seq."""
    record = loads_or_none(line)
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if type(seq) is int else None


def count_lines(fd: int, end: int) -> int:
    """Number of newlines in [0, end); used to name the line of an error."""
    total, offset = 0, 0
    while offset < end:
        data = os.pread(fd, min(CHUNK, end - offset), offset)
        total += data.count(b"\n")
        offset += len(data)
    return total


def cut_tail(fd: int, path: Path, start: int, end: int, why: str) -> None:
    """Move bytes [start, end) of the log into `<path>.corrupt` and truncate the log there."""
    data = os.pread(fd, end - start, start)
    side = path.with_name(path.name + ".corrupt")
    with open(side, "ab") as out:
        out.write(data if data.endswith(b"\n") else data + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.ftruncate(fd, start)
    os.fsync(fd)
    log.warning("cut %d bytes (%s) from the end of %s into %s", len(data), why, path, side.name)


def skip_lines(fd: int, offset: int, count: int, end: int) -> int:
    """Offset of the line `count` lines after the one starting at `offset` (or `end`)."""
    buf = bytearray(CHUNK)  # reused: a fresh buffer per chunk costs more than counting
    while count > 0 and offset < end:
        size = os.preadv(fd, [memoryview(buf)[: end - offset]], offset)
        newlines = buf.count(b"\n", 0, size)
        if newlines < count:
            count -= newlines
            last = buf.rfind(b"\n", 0, size)
            offset += last + 1 if last >= 0 else size  # no newline: all of a long line
            continue
        return offset + skip_in(buf, count)
    return offset


def parse_fast(text: bytes, count: int, first_seq: int) -> list[dict[str, Any]] | None:
    """Parse `count` newline-separated lines holding seqs first_seq, first_seq+1, ... in one
    `loads` call (which also shares the key strings between records).

    Returns None when anything is off (a bad line, a line holding two values, a wrong seq),
    so the caller can fall back to `parse_line` on each line and name the bad one.
    """
    try:
        records = loads(b"[" + text.replace(b"\n", b",") + b"]")
        if len(records) == count and list(map(_seq_of, records)) == list(range(first_seq, first_seq + count)):
            return strip_markers(records) if _BATCH_BYTES in text else records
    except (ValueError, TypeError, KeyError):
        pass  # fall back to the line-by-line parse, which says what is wrong and where
    return None


def parse_line(line: bytes, path: Path, line_no: int) -> dict[str, Any]:
    """Parse one line into a record, or raise `CorruptLogError` naming file and line."""
    try:
        record = loads(line)
    except ValueError as e:
        raise CorruptLogError(str(path), line_no, f"the line is not valid JSON ({e})") from e
    if not isinstance(record, dict) or type(record.get("seq")) is not int:
        raise CorruptLogError(str(path), line_no, "the line is not a record with an int seq")
    record.pop(_BATCH_KEY, None)
    return record


def skip_in(data: bytes | bytearray, count: int) -> int:
    """Offset just past the `count`-th newline of `data` (which has at least that many)."""
    pos = -1
    for _ in range(count):
        pos = data.find(b"\n", pos + 1)
    return pos + 1


def fsync_path(path: Path) -> None:
    """fsync a file or directory by path (a directory, to make a new entry in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

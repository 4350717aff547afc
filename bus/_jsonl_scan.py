"""The batch rule of a JSONL log on disk, and the scan that checks a file against it.

The rule: the first line of a batch of n > 1 records carries the reserved key `"_batch": n`
right after `seq` (`{"seq":5,"_batch":3,...}`); a line without it is a batch of one. Readers
strip the key, so a record reads back exactly as appended (`_batch` is a reserved top-level
key, refused by `append`). Files written before the rule hold no marker: every line is a
batch of one, so they read as before.

A batch is complete when all n lines are there; the scan reports the offset just past the
last complete batch. What follows it (a torn line, a partial batch left by a writer killed
inside its `write`, an unreadable last record) is the torn tail: readers stop before it and
a writer's open moves it whole into the `.corrupt` side file. A seq that is not the one
after the previous line (a duplicate, a line out of order, a missing line) or a batch that
starts inside another one is corruption wherever it is, the last line included, and fails
the open; an unreadable line that is not the last fails the read that reaches it (lenient
mode skips and counts both kinds).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bus import _jsonl_file as jf
from bus._records import RESERVED_KEY
from bus.errors import CorruptLogError

BATCH_KEY = RESERVED_KEY
"""The reserved key on a batch's first line giving the batch's size (only when over 1)."""

# A line's head: seq first, then the optional marker; a JSON string cannot hold a raw
# newline, so every b"\n" in the file ends a line and a head is matched at line starts only.
_W = rb"[ \t\r]*"  # JSON whitespace within a line: files written by other tools may hold it
_MARK = rb"(?:," + _W + b'"' + BATCH_KEY.encode() + b'"' + _W + rb":" + _W + rb"([1-9][0-9]*)" + _W + rb")"
_HEAD = re.compile(rb"\{" + _W + rb'"seq"' + _W + rb":" + _W + rb"([1-9][0-9]*)" + _W + _MARK + rb"?[,}]")
# Matched in b"\n" + block: a literal first character lets `re` skip ahead at C speed,
# which a `(?m)^` anchor would not (half the cost of a scan).
_SEQS = re.compile(rb"\n\{" + _W + rb'"seq"' + _W + rb":" + _W + rb"([1-9][0-9]*)" + _W + rb"[,}]")
_KEY = b'"' + BATCH_KEY.encode() + b'"'
_MARKED = re.compile(rb"\n\{" + _W + rb'"seq"' + _W + rb":" + _W + rb"[1-9][0-9]*" + _W + _MARK + rb"[,}]")


@dataclass
class Position:
    """Where a scan stands: just past a line, its 1-based number and the last good seq."""

    offset: int = 0
    line: int = 0
    seq: int = 0


@dataclass
class Scan:
    """What a scan found in a region of the file."""

    end: Position
    """Just past the last complete batch; bytes after it (up to the scanned size) are torn."""
    bad: list[int] = field(default_factory=list)
    """Lines skipped in lenient mode (1-based)."""


class _Scanner:
    """Walks the lines after a known batch boundary, batch by batch."""

    def __init__(self, path: Path, start: Position, lenient: bool) -> None:
        self.path, self.lenient = path, lenient
        self.at = Position(start.offset, start.line, start.seq)  # just past the current line
        self.end = Position(start.offset, start.line, start.seq)  # the last complete batch
        self.before = self.end  # the complete batch before `end`, for an unreadable last line
        self.left = 0  # lines still missing from the current batch
        self.unreadable: int | None = None  # the line just seen, if it was unreadable
        self.bad: list[int] = []

    def block(self, block: bytes) -> None:
        """Check a block of whole lines: at C speed when all is well, else line by line."""
        if not self._fast_block(block):
            for line in block.split(b"\n")[:-1]:
                self.line(line)

    def _fast_block(self, block: bytes) -> bool:
        """Check every seq with one regex pass and walk only the marked lines; False when
        anything is off, for the line-by-line path to name it."""
        lines = b"\n" + block  # every line now starts after a newline, the last one too
        seqs = _SEQS.findall(lines)
        first, count = self.at.seq + 1, len(seqs)
        if count != block.count(b"\n") or list(map(int, seqs)) != list(range(first, first + count)):
            return False
        pos, left, start = 0, self.left, None  # the current batch: first line, lines, offset
        index, searched = 0, 0
        for mark in _marks(lines):
            index += lines.count(b"\n", searched, mark.start())  # the marked line's index
            searched = mark.start()  # also where the marked line starts in `block`
            if index - pos < left:
                return False  # a batch starts inside another: the slow path names the line
            pos, left, start = index, int(mark[1]), mark.start()
        line0, base = self.at.line, self.at.offset
        self.at = Position(base + len(block), line0 + count, first + count - 1)
        self.unreadable = None
        if pos + left <= count:  # every batch in the block is complete
            # the last line is a batch of its own (a one-line tail of an older batch is not)
            single = pos + left < count or (left == 1 and start is not None)
            last_start = block.rfind(b"\n", 0, len(block) - 1) + 1
            last = Position(base + last_start, line0 + count - 1, first + count - 2)
            self.before = last if single else self.end
            self.end, self.left = Position(self.at.offset, self.at.line, self.at.seq), 0
        else:
            self.left = pos + left - count
            if start is not None:
                self.end = self.before = Position(base + start, line0 + pos, first + pos - 1)
        return True

    def line(self, line: bytes) -> None:
        previous, self.unreadable = self.unreadable, None  # not last: a read names it
        self.at.offset += len(line) + 1
        self.at.line += 1
        head = _HEAD.match(line)
        if head is None:
            self._unreadable_line()
        else:
            self._check_seq(int(head[1]), previous)
        size = int(head[2]) if head and head[2] else 1
        if size > 1 or self.left == 0:
            self._start_batch(size)
        self.left -= 1
        if self.left == 0:
            self.before, self.end = self.end, Position(self.at.offset, self.at.line, self.at.seq)

    def _unreadable_line(self) -> None:
        if self.lenient:
            self.bad.append(self.at.line)
        else:
            self.unreadable = self.at.line
            self.at.seq += 1  # line N holds seq N: the next line is checked against N + 1

    def _check_seq(self, seq: int, previous: int | None) -> None:
        """Accept the next seq; a repeat or step back is corrupt (skipped when lenient, where a
        gap is accepted too, as a lenient read skips what it cannot use). After an unreadable
        line `previous`, the seq it was taken to hold means it held none: it is at fault."""
        if previous is not None and seq == self.at.seq:
            self._corrupt(previous, "the line is not a valid record")
        if seq == self.at.seq + 1 or (self.lenient and seq > self.at.seq):
            self.at.seq = seq
        elif self.lenient:
            self.bad.append(self.at.line)
        else:
            self._corrupt(self.at.line, f"expected seq {self.at.seq + 1}, found {seq}")

    def _start_batch(self, size: int) -> None:
        if self.left > 0 and not self.lenient:
            why = f"a batch starts before the previous one ended ({self.left} lines short)"
            self._corrupt(self.at.line, why)
        self.left = size

    def _corrupt(self, line: int, why: str) -> None:
        raise CorruptLogError(str(self.path), line, why)

    def finish(self, fd: int) -> Position:
        """The end of the complete batches, leaving out an unreadable last record."""
        if self.unreadable is not None:  # the last line: torn, unless it ends a longer batch
            return self.end if self.end.line < self.unreadable else self.before
        if self.end.line and self.end.line == self.before.line + 1 and not self.lenient:
            start = self.before.offset
            if jf.loads_or_none(jf.pread(fd, self.end.offset - start - 1, start)) is None:
                return self.before  # written whole but unparsable: treated as torn, as before
        return self.end


def _marks(lines: bytes) -> Iterator[re.Match[bytes]]:
    """The batch markers of the lines, in order. The key is found by a plain byte search (one
    per batch, where a regex over every line would double the cost of a scan), then matched
    at the start of its line, so the same bytes inside a string value are no marker."""
    found = lines.find(_KEY)
    while found >= 0:
        start = lines.rfind(b"\n", 0, found)
        mark = _MARKED.match(lines, start)
        if mark is not None:
            yield mark
        found = lines.find(_KEY, lines.find(b"\n", found))
        found = found if found > 0 else -1


def scan(fd: int, path: Path, start: Position, stop: int, *, lenient: bool) -> Scan:
    """Check the lines in [start.offset, stop), where `start` is a batch boundary."""
    scanner = _Scanner(path, start, lenient)
    for block in jf.line_blocks(fd, start.offset, stop):
        scanner.block(block)
    return Scan(end=scanner.finish(fd), bad=scanner.bad)

"""Every kind of damage to a JSONL file, in the middle and on the last line: what a writer's
open, a strict reader and a lenient reader do with it (and that readers change nothing)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus import CorruptLogError, JsonlLog

RUN = "run-1"
DEEP = b'{"seq":%d,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def good(seq: int) -> bytes:
    return json.dumps({"seq": seq, "event_id": f"e{seq}"}, separators=(",", ":")).encode()


def goods(*seqs: int) -> list[bytes]:
    return [good(seq) for seq in seqs]


def bad(kind: str, seq: int) -> bytes:
    """A damaged line that stands where the record of `seq` was."""
    return {
        "torn": b'{"seq":%d,"ev' % seq,
        "garbage": b"garbage",
        "empty": b"",
        "utf8": b'{"seq":%d,"event_id":"\xff\xfe"}' % seq,
        "deep": DEEP % seq,
        "nan": b'{"seq":%d,"x":NaN}' % seq,
        "infinity": b'{"seq":%d,"x":-Infinity}' % seq,
    }[kind]


@dataclass(frozen=True)
class Case:
    lines: list[bytes]
    open_error: int | None = None  # the line every strict open names, if it fails
    read_error: int | None = None  # the line a strict read names, if only the read fails
    lenient: tuple[int, ...] = ()  # the seqs a lenient reader returns
    skipped: int = 0  # how many lines it skips
    cut: bool = False  # a writer's open cuts the last line into .corrupt


UNREADABLE = ["torn", "garbage", "empty", "utf8", "deep", "nan", "infinity"]
CASES = {
    **{
        f"{kind} middle": Case(
            [good(1), good(2), bad(kind, 3), good(4), good(5)], read_error=3, lenient=(1, 2, 4, 5), skipped=1
        )
        for kind in UNREADABLE
    },
    **{
        f"{kind} end": Case(
            [good(1), good(2), good(3), bad(kind, 4)],
            lenient=(1, 2, 3),
            skipped=0 if kind == "torn" else 1,
            cut=True,
        )
        for kind in UNREADABLE
    },
    **{
        f"{kind} inserted middle": Case(
            [good(1), good(2), bad(kind, 3), good(3), good(4)], open_error=3, lenient=(1, 2, 3, 4), skipped=1
        )
        for kind in ("garbage", "empty")
    },
    "missing middle": Case(goods(1, 3, 4), open_error=2, lenient=(1, 3, 4)),
    "duplicated middle": Case(goods(1, 2, 2, 3), open_error=3, lenient=(1, 2, 3), skipped=1),
    "out of order middle": Case(goods(1, 3, 2, 4), open_error=2, lenient=(1, 3, 4), skipped=1),
    "duplicated end": Case(goods(1, 2, 3, 2), open_error=4, lenient=(1, 2, 3), skipped=1),
    "out of order end": Case(goods(1, 2, 4, 3), open_error=3, lenient=(1, 2, 4), skipped=1),
}


def write(directory: Path, case: Case, name: str) -> bytes:
    """The case's file; a torn last line has no newline, every other line has one."""
    text = b"".join(line + b"\n" for line in case.lines)
    if name == "torn end":
        text = text[:-1]
    (directory / f"{RUN}.jsonl").write_bytes(text)
    return text


@pytest.mark.parametrize("name", list(CASES))
def test_a_writers_open(tmp_path: Path, name: str) -> None:
    """A writer's open fails on a seq out of place, cuts a damaged last line into .corrupt,
    and leaves a damaged middle line for the read that reaches it."""
    case = CASES[name]
    write(tmp_path, case, name)
    if case.open_error is not None:
        with pytest.raises(CorruptLogError) as info:
            JsonlLog(tmp_path, RUN)
        assert info.value.line == case.open_error
        return
    with JsonlLog(tmp_path, RUN) as log:
        assert log.last_seq() == len(case.lines) - (1 if case.cut else 0)
        assert log.append([{"event_id": "next"}]) == log.last_seq()
    assert (tmp_path / f"{RUN}.jsonl.corrupt").exists() == case.cut


@pytest.mark.parametrize("name", list(CASES))
def test_a_strict_reader(tmp_path: Path, name: str) -> None:
    """A strict reader raises CorruptLogError naming the line (at open or at the read that
    reaches it), stops before a damaged last line, and never changes the file."""
    case = CASES[name]
    text = write(tmp_path, case, name)
    error = case.open_error or case.read_error
    if error is not None:
        with pytest.raises(CorruptLogError) as info, JsonlLog(tmp_path, RUN, readonly=True) as log:
            log.read()
        assert info.value.line == error
    else:
        with JsonlLog(tmp_path, RUN, readonly=True) as log:
            assert [r["seq"] for r in log.read()] == list(case.lenient)
    assert (tmp_path / f"{RUN}.jsonl").read_bytes() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{RUN}.jsonl"]


@pytest.mark.parametrize("name", list(CASES))
def test_a_lenient_reader(tmp_path: Path, name: str) -> None:
    """A lenient reader returns every readable record in order and counts what it skipped."""
    case = CASES[name]
    text = write(tmp_path, case, name)
    with JsonlLog(tmp_path, RUN, readonly=True, lenient=True) as log:
        assert [r["seq"] for r in log.read()] == list(case.lenient)
        assert log.skipped == case.skipped
    assert (tmp_path / f"{RUN}.jsonl").read_bytes() == text

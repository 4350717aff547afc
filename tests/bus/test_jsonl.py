"""The JSONL file format: one object per line, torn tails, bad lines, fsync policies."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bus import CorruptLogError, InvalidArgumentError, JsonlLog

RUN = "run-1"


def write_lines(directory: Path, *lines: str, tail: str = "") -> Path:
    """A log file holding `lines` (each newline-terminated) followed by `tail` bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{RUN}.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines) + tail, encoding="utf-8")
    return path


def good(seq: int) -> str:
    return json.dumps({"seq": seq, "event_id": f"e{seq}"}, separators=(",", ":"))


def test_file_holds_one_compact_object_per_line_seq_first(tmp_path: Path) -> None:
    """Each record is one line of compact JSON (UTF-8, not escaped) with seq first, and the
    first line of a batch of several carries its size in the reserved key, stripped on read."""
    with JsonlLog(tmp_path, RUN) as log:
        log.append([{"event_id": "a", "s": "é"}, {}])
        log.append([{"event_id": "b"}])
        assert log.read() == [{"seq": 1, "event_id": "a", "s": "é"}, {"seq": 2}, {"seq": 3, "event_id": "b"}]
    text = (tmp_path / f"{RUN}.jsonl").read_text(encoding="utf-8")
    assert text == '{"seq":1,"_batch":2,"event_id":"a","s":"é"}\n{"seq":2}\n{"seq":3,"event_id":"b"}\n'


def test_torn_last_line_is_cut_into_corrupt_file_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A last line without a newline is moved to <run>.jsonl.corrupt and logged."""
    path = write_lines(tmp_path, good(1), good(2), tail='{"seq":3,"event')
    with caplog.at_level(logging.WARNING, logger="bus.jsonl"), JsonlLog(tmp_path, RUN) as log:
        assert log.last_seq() == 2
        assert log.append([{"event_id": "e3"}]) == 3
    assert path.read_text().splitlines() == [good(1), good(2), good(3)]
    assert (tmp_path / f"{RUN}.jsonl.corrupt").read_text() == '{"seq":3,"event\n'
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_unparsable_last_line_is_cut_too(tmp_path: Path) -> None:
    """A newline-terminated but unparsable last line counts as torn."""
    write_lines(tmp_path, good(1), '{"seq":2,"ev')
    with JsonlLog(tmp_path, RUN) as log:
        assert [r["seq"] for r in log.read()] == [1]
    assert (tmp_path / f"{RUN}.jsonl.corrupt").read_text() == '{"seq":2,"ev\n'


def test_bad_middle_line_names_file_and_line(tmp_path: Path) -> None:
    """Garbage in the middle raises CorruptLogError with the path and 1-based line."""
    path = write_lines(tmp_path, good(1), "garbage", good(3), good(4))
    with JsonlLog(tmp_path, RUN) as log, pytest.raises(CorruptLogError) as info:
        log.read()
    assert (info.value.path, info.value.line) == (str(path), 2)
    assert f"{path} line 2" in str(info.value)


def test_reads_past_a_bad_line_still_work(tmp_path: Path) -> None:
    """Reading after the bad line does not parse it."""
    write_lines(tmp_path, good(1), "garbage", good(3), good(4))
    with JsonlLog(tmp_path, RUN) as log:
        assert [r["seq"] for r in log.read(2)] == [3, 4]


@pytest.mark.parametrize(
    "bad", ['{"seq":7,"event_id":"x"}', "[1,2]", '{"event_id":"no seq"}', '{"seq":2},{"seq":3}']
)
def test_wrong_or_missing_seq_in_the_middle_is_corrupt(tmp_path: Path, bad: str) -> None:
    """A line with a wrong seq, no seq, or two values is corruption at that line (a wrong
    seq fails the open already, the others the read that reaches them)."""
    write_lines(tmp_path, good(1), bad, good(3))
    with pytest.raises(CorruptLogError) as info, JsonlLog(tmp_path, RUN) as log:
        log.read()
    assert info.value.line == 2


def test_lenient_mode_skips_and_counts_bad_lines(tmp_path: Path) -> None:
    """lenient=True skips bad lines (counted once each in .skipped) and keeps going."""
    write_lines(tmp_path, good(1), "garbage", good(3), "{}", good(5))
    with JsonlLog(tmp_path, RUN, lenient=True) as log:
        assert [r["seq"] for r in log.read()] == [1, 3, 5]
        assert [r["seq"] for r in log.read(1)] == [3, 5]
        assert log.skipped == 2


def test_appends_of_another_handle_are_seen(tmp_path: Path) -> None:
    """Two handles on one file (as two processes would have) see each other's appends."""
    with JsonlLog(tmp_path, RUN) as one, JsonlLog(tmp_path, RUN) as two:
        one.append([{"event_id": "a"}])
        assert two.append([{"event_id": "b"}], expected_seq=1) == 2
        assert [r["event_id"] for r in one.read()] == ["a", "b"]


def test_writer_cuts_a_torn_tail_left_while_it_was_open(tmp_path: Path) -> None:
    """A torn line appearing after open (a dead writer) is cut by the next append."""
    with JsonlLog(tmp_path, RUN) as log:
        log.append([{"event_id": "a"}])
        with open(log.path, "ab") as f:
            f.write(b'{"seq":2,"half')
        assert log.read() == [{"seq": 1, "event_id": "a"}]  # readers ignore a partial line
        assert log.append([{"event_id": "b"}]) == 2
        assert [r["seq"] for r in log.read()] == [1, 2]


def test_file_that_shrinks_under_an_open_log_is_corrupt(tmp_path: Path) -> None:
    """Truncation by someone else is reported, not silently followed."""
    with JsonlLog(tmp_path, RUN) as log:
        log.append([{"event_id": "a"}, {"event_id": "b"}])
        log.path.write_text(good(1) + "\n")
        with pytest.raises(CorruptLogError):
            log.last_seq()


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_every_fsync_policy_writes_the_same_file(tmp_path: Path, fsync: str) -> None:
    """The fsync policy changes durability, never content."""
    with JsonlLog(tmp_path, RUN, fsync=fsync) as log:  # type: ignore[arg-type]  # from the param
        log.append([{"event_id": "a"}])
        log.append([{"event_id": "b"}])
    assert (tmp_path / f"{RUN}.jsonl").read_text() == ('{"seq":1,"event_id":"a"}\n{"seq":2,"event_id":"b"}\n')


def test_unknown_fsync_policy_is_rejected(tmp_path: Path) -> None:
    """fsync must be one of the three policies."""
    with pytest.raises(InvalidArgumentError, match="fsync"):
        JsonlLog(tmp_path, RUN, fsync="sometimes")  # type: ignore[arg-type]  # under test


def test_long_lines_beyond_a_read_chunk(tmp_path: Path) -> None:
    """Records larger than the read chunk are read back whole."""
    big = "x" * (5 << 20)
    with JsonlLog(tmp_path, RUN, max_record_bytes=8 << 20) as log:
        log.append([{"event_id": "a", "big": big}, {"event_id": "b"}])
        assert [len(r.get("big", "")) for r in log.read()] == [len(big), 0]
        assert log.read(1) == [{"seq": 2, "event_id": "b"}]


def test_reads_in_many_chunks_keep_seq_order(tmp_path: Path) -> None:
    """A log larger than one read chunk reads back gapless, from any position."""
    with JsonlLog(tmp_path, RUN, fsync="never") as log:
        pad = "p" * 300
        for start in range(0, 30_000, 5_000):
            log.append([{"event_id": f"e{n}", "pad": pad} for n in range(start, start + 5_000)])
    with JsonlLog(tmp_path, RUN) as fresh:
        assert [r["seq"] for r in fresh.read()] == list(range(1, 30_001))
        assert [r["seq"] for r in fresh.read(25_000, 3)] == [25_001, 25_002, 25_003]
        assert [r["seq"] for r in fresh.read(12_345, 2)] == [12_346, 12_347]

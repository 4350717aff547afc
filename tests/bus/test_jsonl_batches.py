"""JSONL batches are all or none, seqs are checked on every line, and readers change nothing."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from bus import CorruptLogError, InvalidRecordError, JsonlLog, UnknownRunError

RUN = "run-1"


def line(seq: int, **extra: object) -> str:
    return json.dumps({"seq": seq, **extra, "event_id": f"e{seq}"}, separators=(",", ":"))


def batch_of_8_after_2(directory: Path) -> tuple[Path, bytes, bytes]:
    """A log of 2 records then a batch of 8; returns the path, the bytes before the batch
    and the batch's bytes."""
    with JsonlLog(directory, RUN) as log:
        log.append([{"event_id": "a"}, {"event_id": "b"}])
        before = log.path.read_bytes()
        log.append([{"event_id": f"x{i}", "pad": "p" * 50} for i in range(8)])
    data = log.path.read_bytes()
    return log.path, before, data[len(before) :]


@pytest.mark.parametrize("lines_kept", [1, 7])
def test_partial_batch_of_whole_lines_is_cut_whole_on_a_writers_open(
    tmp_path: Path, lines_kept: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch of 8 cut after 1 or 7 whole lines (a writer killed inside its write) is moved,
    whole, into the .corrupt side file with a warning when a writer opens the log."""
    path, before, batch = batch_of_8_after_2(tmp_path)
    kept = b"".join(batch.splitlines(keepends=True)[:lines_kept])
    path.write_bytes(before + kept)
    with caplog.at_level(logging.WARNING, logger="bus.jsonl"), JsonlLog(tmp_path, RUN) as log:
        assert log.last_seq() == 2
        assert log.append([{"event_id": "c"}]) == 3
    assert (tmp_path / f"{RUN}.jsonl.corrupt").read_bytes() == kept
    assert any("partial batch" in r.getMessage() for r in caplog.records)


def test_partial_batch_with_a_torn_line_is_cut_whole(tmp_path: Path) -> None:
    """A batch cut in the middle of its fifth line loses all of its four whole lines too."""
    path, before, batch = batch_of_8_after_2(tmp_path)
    cut = len(b"".join(batch.splitlines(keepends=True)[:4])) + 10
    path.write_bytes(before + batch[:cut])
    with JsonlLog(tmp_path, RUN) as log:
        assert [r["event_id"] for r in log.read()] == ["a", "b"]
    assert path.read_bytes() == before


def test_readers_and_followers_never_yield_a_partial_batch_nor_cut_it(tmp_path: Path) -> None:
    """A read-only handle stops before a partial batch, leaves the file as it is, and sees
    the batch once a writer completes the log past it."""
    path, before, batch = batch_of_8_after_2(tmp_path)
    torn = before + b"".join(batch.splitlines(keepends=True)[:7])
    path.write_bytes(torn)
    with JsonlLog(tmp_path, RUN, readonly=True) as reader:
        assert [r["seq"] for r in reader.read()] == [1, 2]
        assert reader.last_seq() == 2
        assert list(reader.follow_batches(timeout=None, stop=_set_event())) == []
        assert path.read_bytes() == torn
        assert not (tmp_path / f"{RUN}.jsonl.corrupt").exists()
        with JsonlLog(tmp_path, RUN) as writer:
            writer.append([{"event_id": "c"}, {"event_id": "d"}])
        assert [r["event_id"] for r in reader.read(2)] == ["c", "d"]


def _set_event() -> threading.Event:
    """A stop that is already set: a follower only catches up."""
    stop = threading.Event()
    stop.set()
    return stop


def test_records_read_back_exactly_as_appended_in_batches(tmp_path: Path) -> None:
    """The batch marker never shows in what is read; empty records and singles mix freely."""
    batches = [[{}], [{}, {"a": 1}], [{"event_id": "x", "n": [1, {"b": None}]}] * 3, [{"z": "é"}]]
    with JsonlLog(tmp_path, RUN) as log:
        for batch in batches:
            log.append(batch)
    with JsonlLog(tmp_path, RUN, readonly=True) as reader:
        records = reader.read()
    assert [{k: v for k, v in r.items() if k != "seq"} for r in records] == [r for b in batches for r in b]
    assert [r["seq"] for r in records] == list(range(1, 8))


def test_reserved_batch_key_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A record holding the reserved top-level key `_batch` is an InvalidRecordError."""
    with JsonlLog(tmp_path, RUN) as log:
        with pytest.raises(InvalidRecordError, match="_batch"):
            log.append([{"event_id": "a"}, {"_batch": 2}])
        assert log.last_seq() == 0


def test_files_without_markers_read_as_batches_of_one(tmp_path: Path) -> None:
    """A file written before the batch rule (no marker) reads and appends as before."""
    path = tmp_path / f"{RUN}.jsonl"
    path.write_text("".join(line(s) + "\n" for s in (1, 2, 3)))
    with JsonlLog(tmp_path, RUN) as log:
        assert log.append([{"event_id": "e4"}, {"event_id": "e5"}]) == 4
        assert [r["event_id"] for r in log.read()] == [f"e{s}" for s in range(1, 6)]


@pytest.mark.parametrize(
    ("seqs", "bad_line"),
    [((1, 2, 3, 4, 5, 2), 6), ((1, 2, 3, 5), 4), ((1, 3, 2, 4), 2), ((1, 2, 2, 3), 3), ((2, 3), 1)],
)
def test_repeated_or_out_of_order_seq_anywhere_fails_every_open(
    tmp_path: Path, seqs: tuple[int, ...], bad_line: int
) -> None:
    """A duplicate, missing or swapped seq, the last line included, is a CorruptLogError
    naming the line for a writer's and a reader's open, and the file stays as it was."""
    path = tmp_path / f"{RUN}.jsonl"
    text = "".join(line(s) + "\n" for s in seqs)
    path.write_text(text)
    for readonly in (False, True):
        with pytest.raises(CorruptLogError) as info:
            JsonlLog(tmp_path, RUN, readonly=readonly)
        assert (info.value.path, info.value.line) == (str(path), bad_line)
    assert path.read_text() == text


def test_lenient_reader_skips_and_counts_a_repeated_last_seq(tmp_path: Path) -> None:
    """Lenient mode skips a copy of line 2 at the end, counts it, and ends at seq 5."""
    (tmp_path / f"{RUN}.jsonl").write_text("".join(line(s) + "\n" for s in (1, 2, 3, 4, 5, 2)))
    with JsonlLog(tmp_path, RUN, readonly=True, lenient=True) as log:
        assert log.last_seq() == 5
        assert [r["seq"] for r in log.read()] == [1, 2, 3, 4, 5]
        assert log.skipped == 1


def test_read_only_open_of_a_missing_run_creates_nothing(tmp_path: Path) -> None:
    """A read-only handle on a run with no file raises UnknownRunError and creates nothing."""
    with pytest.raises(UnknownRunError):
        JsonlLog(tmp_path / "runs", RUN, readonly=True)
    assert not (tmp_path / "runs").exists()


def test_read_only_handle_refuses_appends(tmp_path: Path) -> None:
    """Appending through a read-only handle is a BusError and writes nothing."""
    with JsonlLog(tmp_path, RUN) as log:
        log.append([{"event_id": "a"}])
    with JsonlLog(tmp_path, RUN, readonly=True) as reader, pytest.raises(Exception, match="read-only"):
        reader.append([{"event_id": "b"}])
    assert (tmp_path / f"{RUN}.jsonl").read_text().count("\n") == 1


def test_lines_with_json_whitespace_are_records_and_the_last_one_is_kept(tmp_path: Path) -> None:
    """A file written by another tool with spaces (`{"seq": 1, ...}`) reads in full, and a
    writer's open does not take its last line for a torn one."""
    path = tmp_path / f"{RUN}.jsonl"
    path.write_text("".join(json.dumps({"seq": s, "event_id": f"e{s}"}) + "\n" for s in (1, 2, 3)))
    with JsonlLog(tmp_path, RUN) as log:
        assert [r["seq"] for r in log.read()] == [1, 2, 3]
        assert log.append([{"event_id": "e4"}]) == 4
    with JsonlLog(tmp_path, RUN, readonly=True, lenient=True) as log:
        assert [r["seq"] for r in log.read()] == [1, 2, 3, 4]
        assert log.skipped == 0

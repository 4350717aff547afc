"""The log contract: test cases every backend must pass, for pytest.

Subclass `LogContract` in a `Test...` class and implement `make_log` (a new handle on this
test's log, which starts empty); override `reopen` if closing and making a new handle is not
how the backend reopens, and `process_url` to run the cases that append from another process.
Imports pytest, so only tests import this module.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bus._log import Log
from bus._open import open as open_log
from bus.errors import (
    BusError,
    ConcurrencyError,
    FollowTimeoutError,
    InvalidArgumentError,
    InvalidRecordError,
    RecordTooLargeError,
)

GUARD_S = 60.0
"""Follow timeout used only so a broken backend fails instead of hanging; never asserted."""


def rec(n: int, **fields: Any) -> dict[str, Any]:
    """A small record with a unique event id."""
    return {"event_id": f"e{n}-{uuid.uuid4().hex[:8]}", "n": n, **fields}


def append_from_process(url: str, run_id: str, start: int, count: int) -> None:
    """Run in a child process: append `count` records one batch at a time, paced so a
    follower sees them arrive live."""
    with open_log(url, run_id) as log:
        for n in range(start, start + count):
            time.sleep(0.02)
            log.append([{"event_id": f"child-{n}", "n": n}])


class LogContract:
    """The cases every `Log` backend passes."""

    @pytest.fixture(autouse=True)
    def _contract_setup(self) -> Iterator[None]:
        self.run_id = f"t-{uuid.uuid4().hex}"
        self.handles: list[Log] = []
        yield
        for handle in self.handles:
            handle.close()

    def make_log(self) -> Log:
        """A new handle on this test's log (empty the first time)."""
        raise NotImplementedError

    def reopen(self, log: Log) -> Log:
        """Close `log` and open it again."""
        log.close()
        return self.new_log()

    def process_url(self) -> str | None:
        """A `bus.open` URL another process can use to reach this test's log, or None."""
        return None

    def new_log(self) -> Log:
        """`make_log`, closed again after the test."""
        log = self.make_log()
        self.handles.append(log)
        return log

    # ordering and batches

    def test_new_log_is_empty(self) -> None:
        """A new log has no records and last seq 0."""
        log = self.new_log()
        assert log.last_seq() == 0
        assert log.read() == []

    def test_seqs_are_gapless_and_in_append_order(self) -> None:
        """Batches get consecutive seqs from 1, and records read back with 'seq' first."""
        log = self.new_log()
        first = [rec(1), rec(2), rec(3)]
        assert log.append(first) == 1
        assert log.append([rec(4)]) == 4
        records = log.read()
        assert [r["seq"] for r in records] == [1, 2, 3, 4]
        assert all(next(iter(r)) == "seq" for r in records)
        assert records[0] == {"seq": 1, **first[0]}
        assert log.last_seq() == 4

    def test_seq_in_a_record_is_replaced_by_the_assigned_one(self) -> None:
        """A 'seq' field in an appended record is ignored; the log's seq stands first."""
        log = self.new_log()
        log.append([{"seq": 99, "event_id": "a"}])
        assert log.read() == [{"seq": 1, "event_id": "a"}]
        assert list(log.read()[0]) == ["seq", "event_id"]

    def test_empty_batch_writes_nothing(self) -> None:
        """An empty batch returns last_seq + 1 and leaves the log as it was."""
        log = self.new_log()
        assert log.append([]) == 1
        log.append([rec(1)])
        assert log.append([]) == 2
        assert log.append([], expected_seq=0) == 2  # nothing to conflict with
        assert log.last_seq() == 1

    def test_values_round_trip(self) -> None:
        """Plain values come back equal, tuples as lists, subclasses as plain values."""
        log = self.new_log()
        value: dict[str, Any] = {
            "event_id": "v",
            "s": "héllo ☃",
            "i": -(2**63),
            "u": 2**64 - 1,
            "f": 0.1,
            "t": True,
            "none": None,
            "l": [1, [2, {"x": "y"}]],
            "tup": (1, 2),
            "d": {"nested": {"deep": [1.5, "a"]}},
            "empty": {},
        }
        log.append([value])
        (back,) = log.read()
        expected = {"seq": 1, **value, "tup": [1, 2]}
        assert back == expected
        assert type(back["tup"]) is list

    def test_read_returns_copies(self) -> None:
        """Changing a record that was appended or read changes nothing stored."""
        log = self.new_log()
        mine: dict[str, Any] = {"event_id": "a", "d": {"k": [1]}}
        log.append([mine])
        mine["d"]["k"].append(2)
        got = log.read()[0]
        got["d"]["k"].append(3)
        assert log.read() == [{"seq": 1, "event_id": "a", "d": {"k": [1]}}]

    # batch atomicity and bad input

    @pytest.mark.parametrize(
        "bad",
        [
            {"x": float("nan")},
            {"x": float("inf")},
            {"x": {1, 2}},
            {"x": b"bytes"},
            {1: "int key"},
            {"x": object()},
            {"x": 2**64},
            "not a mapping",
        ],
        ids=["nan", "inf", "set", "bytes", "int-key", "object", "int-too-big", "str"],
    )
    def test_bad_record_rejects_whole_batch(self, bad: Any) -> None:
        """A batch holding one invalid record raises InvalidRecordError and writes nothing."""
        log = self.new_log()
        log.append([rec(1)])
        with pytest.raises(InvalidRecordError):
            log.append([rec(2), bad, rec(3)])
        assert [r["n"] for r in log.read()] == [1]

    def test_oversize_record_rejects_whole_batch(self) -> None:
        """A record over max_record_bytes raises RecordTooLargeError and writes nothing."""
        log = self.new_log()
        huge = rec(2, blob="x" * (log.max_record_bytes + 1))
        with pytest.raises(RecordTooLargeError):
            log.append([rec(1), huge])
        assert log.last_seq() == 0

    def test_single_record_is_not_a_batch(self) -> None:
        """Passing one mapping instead of a list of them is rejected."""
        log = self.new_log()
        with pytest.raises(InvalidRecordError):
            log.append(rec(1))  # type: ignore[arg-type]  # the mistake under test
        assert log.last_seq() == 0

    # optimistic concurrency and idempotent retries

    def test_expected_seq_that_matches_appends(self) -> None:
        """With expected_seq equal to the last seq the batch lands right after it."""
        log = self.new_log()
        assert log.append([rec(1)], expected_seq=0) == 1
        assert log.append([rec(2), rec(3)], expected_seq=1) == 2
        assert log.last_seq() == 3

    def test_stale_expected_seq_raises_with_actual(self) -> None:
        """A stale expected_seq raises ConcurrencyError carrying the real last seq."""
        log = self.new_log()
        log.append([rec(1), rec(2)])
        with pytest.raises(ConcurrencyError) as info:
            log.append([rec(3)], expected_seq=1)
        assert (info.value.expected, info.value.actual) == (1, 2)
        with pytest.raises(ConcurrencyError) as ahead:
            log.append([rec(3)], expected_seq=5)
        assert ahead.value.actual == 2
        assert log.last_seq() == 2

    @pytest.mark.parametrize("expected", [-1, 1.5, "0", True])
    def test_an_expected_seq_that_is_not_a_seq_is_refused(self, expected: Any) -> None:
        """expected_seq takes a non-negative int; anything else is refused before a write."""
        log = self.new_log()
        with pytest.raises(InvalidArgumentError, match="expected_seq"):
            log.append([rec(1)], expected_seq=expected)
        assert log.last_seq() == 0

    def test_retry_of_landed_batch_is_success_without_duplicate(self) -> None:
        """Appending the same batch again with the same expected_seq returns its first seq."""
        log = self.new_log()
        log.append([rec(0)])
        batch = [rec(1), rec(2)]
        assert log.append(batch, expected_seq=1) == 2
        log.append([rec(3)])
        assert log.append(batch, expected_seq=1) == 2
        assert log.last_seq() == 4
        assert [r["event_id"] for r in log.read(1, 2)] == [b["event_id"] for b in batch]

    def test_retry_with_other_ids_conflicts(self) -> None:
        """Different ids, a longer batch, or missing ids at the expected positions conflict."""
        log = self.new_log()
        batch = [rec(1), rec(2)]
        log.append(batch, expected_seq=0)
        for other in ([rec(1), rec(2)], [*batch, rec(3)], [batch[1], batch[0]]):
            with pytest.raises(ConcurrencyError):
                log.append(other, expected_seq=0)
        assert log.last_seq() == 2

    def test_records_without_ids_are_never_taken_for_retries(self) -> None:
        """Without id_key in the records a stale expected_seq always conflicts."""
        log = self.new_log()
        log.append([{"n": 1}], expected_seq=0)
        with pytest.raises(ConcurrencyError):
            log.append([{"n": 1}], expected_seq=0)

    def test_threads_racing_with_expected_seq_each_win_distinct_seqs(self) -> None:
        """Two threads appending with expected_seq: every seq is won by exactly one of them."""
        log = self.new_log()
        wins: dict[str, list[int]] = {"a": [], "b": []}
        conflicts = {"a": 0, "b": 0}

        def writer(name: str) -> None:
            handle = self.make_log()
            try:
                while handle.last_seq() < 40:
                    last = handle.last_seq()
                    try:
                        wins[name].append(handle.append([rec(last, by=name)], expected_seq=last))
                    except ConcurrencyError:
                        conflicts[name] += 1
            finally:
                handle.close()

        threads = [threading.Thread(target=writer, args=(n,)) for n in wins]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = log.read()
        assert sorted(wins["a"] + wins["b"]) == [r["seq"] for r in records]
        assert not set(wins["a"]) & set(wins["b"])
        assert all(r["by"] == ("a" if r["seq"] in wins["a"] else "b") for r in records)

    # reading windows

    def test_read_windows(self) -> None:
        """read(after, limit) returns exactly the slice seq in (after, after + limit]."""
        log = self.new_log()
        log.append([rec(n) for n in range(1, 8)])
        log.append([rec(n) for n in range(8, 13)])
        everything = log.read()
        for after, limit in itertools.product(range(-1, 15), [None, 0, 1, 2, 5, 100]):
            start = max(after, 0)
            stop = None if limit is None else start + limit
            assert log.read(after, limit) == everything[start:stop], (after, limit)

    def test_pages_cover_the_log_after_a_point_in_bounded_pages(self) -> None:
        """pages(after, size) yields consecutive pages of at most `size` records, to the end."""
        log = self.new_log()
        log.append([rec(n) for n in range(1, 8)])
        everything = log.read()
        for after, size in itertools.product(range(0, 9), [1, 2, 3, 7, 50]):
            pages = list(log.pages(after, size=size))
            assert all(0 < len(page) <= size for page in pages), (after, size)
            assert [r for page in pages for r in page] == everything[after:], (after, size)
        assert [len(page) for page in log.pages()] == [7]

    def test_pages_include_records_appended_while_reading(self) -> None:
        """A page read after an append sees it: catching up reads to the end as of each read."""
        log = self.new_log()
        log.append([rec(1), rec(2)])
        seen = []
        for page in log.pages(size=1):
            seen += [r["n"] for r in page]
            if page[-1]["seq"] == 2:
                log.append([rec(3)])
        assert seen == [1, 2, 3]

    @pytest.mark.parametrize("size", [0, -1, 1.5, True])
    def test_a_page_size_below_one_record_is_refused(self, size: Any) -> None:
        """pages(size=...) takes an int of at least 1, and says so."""
        log = self.new_log()
        with pytest.raises(InvalidArgumentError, match="at least 1 record"):
            next(log.pages(size=size))

    # following

    def test_follow_from_every_position(self) -> None:
        """follow(after) yields every record after `after`, in order, then waits."""
        log = self.new_log()
        log.append([rec(n) for n in range(1, 5)])
        log.append([rec(n) for n in range(5, 7)])
        everything = log.read()
        for after in range(0, 7):
            got = list(itertools.islice(log.follow(after, timeout=GUARD_S), 6 - after))
            assert got == everything[after:]

    def test_follow_batches_are_consecutive_and_non_empty(self) -> None:
        """follow_batches yields non-empty batches whose seqs continue each other."""
        log = self.new_log()
        log.follow_batch_size = 3
        log.append([rec(n) for n in range(1, 9)])
        seqs: list[int] = []
        for batch in log.follow_batches(0, timeout=GUARD_S):
            assert batch
            seqs.extend(r["seq"] for r in batch)
            if seqs[-1] == 8:
                break
        assert seqs == list(range(1, 9))

    def test_follow_times_out_after_last_record(self) -> None:
        """With nothing new within `timeout`, follow raises FollowTimeoutError(after=last)."""
        log = self.new_log()
        log.append([rec(1), rec(2)])
        seen = []
        with pytest.raises(FollowTimeoutError) as info:
            for record in log.follow(0, timeout=0.2):
                seen.append(record["seq"])
        assert seen == [1, 2]
        assert info.value.after == 2

    def test_stop_event_ends_follow(self) -> None:
        """Setting `stop` ends the follow generator without an error."""
        log = self.new_log()
        log.append([rec(1)])
        stop = threading.Event()
        seen = []
        for record in log.follow(0, stop=stop):
            seen.append(record["seq"])
            stop.set()
        assert seen == [1]

    def test_follow_sees_live_appends_from_a_thread(self) -> None:
        """A follower gets records another handle appends while it waits, none skipped."""
        log = self.new_log()
        log.append([rec(0)])
        writer_log = self.make_log()

        def write() -> None:
            for n in range(1, 21):
                writer_log.append([rec(n)])
                time.sleep(0.005)

        thread = threading.Thread(target=write)
        thread.start()
        try:
            got = [r["n"] for r in itertools.islice(log.follow(0, timeout=GUARD_S), 21)]
        finally:
            thread.join()
            writer_log.close()
        assert got == list(range(0, 21))

    def test_follow_sees_live_appends_from_a_process(self) -> None:
        """A follower gets records a separate process appends while it waits."""
        url = self.process_url()
        if url is None:
            pytest.skip("this backend cannot be reached from another process")
        log = self.new_log()
        log.append([rec(0)])
        context = multiprocessing.get_context("spawn")
        child = context.Process(target=append_from_process, args=(url, self.run_id, 1, 10))
        child.start()
        try:
            got = [r["n"] for r in itertools.islice(log.follow(0, timeout=GUARD_S), 11)]
        finally:
            child.join(GUARD_S)
        assert child.exitcode == 0
        assert got == list(range(0, 11))
        assert [r["seq"] for r in log.read()] == list(range(1, 12))

    # lifecycle

    def test_reopen_keeps_records(self) -> None:
        """Records survive closing and reopening, and appends continue the seqs."""
        log = self.new_log()
        log.append([rec(1), rec(2)])
        before = log.read()
        again = self.reopen(log)
        self.handles.append(again)
        assert again.read() == before
        assert again.append([rec(3)]) == 3

    def test_close_is_idempotent_and_blocks_use(self) -> None:
        """close() twice is harmless; using a closed log raises BusError."""
        log = self.new_log()
        with log as same:
            assert same is log
            log.append([rec(1)])
        log.close()
        with pytest.raises(BusError):
            log.append([rec(2)])
        with pytest.raises(BusError):
            log.read()

    def test_repr_and_url_name_the_log(self) -> None:
        """repr shows the backend, URL and run id."""
        log = self.new_log()
        assert self.run_id in repr(log)
        assert log.url in repr(log)

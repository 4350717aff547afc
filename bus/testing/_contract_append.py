"""The log contract's cases for appending: seqs, batches, bad input, expected_seq and retries.

Imports pytest, so only tests import this module.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bus.errors import ConcurrencyError, InvalidArgumentError, InvalidRecordError, RecordTooLargeError
from bus.testing._contract_harness import LogHarness, rec


class AppendCases(LogHarness):
    """The contract cases that append: ordering, batch atomicity, optimistic concurrency."""

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
            {"seq": float("nan")},
            {"seq": b"bytes"},
            "not a mapping",
        ],
        ids=["nan", "inf", "set", "bytes", "int-key", "object", "int-too-big", "nan-seq", "bytes-seq", "str"],
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

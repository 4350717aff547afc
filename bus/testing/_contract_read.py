"""The log contract's cases for reading: windows, pages, following, and a handle's lifecycle.

Imports pytest, so only tests import this module.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from typing import Any

import pytest

from bus.errors import BusError, FollowTimeoutError, InvalidArgumentError
from bus.testing._contract_harness import GUARD_S, LogHarness, append_from_process, rec


class ReadCases(LogHarness):
    """The contract cases that read back: windows, pages, follow, reopen and close."""

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

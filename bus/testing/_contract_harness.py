"""The harness of the log contract: the hooks a backend implements, and the records the cases write.

Imports pytest, so only tests import this module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bus._log import Log
from bus._open import open as open_log

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


class LogHarness:
    """A test's log handles: the hooks a backend implements, and the handles closed after it."""

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

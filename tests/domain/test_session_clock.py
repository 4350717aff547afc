"""The `Lifecycle` writer's clock and start: derived from the log, so a reopened writer goes on."""

from __future__ import annotations

import pytest

from bus import MemoryLog
from lifecycle_es import InvalidTransitionError, Lifecycle


def test_a_lifecycle_reopened_on_a_log_stamps_its_next_entity_at_the_runs_latest_step() -> None:
    """A writer reopened on a log at step 500 registers its next entity born at 500, not at 0."""
    log = MemoryLog("clock")
    first = Lifecycle(log)
    first.start(seed=1)
    first.register("m0", "module", slot=0, step=500)
    reopened = Lifecycle(log)
    assert reopened.step == 500
    born = reopened.register("m1", "module", slot=1)
    assert born.born_step == 500
    assert [r["step"] for r in log.read()][-1] == 500


def test_advance_moves_the_clock_past_the_log_and_never_back() -> None:
    """`advance` sets a later step; the clock is never earlier than what the log holds."""
    lc = Lifecycle(MemoryLog("advance"))
    lc.start()
    lc.advance(40)
    assert lc.step == 40
    lc.register("m0", "module", slot=0, step=90)
    assert lc.step == 90


def test_a_run_starts_once() -> None:
    """`start()` on a started run raises and appends nothing, in the same writer or a reopened one."""
    log = MemoryLog("twice")
    lc = Lifecycle(log)
    lc.start(seed=7)
    before = log.last_seq()
    for writer in (lc, Lifecycle(log)):
        with pytest.raises(InvalidTransitionError, match="has already started"):
            writer.start(seed=8)
    assert log.last_seq() == before
    assert Lifecycle(log).registry.run_seed == 7

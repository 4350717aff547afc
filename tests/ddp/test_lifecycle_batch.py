"""`Lifecycle.batch`, `fold` and `restore`: the leader's one atomic write per step and a rank's catch-up."""

from __future__ import annotations

import pytest

from bus import ConcurrencyError, MemoryLog
from lifecycle_es import Lifecycle, UsageError


@pytest.fixture
def lc() -> Lifecycle:
    """A started run on an in-memory log."""
    lifecycle = Lifecycle(MemoryLog("batch"))
    lifecycle.start()
    return lifecycle


def _attach(lc: Lifecycle) -> MemoryLog:
    """Another handle on the run's in-memory log, as another process would open it."""
    assert isinstance(lc.log, MemoryLog)
    return lc.log.attach()


def test_a_batch_is_folded_at_once_and_written_as_one_append_at_its_end(lc: Lifecycle) -> None:
    """Inside a batch each command sees its own events, readers of the log see none until it ends."""
    reader = _attach(lc)
    before = lc.registry.seq
    with lc.batch() as pending:
        lc.observe({"loss": 1.0}, step=10)
        lc.seal(10)
        assert lc.registry.sealed_step == 10 and lc.registry.seq == before + 2
        assert reader.last_seq() == before and len(pending) == 2
    records = reader.read(after=before)
    assert [r["kind"] for r in records] == ["MetricsObserved", "StepSealed"]
    assert [r["seq"] for r in records] == [before + 1, before + 2]


def test_an_error_inside_a_batch_restores_the_registry_and_writes_nothing(lc: Lifecycle) -> None:
    """A block that raises leaves the registry as it was and the log untouched."""
    registry, seq = lc.registry.copy(), lc.log.last_seq()
    with pytest.raises(RuntimeError, match="boom"), lc.batch():
        lc.observe({"loss": 1.0}, step=10)
        lc.seal(10)
        raise RuntimeError("boom")
    assert lc.registry == registry and lc.log.last_seq() == seq
    lc.seal(10)  # the lifecycle is usable again, from where it was
    assert lc.log.last_seq() == seq + 1


def test_a_batch_that_loses_the_append_race_writes_nothing_of_it(lc: Lifecycle) -> None:
    """Another writer appending during the batch makes its one append fail whole; registry = the log's."""
    other = Lifecycle(_attach(lc))
    seq = lc.log.last_seq()
    with pytest.raises(ConcurrencyError), lc.batch():
        lc.observe({"loss": 1.0}, step=10)
        other.seal(5)
        lc.seal(10)
    assert [r["kind"] for r in lc.log.read(after=seq)] == ["StepSealed"]  # the other writer's only
    assert lc.registry == Lifecycle(_attach(lc)).registry  # folded from the log, nothing of the batch
    assert lc.registry.sealed_step == 5


def test_a_nested_batch_is_refused(lc: Lifecycle) -> None:
    """Opening a batch inside a batch raises UsageError, and the outer one still writes normally."""
    seq = lc.log.last_seq()
    with lc.batch():
        lc.seal(10)
        with pytest.raises(UsageError, match="already open"), lc.batch():
            pass  # pragma: no cover
    assert lc.log.last_seq() == seq + 1


def test_an_empty_batch_appends_nothing(lc: Lifecycle) -> None:
    """A batch in which nothing is recorded leaves the log as it was."""
    seq = lc.log.last_seq()
    with lc.batch() as pending:
        assert pending == []
    assert lc.log.last_seq() == seq


def test_fold_skips_records_at_or_below_the_registry_seq(lc: Lifecycle) -> None:
    """Records folded already (seq <= registry.seq) are skipped; only the new ones count."""
    follower = Lifecycle(lc.log.attach())  # type: ignore[attr-defined]
    lc.seal(10)
    lc.seal(20)
    records = lc.log.read()
    assert follower.fold(records) == 2  # RunStarted and RunStateChanged were folded at construction
    assert follower.fold(records) == 0
    assert follower.registry == lc.registry


def test_restore_continues_from_a_snapshot_and_refuses_another_runs(lc: Lifecycle) -> None:
    """A restored registry equals the snapshot, catches up from its seq; another run's snapshot is refused."""
    lc.seal(10)
    state = lc.registry.to_state()
    lc.seal(20)
    follower = Lifecycle(lc.log.attach())  # type: ignore[attr-defined]
    follower.restore(state)
    assert follower.registry.sealed_step == 10
    assert follower.catch_up() == 1 and follower.registry == lc.registry
    with pytest.raises(UsageError, match="cannot restore run"):
        Lifecycle(MemoryLog("other")).restore(state)

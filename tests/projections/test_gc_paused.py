"""The bulk-replay GC pause: off inside, and the collector's prior state restored after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from projections.runner import gc_paused


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_inside_and_on_again_after() -> None:
    """An enabled collector is paused inside the block and enabled again after it."""
    gc.enable()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    """A caller who had disabled the collector keeps it disabled after the block."""
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_collector_is_restored_when_the_replay_raises() -> None:
    """An error inside the block still re-enables the collector."""
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a projection failed")
    assert gc.isenabled()

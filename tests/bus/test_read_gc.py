"""The bulk-read GC pause (`bus.gc_paused`): it nests, it is shared between threads (the last
pause to end restores the collector), and bulk reads run under it."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import projections.runner
from bus import JsonlLog, gc_paused


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


def test_an_inner_pause_leaves_the_collector_off_until_the_outer_one_ends() -> None:
    """A pause inside a pause does not turn the collector back on when it ends."""
    gc.enable()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_last_pause_to_end_in_any_thread_restores_the_collector() -> None:
    """Two threads' pauses overlap: the first to end leaves the collector off for the other,
    the last to end turns it on again."""
    gc.enable()
    entered, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with gc_paused():
            entered.set()
            release.wait()
        seen.append(gc.isenabled())

    thread = threading.Thread(target=other)
    with gc_paused():
        thread.start()
        entered.wait()
    assert not gc.isenabled()  # the other thread's pause is still running
    release.set()
    thread.join()
    assert seen == [True]
    assert gc.isenabled()


def test_a_pause_ended_by_an_error_still_restores_the_collector() -> None:
    """An error inside a pause, or inside nested pauses, re-enables the collector once they end."""
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a projection failed")
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused(), gc_paused():
        raise RuntimeError("a read failed")
    assert gc.isenabled()


def test_the_projections_pause_is_the_bus_pause() -> None:
    """A replay's pause and a bulk read's pause are one, so they nest with each other."""
    assert projections.runner.gc_paused is gc_paused


def test_a_bulk_read_inside_a_replays_pause_leaves_the_collector_off(tmp_path: Path) -> None:
    """A read's own pause, nested in a replay's, does not turn the collector on under it; the
    collector is on again after both."""
    gc.enable()
    with JsonlLog(tmp_path, "paused") as log:
        log.append([{"n": i} for i in range(3)])
        with gc_paused():
            records = log.read()
            assert not gc.isenabled()
    assert [r["n"] for r in records] == [0, 1, 2]
    assert gc.isenabled()

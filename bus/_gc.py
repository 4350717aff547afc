"""The cyclic garbage collector paused for a bulk read, and restored after.

A bulk read builds tens of thousands of records at once; every record holding a nested map
is a container the cyclic collector tracks, so a read of many records grows the tracked heap
by more than a quarter and sets off full collections that rescan the whole heap (measured:
one full collection was a quarter of a 50,000-record `JsonlLog.read`, none happens at 10,000,
hence the per-record cost grew with the number of records; in a replay the collector took a
third of the time at 300k events). The records are acyclic and reference counting frees them,
so nothing is lost by not scanning them while they are built.

The pause nests and is shared between threads: the collector is turned off by the first
pause to start and restored (to on, if it was on then) by the last one to end, so neither an
inner pause nor another thread's turns it back on under a read still running.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["gc_paused"]

_lock = threading.Lock()
_depth = 0
"""Pauses running now, in every thread."""
_was_enabled = False
"""Whether the collector was on when the outermost running pause began."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector inside the block; restore it when the last running
    pause ends, also on an error."""
    _enter()
    try:
        yield
    finally:
        _exit()


def _enter() -> None:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1


def _exit() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0 and _was_enabled:
            gc.enable()

"""Property: every backend behaves exactly like the reference MemoryLog on random sequences
of appends (fresh, stale, retried, empty, invalid) and reads."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import BusError, JsonlLog, Log, MemoryLog, RedisLog

# An operation: ("append", size, expected offset from the true last seq or None,
# reuse a previous batch?) or ("read", after, limit).
appends = st.tuples(
    st.just("append"),
    st.integers(0, 4),
    st.one_of(st.none(), st.integers(-3, 1)),
    st.booleans(),
)
reads = st.tuples(st.just("read"), st.integers(-1, 25), st.one_of(st.none(), st.integers(0, 6)))
operations = st.lists(st.one_of(appends, reads), max_size=25)


def outcome(fn: Callable[[], Any]) -> Any:
    """What a call returned, or the type and salient fields of the bus error it raised."""
    try:
        return fn()
    except BusError as e:
        return (type(e).__name__, getattr(e, "actual", None))


def play(log: Log, ops: list[Any], batches: list[list[dict[str, Any]]]) -> list[Any]:
    """Apply `ops` to `log`; batches are drawn from `batches` so every log gets the same."""
    results: list[Any] = []
    used, last = 0, 0
    for op in ops:
        if op[0] == "read":
            results.append(outcome(partial(log.read, op[1], op[2])))
            continue
        _, size, offset, reuse = op
        batch = batches[max(used - 1, 0)] if reuse and used else batches[used]
        used += 0 if reuse and used else 1
        expected = None if offset is None else max(last + offset, 0)
        results.append(outcome(partial(log.append, batch[:size], expected)))
        last = log.last_seq()
    results.append(log.read())
    return results


def make_batches() -> list[list[dict[str, Any]]]:
    return [[{"event_id": uuid.uuid4().hex, "k": k, "i": i} for i in range(4)] for k in range(30)]


BACKENDS: dict[str, Callable[[Path, str], Log]] = {
    "jsonl": lambda tmp, run: JsonlLog(tmp, run, fsync="never"),
    "fakeredis": lambda tmp, run: RedisLog.from_client(fakeredis.FakeRedis(), run),
}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_backend_matches_reference(backend: str, ops: list[Any], tmp_path: Path) -> None:
    """Same operations, same results, same final records as MemoryLog."""
    if backend == "fakeredis":
        pytest.importorskip("lupa")
    batches, run = make_batches(), f"t-{uuid.uuid4().hex}"
    with MemoryLog(run) as reference, BACKENDS[backend](tmp_path, run) as log:
        assert play(log, ops, batches) == play(reference, ops, batches)

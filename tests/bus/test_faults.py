"""Crashes and races: redis-server restarted mid-run, two writer processes racing with
expected_seq. Nothing here asserts on timing."""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
import time
import uuid
from pathlib import Path

import _workers
import pytest

import bus
from bus import RedisLog, RetryPolicy
from bus.testing import RedisFactory, RedisServer

GUARD_S = 60.0  # a hung child fails the test instead of hanging CI; never asserted
# The SIGKILL tests of JSONL, Redis and mirrored writers are in test_kills.py.


@pytest.mark.slow
def test_redis_restart_with_appendfsync_always_loses_and_repeats_nothing(
    redis_factory: RedisFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer rides out two redis-server crashes (SIGKILL + restart on the same AOF)
    with bounded retries; every acknowledged record is there exactly once."""
    server = redis_factory.start("--appendonly", "yes", "--appendfsync", "always")
    policy = RetryPolicy(attempts=40, backoff_s=0.02, backoff_cap_s=0.25)
    acknowledged: list[str] = []

    def restart_twice() -> None:
        for _ in range(2):
            time.sleep(random.uniform(0.05, 0.3))
            server.restart()

    caplog.set_level(logging.DEBUG, logger="bus.redis")  # retries are logged at debug
    with RedisLog(server.url, f"t-{uuid.uuid4().hex}", policy=policy) as log:
        restarter = threading.Thread(target=restart_twice)
        restarter.start()
        while restarter.is_alive() or len(acknowledged) < 2000:
            batch = [{"event_id": uuid.uuid4().hex} for _ in range(20)]
            log.append(batch)
            acknowledged.extend(r["event_id"] for r in batch)
        restarter.join()
        records = log.read()
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert [r["event_id"] for r in records] == acknowledged
    assert any("unreachable" in r.getMessage() for r in caplog.records)  # it did reconnect


def race_two_processes(url: str, run_id: str, rounds: int = 25) -> None:
    """Two spawned writers append with expected_seq=k in every round k: exactly one wins
    each seq, and the other gets ConcurrencyError carrying the winner's seq."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2, timeout=GUARD_S), context.Queue()
    children = [
        context.Process(target=_workers.race, args=(url, run_id, name, rounds, barrier, results))
        for name in ("a", "b")
    ]
    for child in children:
        child.start()
    outcomes = dict(results.get(timeout=GUARD_S) for _ in children)
    for child in children:
        child.join(GUARD_S)
        assert child.exitcode == 0
    for k in range(rounds):
        a, b = outcomes["a"][k], outcomes["b"][k]
        assert sorted([a[1], b[1]]) == ["lost", "won"], (k, a, b)
        assert a[2] == b[2] == k + 1  # the loser was told the winner's seq
    with bus.open(url, run_id) as log:
        records = log.read()
    assert [r["seq"] for r in records] == list(range(1, rounds + 1))
    for r in records:
        assert outcomes[r["by"]][r["seq"] - 1][1] == "won"


@pytest.mark.slow
@pytest.mark.redis_server
def test_two_redis_writer_processes_race_with_expected_seq(redis_server: RedisServer) -> None:
    """On Redis each seq is won by exactly one process; the other gets ConcurrencyError."""
    race_two_processes(redis_server.url, f"t-{uuid.uuid4().hex}")


@pytest.mark.slow
def test_two_jsonl_writer_processes_race_with_expected_seq(tmp_path: Path) -> None:
    """On one JSONL file each seq is won by exactly one process; lines never interleave."""
    race_two_processes(f"jsonl://{tmp_path}", f"t-{uuid.uuid4().hex}")

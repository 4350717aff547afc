"""Crashes and races: a writer SIGKILLed mid-append, redis-server restarted mid-run, two
writer processes racing with expected_seq. Nothing here asserts on timing."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _workers
import pytest

import bus
from bus import JsonlLog, Log, RedisLog, RetryPolicy
from bus.testing import RedisFactory, RedisServer

GUARD_S = 60.0  # a hung child fails the test instead of hanging CI; never asserted
KILLS = 20


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail (not hang) after GUARD_S."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.002)


def assert_whole(log: Log, acknowledged: int) -> int:
    """The log is gapless from 1, holds no record twice, and lost nothing acknowledged."""
    records = log.read()
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["event_id"] for r in records}) == len(records)
    assert len(records) >= acknowledged
    return len(records)


def kill_writer_repeatedly(url: str, run_id: str, check: Callable[[int], None]) -> None:
    """Start a writer, let it acknowledge at least one batch, SIGKILL it at a random moment,
    and run `check(last acknowledged seq)`; KILLS times."""
    context = multiprocessing.get_context("forkserver")  # fast, clean children for 20 kills
    context.set_forkserver_preload(["bus", "_workers"])
    rng = random.Random(0)
    for _ in range(KILLS):
        check(kill_one_writer(context, url, run_id, rng.uniform(0, 0.05)))


def kill_one_writer(context: Any, url: str, run_id: str, delay: float) -> int:
    """Run one writer until its first acknowledged append, then `delay` s more, then SIGKILL
    it; returns the last seq it had acknowledged."""
    acked = context.RawValue("q", 0)  # lock-free: a killed child cannot leave a lock held
    child = context.Process(target=_workers.append_until_killed, args=(url, run_id, acked))
    child.start()
    wait_for(lambda: acked.value > 0 or child.exitcode is not None, "the first append")
    assert child.exitcode is None, "the writer died before it was killed"
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    return int(acked.value)


@pytest.mark.slow
def test_jsonl_writer_killed_20_times_leaves_a_whole_log(tmp_path: Path) -> None:
    """After each SIGKILL the reopened JSONL log has no gap, no duplicate, no lost ack."""
    run_id = f"t-{uuid.uuid4().hex}"

    def check(acknowledged: int) -> None:
        with JsonlLog(tmp_path, run_id) as log:
            assert_whole(log, acknowledged)

    kill_writer_repeatedly(f"jsonl://{tmp_path}", run_id, check)


@pytest.mark.slow
@pytest.mark.redis_server
def test_mirrored_writer_killed_20_times_mirror_equals_primary(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """After each SIGKILL, reopening the mirrored log catches the mirror up to the primary."""
    run_id = f"t-{uuid.uuid4().hex}"
    url = f"{redis_server.url}?mirror={tmp_path}"

    def check(acknowledged: int) -> None:
        with bus.open(url, run_id) as log:
            assert isinstance(log, bus.MirroredLog)
            assert_whole(log, acknowledged)
            assert bus.verify(log.primary, log.mirror).equal

    kill_writer_repeatedly(url, run_id, check)


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


REDIS_KILLS = 50


@pytest.mark.slow
@pytest.mark.redis_server
def test_redis_writer_killed_50_times_leaves_whole_batches(redis_server: RedisServer, tmp_path: Path) -> None:
    """A Redis writer SIGKILLed 50 times, often mid-send of a large batch: after each kill
    the log is gapless, holds no duplicate, has every acknowledged batch and no partial one."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bus", "_workers"])
    run_id, rng, checked = f"t-{uuid.uuid4().hex}", random.Random(1), 0
    for kill in range(REDIS_KILLS):
        ack_path = tmp_path / f"acks-{kill}"
        acks = kill_batch_writer(context, (redis_server.url, run_id, str(ack_path)), rng.uniform(0, 0.03))
        checked = check_batches(redis_server.url, run_id, checked, acks)
    print(f"\nredis writer kills: {REDIS_KILLS}, records: {checked}")


def kill_batch_writer(context: Any, args: tuple[str, str, str], delay: float) -> list[str]:
    """Run one batch writer until its first ack, then `delay` s more, then SIGKILL it;
    returns the ack lines it wrote."""
    ack_path = Path(args[2])
    child = context.Process(target=_workers.append_batches_until_killed, args=args)
    child.start()

    def acked_or_dead() -> bool:
        return (ack_path.exists() and ack_path.stat().st_size > 0) or child.exitcode is not None

    wait_for(acked_or_dead, "an ack")
    assert child.exitcode is None, "the writer died before it was killed"
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    return ack_path.read_text().splitlines()


def check_batches(url: str, run_id: str, checked: int, acks: list[str]) -> int:
    """Check the records after seq `checked`: consecutive seqs, whole batches in one piece,
    every acknowledged batch there at its seq; return the new last seq."""
    with RedisLog(url, run_id) as log:
        records = log.read(after=checked)
    assert [r["seq"] for r in records] == list(range(checked + 1, checked + len(records) + 1))
    starts: dict[str, int] = {}
    for r in records:
        first = starts.setdefault(r["batch"], r["seq"])
        assert r["event_id"] == f"{r['batch']}-{r['seq'] - first}", "a batch is split or repeated"
    ends = [r for r in records if r["event_id"] == f"{r['batch']}-{r['size'] - 1}"]
    assert len(ends) == len(starts), "a batch is partial"
    for line in acks:
        batch, first, _ = line.split()
        assert starts.get(batch) == int(first), f"acknowledged batch {batch} is missing"
    return checked + len(records)

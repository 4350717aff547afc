"""SIGKILL of a JSONL, a Redis or a mirrored writer at random instants, often inside the write of a
large batch: after each kill a writer's reopen finds gapless seqs, no record twice, every
acknowledged batch there and whole, no partial batch, and the mirror equal to the primary.
Nothing here asserts on timing."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import _workers
import pytest

import bus
from bus import JsonlLog, Log, MirroredLog
from bus.testing import RedisServer

KILLS = 50
GUARD_S = 60.0  # a hung child fails the test instead of hanging CI; never asserted
Ack = tuple[int, int, str]  # (first seq, size, batch id) of an acknowledged append


class Ledger:
    """What the log must hold, checked kill after kill from where the last check stopped."""

    def __init__(self) -> None:
        self.checked = 0
        self.event_ids: set[str] = set()

    def check(self, log: Log, acks: list[Ack]) -> None:
        """The records after the last check are gapless, new, in whole batches, and hold
        every acknowledged batch at its acknowledged seq."""
        records = log.read(self.checked)
        assert [r["seq"] for r in records] == list(range(self.checked + 1, self.checked + len(records) + 1))
        firsts = whole_batches(records)
        for first, size, batch in acks:
            assert firsts.get(batch) == (first, size), f"acknowledged batch {batch} is not whole at {first}"
        ids = {r["event_id"] for r in records}
        assert len(ids) == len(records) and not ids & self.event_ids
        self.event_ids |= ids
        self.checked += len(records)


def whole_batches(records: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Assert the records form whole batches, one after the other; {batch: (first, size)}."""
    found, at = {}, 0
    while at < len(records):
        head = records[at]
        group = records[at : at + head["n"]]
        assert [(r["b"], r["i"]) for r in group] == [(head["b"], i) for i in range(head["n"])], (
            f"a partial batch at seq {head['seq']}"
        )
        found[head["b"]] = (head["seq"], head["n"])
        at += head["n"]
    return found


def read_acks(path: Path) -> list[Ack]:
    """The acknowledgements the killed child wrote (a line cut by the kill is not one)."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    acks = [x.split() for x in lines if x.endswith("\n") and x != "begin\n"]
    return [(int(first), int(size), batch) for first, size, batch in acks]


def kill_one(context: Any, url: str, run_id: str, acks: Path, rng: random.Random) -> list[Ack]:
    """Run a writer until it has acknowledged a batch and begun the next append, then a
    random 0-5 ms more (inside its encoding or its write), SIGKILL it, and return what it
    acknowledged."""
    args = (url, run_id, str(acks), rng.randrange(1 << 30))
    child = context.Process(target=_workers.append_batches_until_killed, args=args)
    child.start()
    deadline = time.monotonic() + GUARD_S
    while not in_second_append(acks) and child.exitcode is None:
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("the writer never acknowledged a batch")
        time.sleep(0.0005)
    assert child.exitcode is None, "the writer died before it was killed"
    time.sleep(rng.uniform(0, 0.005))
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    return read_acks(acks)


def in_second_append(acks: Path) -> bool:
    """True once the child has acknowledged a batch and begun another append."""
    text = acks.read_bytes() if acks.exists() else b""
    return text.count(b"begin\n") >= 2 and text.endswith(b"begin\n")


def kill_repeatedly(url: str, tmp_path: Path, run_id: str, reopen_and_check: Any) -> None:
    context = multiprocessing.get_context("forkserver")  # fast, clean children for 50 kills
    context.set_forkserver_preload(["bus", "_workers"])
    rng = random.Random(12)
    for kill in range(KILLS):
        reopen_and_check(kill_one(context, url, run_id, tmp_path / f"acks-{kill}", rng))


@pytest.mark.slow
def test_jsonl_writer_killed_50_times_inside_large_batches(tmp_path: Path) -> None:
    """After each of 50 SIGKILLs a writer's reopen of the JSONL log finds only whole batches,
    gapless, every acknowledged one included (a partial one went to the .corrupt file)."""
    run_id, ledger = f"t-{uuid.uuid4().hex}", Ledger()

    def reopen_and_check(acks: list[Ack]) -> None:
        with JsonlLog(tmp_path / "runs", run_id) as log:
            ledger.check(log, acks)

    kill_repeatedly(f"jsonl://{tmp_path / 'runs'}", tmp_path, run_id, reopen_and_check)
    assert ledger.checked > 0


@pytest.mark.slow
@pytest.mark.redis_server
def test_redis_writer_killed_50_times_inside_large_batches(redis_server: RedisServer, tmp_path: Path) -> None:
    """After each of 50 SIGKILLs of a Redis writer, often mid-send of a large batch, the log
    holds whole batches only, gapless, every acknowledged one included."""
    run_id, ledger = f"t-{uuid.uuid4().hex}", Ledger()

    def reopen_and_check(acks: list[Ack]) -> None:
        with bus.open(redis_server.url, run_id) as log:
            ledger.check(log, acks)

    kill_repeatedly(redis_server.url, tmp_path, run_id, reopen_and_check)
    assert ledger.checked > 0


@pytest.mark.slow
@pytest.mark.redis_server
def test_mirrored_writer_killed_50_times_mirror_equals_primary(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """After each of 50 SIGKILLs of a Redis + JSONL mirror writer, the reopened pair holds
    whole batches only, every acknowledged one, and the mirror equals the primary."""
    run_id, ledger = f"t-{uuid.uuid4().hex}", Ledger()
    url = f"{redis_server.url}?mirror={tmp_path / 'mirror'}"

    def reopen_and_check(acks: list[Ack]) -> None:
        after = ledger.checked
        with bus.open(url, run_id) as log:
            assert isinstance(log, MirroredLog)
            ledger.check(log.primary, acks)
            assert log.mirror.last_seq() == log.primary.last_seq()
            assert log.mirror.read(after) == log.primary.read(after)

    kill_repeatedly(url, tmp_path, run_id, reopen_and_check)
    assert ledger.checked > 0

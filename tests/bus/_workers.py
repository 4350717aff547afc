"""Code that runs in child processes of the fault tests (importable by spawn/forkserver)."""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

import bus
from bus import ConcurrencyError


def race(url: str, run_id: str, name: str, rounds: int, barrier: Any, results: Any) -> None:
    """In round k, wait for the other writer, then append with expected_seq=k; report who
    won each round and the actual seq each ConcurrencyError carried."""
    outcome: list[tuple[int, str, int]] = []
    with bus.open(url, run_id) as log:
        for k in range(rounds):
            barrier.wait()
            try:
                log.append([{"event_id": f"{name}-{k}", "by": name}], expected_seq=k)
                outcome.append((k, "won", k + 1))
            except ConcurrencyError as e:
                outcome.append((k, "lost", e.actual))
    results.put((name, outcome))


def append_batches_until_killed(url: str, run_id: str, acks: str, seed: int) -> None:
    """Append batches of 1-200 records (some records ~100 KB, so a batch can take megabytes)
    until killed. Before each append, write `begin` as one line to `acks` (so the parent can
    aim its kill inside an append); after each acknowledged one, `first size batch`. A
    SIGKILL ends the process, not the machine: a line whose `write` returned is in the page
    cache for the parent to read, so no fsync is needed."""
    rng = random.Random(seed)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with bus.open(url, run_id) as log:
        while True:
            pad, most = rng.choice([(50, 200), (2_000, 200), (20_000, 50), (100_000, 40)])
            size, batch = rng.randint(1, most), uuid.uuid4().hex
            one = {"b": batch, "n": size, "pad": "x" * pad}
            records = [{"event_id": uuid.uuid4().hex, **one, "i": i} for i in range(size)]
            os.write(fd, b"begin\n")
            first = log.append(records)
            os.write(fd, f"{first} {size} {batch}\n".encode())

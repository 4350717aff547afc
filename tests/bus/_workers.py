"""Code that runs in child processes of the fault tests (importable by spawn/forkserver)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import bus
from bus import ConcurrencyError


def append_until_killed(url: str, run_id: str, acked: Any) -> None:
    """Append random-sized batches forever, storing the last acknowledged seq in `acked`
    (a lock-free shared int, so a SIGKILL can never leave a lock held)."""
    rng = random.Random()
    pad = "x" * 120  # batches up to ~60 KB, so a kill can land inside one write
    with bus.open(url, run_id) as log:
        while True:
            size = rng.randint(1, 400)
            first = log.append([{"event_id": uuid.uuid4().hex, "pad": pad} for _ in range(size)])
            acked.value = first + size - 1


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

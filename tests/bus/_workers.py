"""Code that runs in child processes of the fault tests (importable by spawn/forkserver)."""

from __future__ import annotations

import os
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


def append_batches_until_killed(url: str, run_id: str, ack_path: str) -> None:
    """Append batches of 1 to 2000 records (up to ~300 KB, so a kill can land mid-send), each
    record naming its batch and the batch's size; after each acknowledged append write
    'batch first size' to `ack_path`. An unbuffered write is in the kernel once it returns,
    so a SIGKILL of this process cannot lose it (no fsync needed: the machine stays up)."""
    rng = random.Random()
    pad = "x" * 120
    ack_fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with bus.open(url, run_id) as log:
        while True:
            batch, size = uuid.uuid4().hex, rng.choice([1, 10, 200, 2000])
            first = log.append([{"event_id": f"{batch}-{i}", "batch": batch, "size": size, "pad": pad}
                                for i in range(size)])  # fmt: skip
            os.write(ack_fd, f"{batch} {first} {size}\n".encode())

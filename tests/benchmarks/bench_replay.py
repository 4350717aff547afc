"""Benchmark: full replay of a run into the registry plus the state tensors, side by side with
raw XRANGE + msgpack decode of the same Redis stream and with the eventsourcing library
replaying one aggregate of the same number of events.

Run: python tests/benchmarks/bench_replay.py [--n 1000000] [--device cpu|cuda]
Targets (DESIGN.md section 9): from JSONL >= 400k events/s; from Redis >= 0.8 x raw XRANGE +
msgpack decode; >= 5 x eventsourcing aggregate replay; per-event cost at 1M within 1.3 x of 10k.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_append import redis_url  # a sibling script
from bench_read import raw_xrange  # a sibling script
from run_all import report_row  # a sibling script

from bus import JsonlLog, Log, MemoryLog, RedisLog
from lifecycle_es import InvalidTransitionError, Lifecycle
from lifecycle_es.specs import BUILTIN_SPECS
from projections import RegistryProjection, Runner, StateTensors

GOOD = {
    "reconstruction_loss": 0.001,
    "performance_delta": 0.1,
    "stability_score": 0.9,
    "total_improvement": 0.05,
    "final_stability": 0.99,
}


def _seed_life(lc: Lifecycle, name: str, step: int, rounds: int) -> int:
    """One Kasmina seed's life: refused grafts while it trains, then on to FOSSILIZED."""
    lc.register(name, "kasmina", layer=hash(name) % 4, step=step)
    lc.transition(name, "GERMINATED", step=step)
    lc.transition(name, "TRAINING", step=step)
    for i in range(rounds):
        lc.observe({"loss": 1.0 / (i + 1), "accuracy": i / rounds}, entity=name, step=step + i)
        with contextlib.suppress(InvalidTransitionError):  # a refusal is an event too
            lc.transition(name, "GRAFTING", step=step + i, metrics={"reconstruction_loss": 0.5})
    at = step + 100
    for target, wait in (
        ("GRAFTING", 0),
        ("STABILIZATION", 50),
        ("EVALUATING", 20),
        ("FINE_TUNING", 30),
        ("FOSSILIZED", 50),
    ):
        at += wait
        lc.transition(name, target, step=at, metrics=GOOD)
    return at


def make_records(n: int) -> list[dict[str, Any]]:
    """About n records of a realistic run, produced by the real Lifecycle and codec."""
    lc = Lifecycle(MemoryLog("bench"))
    lc.start(seed=0)
    step, i = 0, 0
    while lc.registry.seq < n:
        step = _seed_life(lc, f"seed-{i}", step, rounds=20)
        i += 1
    return lc.log.read(limit=n)


def fill(log: Log, records: list[dict[str, Any]], batch: int = 10_000) -> None:
    for start in range(0, len(records), batch):
        log.append(records[start : start + batch], expected_seq=start)


def replay_into_projections(log: Log, device: str) -> int:
    projections = [RegistryProjection(BUILTIN_SPECS), StateTensors(BUILTIN_SPECS, device=device)]
    runner = Runner(log, projections, batch_size=50_000)
    n = runner.catch_up()
    if device == "cuda":
        torch.cuda.synchronize()
    return n


def eventsourcing_replay(n: int) -> Callable[[], int]:
    """An eventsourcing aggregate with n events in its POPO store, and its replay."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Seed(Aggregate):
        def __init__(self) -> None:
            self.state = 0

        @event("Moved")
        def move(self, to: int) -> None:
            self.state = to

    class App(Application[uuid.UUID]):
        is_snapshotting_enabled = False

    app = App(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    seed = Seed()
    app.save(seed)
    for start in range(1, n, 100):
        for k in range(start, min(start + 100, n)):
            seed.move(k % 11)
        app.save(seed)

    def replay() -> int:
        return int(app.repository.get(seed.id).version)

    return replay


def timed(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t0)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    records = make_records(args.n)
    print(f"generated {len(records):,} records with the real Lifecycle in {time.perf_counter() - t0:.0f} s")
    rows: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp, redis_url() as url:
        small = JsonlLog(tmp, "small")
        fill(small, records[: args.small])
        rows.append(
            (
                f"JSONL replay, registry + tensors, {args.small} events",
                *timed(lambda: replay_into_projections(small, args.device), 5),
            )
        )
        jsonl = JsonlLog(tmp, "bench")
        fill(jsonl, records)
        rows.append(
            (
                "JSONL replay, registry + tensors",
                *timed(lambda: replay_into_projections(jsonl, args.device), args.repeats),
            )
        )
        run_id = f"bench-{uuid.uuid4().hex[:8]}"
        redis_log = RedisLog(url, run_id)
        fill(redis_log, records)
        rows.append(
            (
                "Redis replay, registry + tensors",
                *timed(lambda: replay_into_projections(redis_log, args.device), args.repeats),
            )
        )
        rows.append(
            (
                "raw XRANGE + msgpack decode (peer)",
                *timed(lambda: raw_xrange(redis_log.client, redis_log.key, False), args.repeats),
            )
        )
        rows.append(
            (
                "eventsourcing aggregate replay (peer)",
                *timed(eventsourcing_replay(len(records)), args.repeats),
            )
        )
        redis_log.client.delete(redis_log.key)
        redis_log.close()
    report(rows)


def report(rows: list[tuple[str, float, int]]) -> None:
    rate = {name: count / seconds for name, seconds, count in rows}
    print(f"\n{'what':<52} {'events':>10} {'seconds':>9} {'events/s':>12}")
    for name, seconds, count in rows:
        print(f"{name:<52} {count:>10,} {seconds:>9.3f} {count / seconds:>12,.0f}")
    small = next(n for n in rate if n.startswith("JSONL replay, registry + tensors,"))
    jsonl, redis_ = rate["JSONL replay, registry + tensors"], rate["Redis replay, registry + tensors"]
    raw, es = rate["raw XRANGE + msgpack decode (peer)"], rate["eventsourcing aggregate replay (peer)"]
    n = next(count for name, _, count in rows if name == "JSONL replay, registry + tensors")
    print()
    rate_row = (f"{jsonl:,.0f}/s", "-", jsonl / 4e5, ">= 400,000/s (ratio: to it)", jsonl >= 4e5)
    report_row(f"JSONL replay rate, {n} events", *rate_row)
    report_row(
        f"Redis replay / raw XRANGE + msgpack decode, {n} events",
        f"{redis_:,.0f}/s",
        f"{raw:,.0f}/s",
        redis_ / raw,
        ">= 0.8",
        redis_ / raw >= 0.8,
    )
    report_row(
        f"JSONL replay / eventsourcing aggregate replay, {n} events",
        f"{jsonl:,.0f}/s",
        f"{es:,.0f}/s",
        jsonl / es,
        ">= 5",
        jsonl / es >= 5,
    )
    growth = rate[small] / jsonl
    report_row(
        f"JSONL replay cost per event at {n} / at{small.split(',')[-1]}",
        f"{1e6 / jsonl:.2f} us",
        f"{1e6 / rate[small]:.2f} us",
        growth,
        "<= 1.3",
        growth <= 1.3,
    )


if __name__ == "__main__":
    main()

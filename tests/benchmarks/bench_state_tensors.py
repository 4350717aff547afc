"""Benchmark: state-tensor batch apply against a per-seed Python loop over the same tensor, and
the seeds/001 table (transition, state query, snapshot save and restore) for 10k seeds.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_state_tensors.py
    [--seeds 10000] [--device cpu|cuda] [--repeat 20] [--threads 1]
Targets (DESIGN.md section 9): the batch write >= 100 x a per-seed Python loop doing the same
writes; one transition < 0.1 ms, state query < 0.05 ms, snapshot save < 10 ms and restore
< 20 ms at 10k seeds, with 128 bytes of tensor state per seed.

The batch is one TransitionApplied per seed. Both sides start from the same restored snapshot
and must end with identical tensors. "writes" compares the tensor updates alone, from the
same decoded plan (the per-record scan of Python mappings is common to both and unavoidable);
"end to end" includes that scan on both sides.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from run_all import report_row  # a sibling script

from lifecycle_es.specs import BUILTIN_SPECS, KasminaState
from projections import Snapshot
from projections._state_plan import Plan, plan_batch
from projections.state_tensors import (
    BYTES_PER_ROW,
    EPOCHS_IN_STATE,
    HISTORY_DEPTH,
    PARENT_STATE,
    STATE,
    StateTensors,
)

Records = list[dict[str, Any]]
ACTIVE = (KasminaState.TRAINING, KasminaState.GRAFTING, KasminaState.FINE_TUNING)
"""Kasmina's get_active_seeds_mask: the states whose seeds take part in the forward."""


class Clock:
    """Wall time of a region, synchronizing the device on both ends so GPU work is counted."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def records(start_seq: int, rows: range, source: str, target: str, step: int) -> Records:
    """One TransitionApplied per seed of `rows`, with consecutive seqs from `start_seq`, carrying
    the fields the projection reads as the codec writes them (`metadata` included)."""
    return [
        {
            "seq": start_seq + i,
            "kind": "TransitionApplied",
            "step": step,
            "entity": f"seed-{row}",
            "from_state": source,
            "to_state": target,
            "trigger": "",
            "run_id": "bench",
            "metadata": {},
        }
        for i, row in enumerate(rows)
    ]


def populated(seeds: int, device: torch.device) -> StateTensors:
    """Return a projection with `seeds` kasmina seeds registered and moved to GERMINATED."""
    tensors = StateTensors(BUILTIN_SPECS, capacity=seeds, device=device)
    tensors.apply(
        [
            {
                "seq": i + 1,
                "kind": "EntityRegistered",
                "step": 0,
                "entity": f"seed-{i}",
                "spec": "kasmina",
                "state": "DORMANT",
                "attrs": {"blueprint": i},
            }
            for i in range(seeds)
        ]
    )
    tensors.apply(records(seeds + 1, range(seeds), "DORMANT", "GERMINATED", 1))
    return tensors


def per_seed_loop(tensors: StateTensors, plan: Plan) -> None:
    """Kasmina's way: the same writes as the batch, one seed at a time (no host syncs)."""
    (moved,) = plan.rounds
    state, history, keys = tensors.state, tensors.history, tensors.state_keys
    for i, row in enumerate(moved.rows):
        source, target, epochs = moved.moves[3 * i : 3 * i + 3]
        state[row, STATE] = target
        state[row, PARENT_STATE] = source
        state[row, EPOCHS_IN_STATE] = epochs
        keys[row] = moved.keys[i]
        history[row, 1:] = history[row, : HISTORY_DEPTH - 1].clone()
        history[row, 0, 0] = source
        history[row, 0, 1] = target
    state[: len(tensors), EPOCHS_IN_STATE] += plan.clock - plan.start
    tensors._clock = plan.clock


def compare_batch(seeds: int, device: torch.device, repeat: int) -> list[tuple[str, float, float]]:
    """Time the batch against the loop, writes only and end to end; check equal results."""
    clock, snap = Clock(device), populated(seeds, device).snapshot()
    batch = records(snap.seq + 1, range(seeds), "GERMINATED", "TRAINING", 200)
    loops = max(1, repeat // 4)  # the loop is slow: fewer repeats
    median: dict[str, float] = {}
    final: dict[str, StateTensors] = {}
    for key, n in (
        ("batch writes", repeat),
        ("batch apply", repeat),
        ("loop writes", loops),
        ("loop apply", loops),
    ):
        times = []
        for _ in range(n):
            final[key] = StateTensors(BUILTIN_SPECS, capacity=seeds, device=device)
            final[key].restore(snap)
            times.append(_timed(key, final[key], batch, clock))
        median[key] = statistics.median(times)
    for key in final:
        for x, y in zip(_live(final["batch writes"]), _live(final[key]), strict=True):
            assert torch.equal(x, y), f"{key} ends with other tensors than the batch"
    return [
        ("writes (from the decoded plan)", median["batch writes"], median["loop writes"]),
        ("end to end (scan + writes)", median["batch apply"], median["loop apply"]),
    ]


def _timed(key: str, t: StateTensors, batch: Records, clock: Clock) -> float:
    t.seq = batch[-1]["seq"] if key != "batch apply" else t.seq
    if key == "batch apply":
        return clock(lambda: t.apply(batch))
    if key == "loop apply":
        return clock(lambda: per_seed_loop(t, plan_batch(t._index, batch, t._base)))
    plan = plan_batch(t._index, batch, t._base)
    return clock(lambda: t._commit(plan) if key == "batch writes" else per_seed_loop(t, plan))


def _live(t: StateTensors) -> tuple[torch.Tensor, ...]:
    n = len(t)
    return (t.state[:n].cpu(), t.history[:n].cpu(), t.metrics[:n].cpu(), t.state_keys[:n].cpu())


def _applying(tensors: StateTensors, record: dict[str, Any]) -> Callable[[], object]:
    return lambda: tensors.apply([record])


def seeds_table(seeds: int, device: torch.device, repeat: int) -> list[tuple[str, float, float]]:
    """Median latencies of the seeds/001 operations, with their targets, in seconds."""
    clock, tensors = Clock(device), populated(seeds, device)
    singles = records(tensors.seq + 1, range(seeds), "GERMINATED", "TRAINING", 0)
    for i, record in enumerate(singles):
        record["step"] = 2 + i  # every transition also advances the clock
    n = min(seeds, 2000)
    for record in singles[: n // 4]:  # warm up
        tensors.apply([record])
    one = [clock(_applying(tensors, record)) for record in singles[n // 4 : n]]
    tensors.mask("kasmina", ACTIVE)  # uploads and caches the table once
    query = [clock(lambda: tensors.mask("kasmina", ACTIVE)) for _ in range(2000)]
    buffer = io.BytesIO()

    def save() -> None:
        buffer.seek(0)
        buffer.truncate()
        snap = tensors.snapshot()
        torch.save({"kind": snap.kind, "seq": snap.seq, "state": snap.state}, buffer)

    saves = [clock(save) for _ in range(repeat)]
    fresh = StateTensors(BUILTIN_SPECS, device=device)

    def restore() -> None:
        buffer.seek(0)
        fresh.restore(Snapshot(**torch.load(buffer, weights_only=True)))

    restores = [clock(restore) for _ in range(repeat)]
    return [
        ("transition (apply of a one-record batch)", statistics.median(one), 1e-4),
        ("state query (mask of 3 states)", statistics.median(query), 5e-5),
        ("snapshot save (torch.save to BytesIO)", statistics.median(saves), 1e-2),
        ("restore (torch.load weights_only + restore)", statistics.median(restores), 2e-2),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; 1 by default: 10k-row ops gain nothing from more, "
        "and on a loaded machine extra threads only wait for cores",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {load}, {args.seeds} seeds, "
        f"{BYTES_PER_ROW} bytes of Kasmina tensor state per seed\n"
    )
    print(f"{'batch of one transition per seed':<34} {'batch ms':>10} {'loop ms':>10} {'ratio':>8}  target")
    for what, batch, loop in compare_batch(args.seeds, device, args.repeat):
        ratio = loop / batch
        verdict = ("PASS" if ratio >= 100 else "FAIL") if what.startswith("writes") else "info"
        print(f"{what:<34} {batch * 1e3:>10.3f} {loop * 1e3:>10.1f} {ratio:>7.1f}x  >= 100x {verdict}")
        if what.startswith("writes"):
            report_row(
                f"state tensors, batch of {args.seeds} transitions, {what}: per-seed loop / batch",
                f"{batch * 1e3:.3f} ms",
                f"{loop * 1e3:.1f} ms",
                ratio,
                ">= 100",
                ratio >= 100,
            )
    print(f"\n{'seeds/001, ' + str(args.seeds) + ' seeds':<46} {'median ms':>10} {'target ms':>10}")
    for what, seconds, target in seeds_table(args.seeds, device, args.repeat):
        verdict = "PASS" if seconds < target else "FAIL"
        print(f"{what:<46} {seconds * 1e3:>10.4f} {'< ' + format(target * 1e3, 'g'):>10}  {verdict}")
        report_row(
            f"seeds/001, {args.seeds} seeds, {what} (no peer; ratio: of the target)",
            f"{seconds * 1e3:.4f} ms",
            "-",
            seconds / target,
            f"< {target * 1e3:g} ms",
            seconds < target,
        )


if __name__ == "__main__":
    main()

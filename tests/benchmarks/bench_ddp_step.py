"""Benchmark: the latency a lifecycle evaluation step adds under DDP, ours against the peer recipe.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_ddp_step.py
    [--evals 200] [--interval 5] [--warmup-evals 5] [--strategy masked|resize] [--threads 1]
Uses LCES_REDIS_URL if set, else starts its own redis-server on a free port.
Targets (DESIGN.md sections 9 and 7): DDP evaluation step, 2 gloo ranks: added latency p50
<= 3 ms; on steps that are not evaluations, no measurable cost.

Two gloo ranks on the CPU (`--threads` torch threads each) train six copies of the demo's MoE
model (`DemoModel`, masked or resized by `ModelSurgery`) under DDP in lockstep, one step each in
turn, in an order shuffled every step (the same on both ranks), so drift in the machine's speed
hits them alike:

- plain: no lifecycle; plain-2: the same again, whose gap to plain is the noise floor;
- floor: no lifecycle, but at each evaluation the two collectives the peer makes (the routing
  counters summed across ranks, a MIN/MAX all-reduce of a digest): the sync floor (ours makes
  one: the previous boundary's digests ride the counters' sum);
- redis, jsonl: the lifecycle wired as the demo wires it, `LifecycleSync` on a Redis / JSONL log,
  `BasinTracker.record` every step. Every `--interval` steps an evaluation: routing counters
  summed across ranks (`sync.observe`), the basin readout, and `sync.at_boundary`: the leader's
  decide (the coordinator's `MetricsObserved` events plus ONE action, a SPAWN of a clone of the
  busiest expert and a PRUNE of it in turn, so the model does not grow, with their gate checks,
  registration and transitions built with the coordinator's `Batch`), `StepSealed`, every rank
  following the log to the seal, folding and applying it and its digest, compared at the next
  boundary's counter sum (the leader's `ActionsVerified` then goes in that boundary's batch);
- redis-10m: the redis arm with 10M more (frozen) parameters with AdamW state in the model, which
  the digest covers: the digest's share of a boundary for a model of that size;
- peer: the same readout and the same decide into a `Lifecycle` on a leader-local `MemoryLog`,
  the records sent with `torch.distributed.broadcast_object_list`, applied by every rank to the
  same projections (`ModelSurgery`, `StateTensors`), and the same digest all-reduce.

Added latency of an evaluation step = its time (the training step plus the boundary) minus
plain's median step time. Every rank times its own steps; the first `--warmup-evals`
intervals are dropped. A table of where each boundary's time goes (mean ms per phase, timed by
wrapping the sync's steps) follows; `--profile N` adds each arm's top N functions (cProfile).
The leader's registry keeps every expert ever created (archived ones included) with its metric
windows, and copies it twice per evaluation, so the boundary slowly grows with the run: the
drift line and the registry size at the end show by how much.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from _ddp import (  # a sibling module
    Floor,
    Ours,
    Peer,
    Trainer,
    lifecycle_config,
    process_group,
    registry_size,
    spawn_ranks,
)
from bench_append import redis_url  # a sibling script
from run_all import report_row  # a sibling script

import bus
from lifecycle_es import Lifecycle
from projections.moe import BasinReadout
from replay.demo import DemoOptions
from tests._expert_actions import S, archive_pending, experts, new_batch, prune, spawn

ARMS = ("plain", "plain-2", "floor", "redis", "jsonl", "peer", "redis-10m")
LABELS = {
    "redis": "ours, Redis log",
    "redis-10m": "ours, Redis, +10M params",
    "jsonl": "ours, JSONL log",
    "peer": "peer, broadcast_object_list",
    "floor": "sync floor, 2 collectives",
}
EVALUATED = ("floor", "redis", "jsonl", "peer", "redis-10m")
BALLAST = 10_000_000
"""The redis-10m arm's frozen parameters (with AdamW state) that the digest covers."""
TARGET_MS = 3.0
LAYER = 0


class Alternate:
    """The leader's decide: the checkpoint's observations and ONE action, SPAWN and PRUNE in turn."""

    def __init__(self, side: Ours | Peer) -> None:
        self.side = side
        self.capacity = side.trainer.options.max_experts
        self.kinds: list[str] = []

    def __call__(self, lc: Lifecycle, step: int, readout: BasinReadout) -> None:
        self.side.observations(lc, step, readout)
        config = self.side.config
        batch = new_batch(lc, step, config)
        archive_pending(batch, LAYER)  # the expert pruned last time leaves its slot
        cooling = experts(batch.registry, LAYER, (S.COOLING,))
        if cooling:
            prune(batch, config, LAYER, cooling[0].entity)
            self.kinds.append("PRUNE")
        else:
            active = [e.entity for e in experts(batch.registry, LAYER, (S.ACTIVE,))]
            parent = max(active, key=lambda e: (readout.experts.get(e, {}).get("share", 0.0), e))
            spawn(batch, config, LAYER, self.capacity, parent=parent)
            self.kinds.append("SPAWN")
        lc.append(batch.events)


def rank_main(
    rank: int, world: int, port: int, url: str, directory: str, run_id: str, opts: dict[str, Any]
) -> None:
    with process_group(rank, world, port, opts["threads"]):
        interval, evals = opts["interval"], opts["warmup_evals"] + opts["evals"]
        steps = interval * evals
        options = DemoOptions(steps=steps, strategy=opts["strategy"])
        config = lifecycle_config(options, lifecycle_eval_interval=interval)
        trainers = {name: Trainer(options, ballast=BALLAST if name == "redis-10m" else 0) for name in ARMS}
        trainers["plain"].start_without_lifecycle()
        trainers["plain-2"].start_without_lifecycle()
        logs = {
            "redis": bus.open(url, f"{run_id}-redis"),
            "jsonl": bus.open(f"jsonl://{directory}", f"{run_id}-jsonl"),
            "redis-10m": bus.open(url, f"{run_id}-redis-10m"),
        }
        sides: dict[str, Ours | Peer | Floor] = {
            "floor": Floor(trainers["floor"]),
            "redis": Ours(trainers["redis"], config, logs["redis"]),
            "jsonl": Ours(trainers["jsonl"], config, logs["jsonl"]),
            "peer": Peer(trainers["peer"], config, f"{run_id}-peer"),
            "redis-10m": Ours(trainers["redis-10m"], config, logs["redis-10m"]),
        }
        lifecycles = {name: sides[name] for name in ("redis", "jsonl", "peer", "redis-10m")}
        deciders = {
            name: Alternate(side) for name, side in lifecycles.items() if isinstance(side, Ours | Peer)
        }
        for each in sides.values():
            each.start()
        total = {name: [0.0] * steps for name in ARMS}
        boundary = {name: [0.0] * steps for name in ARMS}
        profiles = {name: cProfile.Profile() for name in sides} if opts["profile"] else {}
        order = list(ARMS)
        dist.barrier()
        started = time.perf_counter()
        for step in range(1, steps + 1):
            random.Random(step).shuffle(order)  # the same order on every rank
            for name in order:
                side = sides.get(name)
                t0 = time.perf_counter()
                types = trainers[name].step(step)
                if side is not None:
                    side.basin.record(types)
                t1 = time.perf_counter()
                if side is not None and step % interval == 0:
                    if profiles:
                        profiles[name].enable()
                    if isinstance(side, Floor):
                        side.boundary(step)
                    else:
                        side.boundary(step, deciders[name])
                    if profiles:
                        profiles[name].disable()
                t2 = time.perf_counter()
                total[name][step - 1], boundary[name][step - 1] = t2 - t0, t2 - t1
        elapsed = time.perf_counter() - started
        gathered: list[Any] = [None] * world if rank == 0 else []
        phases = {name: side.phases.done for name, side in sides.items()}
        dist.gather_object((total, boundary, phases), gathered if rank == 0 else None, dst=0)
        if rank == 0:
            peer = sides["peer"]
            assert isinstance(peer, Peer) and peer.lc is not None
            counts = {
                "redis": _count(logs["redis"].read()),
                "redis-10m": _count(logs["redis-10m"].read()),
                "jsonl": _count(logs["jsonl"].read()),
                "peer": _count(peer.lc.log.read()),
            }
            kinds = {k: deciders["redis"].kinds.count(k) for k in ("SPAWN", "PRUNE")}
            report(opts, gathered, counts, kinds, elapsed)
            ours = sides["redis"]
            assert isinstance(ours, Ours)
            size = registry_size(ours.lc.registry)
            print(f"\nthe redis arm leader's registry at the end: {size}")
        for name, profile in profiles.items():
            for r in range(world):
                if r == rank:
                    out = io.StringIO()
                    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(opts["profile"])
                    print(
                        f"==== profile of the {name} boundary, rank {rank} ====\n{out.getvalue()}", flush=True
                    )
                dist.barrier()
        for log in logs.values():
            log.close()


def _count(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in records:
        out[record["kind"]] = out.get(record["kind"], 0) + 1
    return out


def pct(values: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(
    opts: dict[str, Any],
    gathered: list[Any],
    counts: dict[str, dict[str, int]],
    kinds: dict[str, int],
    elapsed: float,
) -> None:
    interval = opts["interval"]
    first = opts["warmup_evals"] * interval  # index i is step i + 1
    steps = len(gathered[0][0]["plain"])
    kept = range(first, steps)
    evaluation = [i for i in kept if (i + 1) % interval == 0]
    other = [i for i in kept if (i + 1) % interval]
    ms = 1e3
    print(
        f"DDP evaluation step: torch {torch.__version__}, 2 gloo ranks x {opts['threads']} thread(s), "
        f"{opts['strategy']} strategy, {steps} steps per arm, evaluation every {interval} steps, "
        f"{len(evaluation)} evaluations per variant timed (first {opts['warmup_evals']} dropped), "
        f"{elapsed:.1f} s in the loop"
    )
    print(
        f"load average before/after: {opts['load_before']} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for name in counts:
        c = counts[name]
        print(
            f"  {LABELS[name]:<30} log: {c.get('DecisionMade', 0)} DecisionMade "
            f"({kinds['SPAWN']} SPAWN, {kinds['PRUNE']} PRUNE on the redis arm), "
            f"{c.get('ActionsVerified', 0)} ActionsVerified, {c.get('StepSealed', 0)} StepSealed, "
            f"{c.get('DivergenceDetected', 0)} DivergenceDetected"
        )
    print()
    print(f"{'step time, no lifecycle':<34} {'rank':>4} {'n':>5} {'p50 ms':>8} {'p90 ms':>8}")
    plain_p50 = {}
    for rank, (total, *_) in enumerate(gathered):
        plain = [total["plain"][i] for i in kept]
        plain_p50[rank] = statistics.median(plain)
        print(
            f"{'plain':<34} {rank:>4} {len(plain):>5} {plain_p50[rank] * ms:>8.3f} "
            f"{pct(plain, 90) * ms:>8.3f}"
        )
    print()
    print(
        f"{'evaluation step, one action':<34} {'rank':>4} {'n':>5} {'step p50':>9} {'step p90':>9} "
        f"{'added p50':>10} {'added p90':>10} {'bound p50':>10} {'bound p90':>10}"
    )
    added: dict[tuple[str, int], float] = {}
    for name in EVALUATED:
        for rank, (total, bound, _) in enumerate(gathered):
            step = [total[name][i] for i in evaluation]
            extra = [t - plain_p50[rank] for t in step]
            only = [bound[name][i] for i in evaluation]
            added[name, rank] = statistics.median(extra)
            print(
                f"{LABELS[name]:<34} {rank:>4} {len(step):>5} {statistics.median(step) * ms:>9.3f} "
                f"{pct(step, 90) * ms:>9.3f} {added[name, rank] * ms:>10.3f} {pct(extra, 90) * ms:>10.3f} "
                f"{statistics.median(only) * ms:>10.3f} {pct(only, 90) * ms:>10.3f}"
            )
    print("(ms; added = evaluation step - plain p50 of the same rank; bound = the boundary alone)")
    quarter = max(1, len(evaluation) // 4)
    drift = []
    for name in EVALUATED:
        bound = gathered[0][1][name]
        early = statistics.median(bound[i] for i in evaluation[:quarter])
        late = statistics.median(bound[i] for i in evaluation[-quarter:])
        drift.append(f"{name} {early * ms:.2f} -> {late * ms:.2f}")
    print(
        f"drift, rank 0 boundary p50 of the first vs the last {quarter} evaluations (ms): " + ", ".join(drift)
    )
    print()
    for rank in range(len(gathered)):
        peer, floor = added["peer", rank], added["floor", rank]
        for name in ("redis", "jsonl", "peer", "redis-10m"):
            ours = added[name, rank]
            verdict = "met" if ours * ms <= TARGET_MS else "NOT met"
            vs_peer = (
                ""
                if name == "peer"
                else f"; ours - peer {(ours - peer) * ms:+6.3f} ms, ours / peer {ours / peer:5.2f}"
            )
            print(
                f"rank {rank} {LABELS[name]:<28}: added p50 {ours * ms:6.3f} ms -> "
                f"target <= {TARGET_MS:g} ms "
                f"{verdict:<7}; - sync floor {(ours - floor) * ms:+6.3f} ms{vs_peer}"
            )
    for name in ("redis", "jsonl", "redis-10m"):
        ours, peer = (max(added[arm, r] for r in range(len(gathered))) for arm in (name, "peer"))
        report_row(
            f"DDP evaluation step, one action, added p50 (slower rank): {LABELS[name]} / peer",
            f"{ours * ms:.3f} ms",
            f"{peer * ms:.3f} ms",
            ours / peer,
            f"<= {TARGET_MS:g} ms",
            ours * ms <= TARGET_MS,
        )
    print()
    breakdown(gathered, opts["warmup_evals"], interval)
    print()
    total0 = gathered[0][0]
    base = statistics.median(total0["plain"][i] for i in other)
    floor = statistics.median(total0["plain-2"][i] for i in other) / base
    noise = max(abs(floor - 1), 0.02)
    print(f"{'non-evaluation steps (rank 0)':<34} {'n':>5} {'p50 ms':>8} {'/ plain':>8}")
    print(f"{'plain (no lifecycle)':<34} {len(other):>5} {base * ms:>8.3f} {1.0:>8.3f}")
    print(f"{'plain-2 (noise floor)':<34} {len(other):>5} {floor * base * ms:>8.3f} {floor:>8.3f}")
    for name in EVALUATED:
        med = statistics.median(total0[name][i] for i in other)
        verdict = "met" if med / base - 1 <= noise else "NOT met"
        print(
            f"{LABELS[name] + ' (wired)':<34} {len(other):>5} {med * ms:>8.3f} {med / base:>8.3f}  "
            f"target: no cost beyond the noise (ratio - 1 <= {noise:.3f}) -> {verdict}"
        )


PHASES = (
    ("sum", "routing counters folded and all-reduced (sync.observe)"),
    ("collect", "basin readout (BasinTracker.collect)"),
    ("decide", "leader: observations + one action (coordinator Batch)"),
    ("write", "leader: the batch written (catch-up read, append) + seal"),
    ("transport", "follow the log to the seal / broadcast_object_list"),
    ("fold", "fold the records into this rank's registry"),
    ("apply", "projections: ModelSurgery + StateTensors"),
    ("digest", "ModelSurgery.digest (parameters, optimizer state, ids)"),
    ("verify", "MIN/MAX all-reduce of the digest (ours: compare the carried digests)"),
    ("record", "leader: ActionsVerified appended alone (ours: in the next batch instead)"),
    ("other", "the rest of the boundary"),
)


def breakdown(gathered: list[Any], warmup: int, interval: int) -> None:
    """Mean ms per evaluation of each phase of the boundary (means add up; medians would not)."""
    arms = EVALUATED
    head = "".join(f"{LABELS[a].split(',')[0] + ' ' + a:>16}" for a in arms)
    print("where the boundary's time goes: mean ms per evaluation, rank 0 / rank 1")
    print(f"{'phase':<10} {head}   what")
    rows: dict[str, list[str]] = {}
    for name, _ in PHASES:
        rows[name] = []
    totals = []
    for arm in arms:
        per_rank = []
        for _, bound, phases in gathered:
            kept = phases[arm][warmup:]
            interval_steps = [i for i in range(len(bound[arm])) if (i + 1) % interval == 0][warmup:]
            n = len(kept)
            mean = {
                k: sum(p.get(k, 0.0) for p in kept) / n
                for k in (
                    "sum",
                    "collect",
                    "decide",
                    "seal",
                    "transport",
                    "fold",
                    "apply",
                    "digest",
                    "verify",
                    "record",
                )
            }
            mean["write"] = mean.pop("seal") - mean["decide"]
            whole = sum(bound[arm][i] for i in interval_steps) / len(interval_steps)
            mean["other"] = whole - sum(mean.values())
            per_rank.append((mean, whole))
        for name, _ in PHASES:
            rows[name].append(" / ".join(f"{m[name] * 1e3:.2f}" for m, _ in per_rank))
        totals.append(" / ".join(f"{w * 1e3:.2f}" for _, w in per_rank))
    for name, what in PHASES:
        print(f"{name:<10} {''.join(f'{cell:>16}' for cell in rows[name])}   {what}")
    print(f"{'boundary':<10} {''.join(f'{cell:>16}' for cell in totals)}   all of it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=200, help="timed evaluations per variant")
    parser.add_argument("--warmup-evals", type=int, default=5)
    parser.add_argument(
        "--interval",
        type=int,
        default=5,
        help="steps per evaluation (ExpertCoordinatorConfig's default; the demo uses 10)",
    )
    parser.add_argument("--strategy", choices=("masked", "resize"), default="masked")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile every boundary; print each arm's top N functions per rank",
    )
    args = parser.parse_args()
    opts = vars(args) | {"load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    with redis_url() as url, tempfile.TemporaryDirectory() as directory:
        run_id = f"bench-ddp-{uuid.uuid4().hex[:12]}"
        spawn_ranks(rank_main, 2, url, directory, run_id, opts)


if __name__ == "__main__":
    main()

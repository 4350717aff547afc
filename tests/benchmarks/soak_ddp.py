"""Soak: randomized expert actions under DDP on 2 gloo ranks, every boundary's digest verified.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/soak_ddp.py
    [--actions 1000] [--strategy resize|masked] [--seed 0] [--log redis|jsonl]
    [--train-steps 3] [--max-per-boundary 2] [--layers 2] [--initial-experts 4] [--max-experts 8]
A script, not a CI test. Uses LCES_REDIS_URL if set, else starts its own redis-server.
Target (DESIGN.md section 9): zero divergence over 1000 randomized actions.

Two gloo ranks (one torch thread each) train the demo's MoE model (`DemoModel`, every layer
managed by `ModelSurgery`) under DDP, with the lifecycle wired as the demo wires it
(`LifecycleSync` on the log, `BasinTracker.record` every step). After every `--train-steps`
steps comes an evaluation boundary: routing counters summed across ranks, the basin readout,
then `sync.at_boundary`, where the leader appends the checkpoint's observations and 1 to
`--max-per-boundary` actions that `tests._expert_actions.SeededDecider` draws with a seeded
RNG among those valid now: SPAWN (clone and perturb, random or mean-cluster init, drawn too)
and SPLIT while the layer is under `--max-experts` live experts with a free slot, PRUNE and
MERGE while it is above the floor (`min_experts_per_layer`, 2). Each action is shaped as the
expert coordinator shapes it (gate checks, the child's registration, `DecisionMade`, the
state moves; experts are first brought to the state its edge needs) and carries a fresh seed
from the RNG in its `seed`. Every rank follows the log to the seal, applies the batch (under
resize: parameters and optimizer state really resized, DDP re-wrapped) and the sync
all-reduces MIN/MAX of the digest: any divergence raises `DivergenceError` on every rank
and ends the soak.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import tempfile
import time
import uuid
from typing import Any

import torch
import torch.distributed as dist
from _ddp import (  # a sibling module
    Ours,
    Trainer,
    lifecycle_config,
    process_group,
    registry_size,
    spawn_ranks,
)
from _growth import first_last  # a sibling module
from bench_append import redis_url  # a sibling script

import bus
from lifecycle_es import Action, Lifecycle
from lifecycle_es.controllers import ExpertCoordinatorConfig
from projections.moe import BasinReadout
from replay.demo import DemoOptions
from tests._expert_actions import SeededDecider

KINDS = (Action.SPAWN, Action.PRUNE, Action.SPLIT, Action.MERGE)


class RandomActions:
    """The leader's decide: the checkpoint's observations, then random valid actions."""

    def __init__(
        self, side: Ours, config: ExpertCoordinatorConfig, *, seed: int, total: int, per_boundary: int
    ) -> None:
        self.side = side
        self.decider = SeededDecider(
            config,
            side.trainer.options.max_experts,
            seed=seed,
            every=1,
            per_call=per_boundary,
            order="random",
            random_seeds=True,
        )
        self.left = total

    @property
    def inits(self) -> collections.Counter[str]:
        return self.decider.inits

    def __call__(self, lc: Lifecycle, step: int, readout: BasinReadout) -> None:
        self.side.observations(lc, step, readout)
        events = self.decider.decide(lc.registry, run_id=lc.run_id, step=step, rank=lc.rank, most=self.left)
        self.left -= sum(1 for e in events if e.kind == "DecisionMade")
        lc.append(events)


def rank_main(rank: int, world: int, port: int, url: str, opts: dict[str, Any]) -> None:
    with process_group(rank, world, port):
        options = DemoOptions(
            steps=1_000_000,
            strategy=opts["strategy"],
            layers=opts["layers"],
            initial_experts=opts["initial_experts"],
            max_experts=opts["max_experts"],
            seed=opts["seed"],
        )
        config = lifecycle_config(options, max_experts_per_layer=opts["max_experts"])
        trainer = Trainer(options)
        log = bus.open(url, opts["run_id"])
        side = Ours(trainer, config, log)
        side.start()
        decide = RandomActions(
            side, config, seed=opts["seed"], total=opts["actions"], per_boundary=opts["max_per_boundary"]
        )
        applied: collections.Counter[str] = collections.Counter()
        boundaries = verified = step = 0
        profile = cProfile.Profile() if opts["profile"] and rank == 0 else None
        started = lap = time.perf_counter()
        spent = 0.0  # in boundaries, since the last progress line
        inside: list[float] = []  # each boundary's time, and with its training steps before it
        whole: list[float] = []
        cpu: list[float] = []  # the boundary's CPU time on this rank's main thread: less sensitive
        # than wall time to other processes on the machine (collective waits do not count)
        while sum(applied.values()) < opts["actions"]:
            t_train = time.perf_counter()
            for _ in range(opts["train_steps"]):
                step += 1
                side.basin.record(trainer.step(step))
            t0, c0 = time.perf_counter(), time.thread_time()
            if profile is not None and boundaries >= opts["profile_from"]:
                profile.enable()
            done = side.boundary(step, decide)
            if profile is not None:
                profile.disable()
            t1 = time.perf_counter()
            cpu.append(time.thread_time() - c0)
            spent += t1 - t0
            inside.append(t1 - t0)
            whole.append(t1 - t_train)
            boundaries += 1
            verified += done.digest is not None
            applied.update(r["action"] for r in done.records if r["kind"] == "DecisionMade")
            if rank == 0 and boundaries % 100 == 0:
                now = time.perf_counter()
                print(
                    f"  step {step}: {boundaries} boundaries, {sum(applied.values())} actions applied, "
                    f"{now - started:.0f} s; last 100: {(now - lap) * 10:.1f} ms per boundary with its "
                    f"training steps, {spent * 10:.1f} ms in the boundary",
                    flush=True,
                )
                lap, spent = now, 0.0
        final = side.sync.verify(step)
        elapsed = time.perf_counter() - started
        shapes = {i: int(layer.capacity) for i, layer in trainer.model.layers().items()}
        routing = {i: len(side.surgery.routing_rows(i)) for i in sorted(side.layers)}
        mine = {
            "applied": dict(applied),
            "boundaries": boundaries,
            "verified": verified,
            "digest": final,
            "rewraps": trainer.replicated.rewraps,
            "rows": shapes,
            "routing": routing,
            "step": step,
        }
        gathered: list[Any] = [None] * world if rank == 0 else []
        dist.gather_object(mine, gathered if rank == 0 else None, dst=0)
        if rank == 0:
            report(opts, gathered, log.read(), decide.inits, elapsed)
            print(f"leader's registry at the end : {registry_size(side.lc.registry)}")
            print(f"rank 0 {first_last(inside)}")
            print(f"rank 0 {first_last(whole, 'boundary + training steps')}")
            print(f"rank 0 {first_last(cpu, 'boundary CPU')}")
        if profile is not None:
            for key in ("cumulative", "tottime"):
                out = io.StringIO()
                pstats.Stats(profile, stream=out).sort_stats(key).print_stats(opts["profile"])
                print(f"==== rank 0 boundaries from #{opts['profile_from']}, by {key} ====\n{out.getvalue()}")
        log.close()


def report(
    opts: dict[str, Any],
    ranks: list[dict[str, Any]],
    records: list[dict[str, Any]],
    inits: collections.Counter[str],
    elapsed: float,
) -> None:
    kinds = collections.Counter(r["kind"] for r in records)
    decided = collections.Counter(r["action"] for r in records if r["kind"] == "DecisionMade")
    print(
        f"soak: torch {torch.__version__}, 2 gloo ranks x 1 thread, {opts['strategy']} strategy, "
        f"{opts['log']} log, seed {opts['seed']}, {opts['layers']} layers of {opts['initial_experts']} to "
        f"{opts['max_experts']} experts (floor 2), {opts['train_steps']} training steps between "
        f"boundaries, 1-{opts['max_per_boundary']} actions per boundary"
    )
    print(
        f"load average before/after: {opts['load_before']} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"actions decided (log)      : {sum(decided.values())}  "
        + "  ".join(f"{k.value} {decided.get(k.value, 0)}" for k in KINDS)
        + f"  (spawn inits: {dict(sorted(inits.items()))})"
    )
    for rank, mine in enumerate(ranks):
        applied = mine["applied"]
        print(
            f"actions applied, rank {rank}  : {sum(applied.values())}  "
            + "  ".join(f"{k.value} {applied.get(k.value, 0)}" for k in KINDS)
            + f"  | DDP re-wraps {mine['rewraps']}, rows per layer {mine['rows']}, "
            f"routing experts {mine['routing']}"
        )
    print(
        f"boundaries                 : {ranks[0]['boundaries']} (training steps {ranks[0]['step']}), "
        f"digest verified at " + ", ".join(f"{m['verified']} on rank {r}" for r, m in enumerate(ranks))
    )
    print(
        f"log                        : {kinds.get('ActionsVerified', 0)} ActionsVerified, "
        f"{kinds.get('StepSealed', 0)} StepSealed, {kinds.get('DecisionMade', 0)} DecisionMade, "
        f"{len(records)} records"
    )
    divergences = kinds.get("DivergenceDetected", 0)
    same = len({m["digest"] for m in ranks}) == 1
    print(
        f"divergences                : {divergences} DivergenceDetected (must be 0); final digests "
        + ", ".join(m["digest"] for m in ranks)
        + (" (equal)" if same else " (DIFFERENT)")
    )
    print(
        f"elapsed                    : {elapsed:.1f} s ({elapsed / ranks[0]['boundaries'] * 1e3:.1f} ms "
        f"per boundary with its {opts['train_steps']} training steps)"
    )
    ok = (
        divergences == 0
        and same
        and all(m["applied"] == ranks[0]["applied"] for m in ranks)
        and sum(decided.values()) == opts["actions"]
    )
    print("result                     : " + ("PASS" if ok else "FAIL"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1000)
    parser.add_argument("--strategy", choices=("masked", "resize"), default="resize")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", choices=("redis", "jsonl"), default="redis")
    parser.add_argument("--train-steps", type=int, default=3, help="training steps between boundaries")
    parser.add_argument("--max-per-boundary", type=int, default=2, help="most actions per boundary")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--initial-experts", type=int, default=4)
    parser.add_argument("--max-experts", type=int, default=8, help="cap of live experts per layer")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile rank 0's boundaries; print the top N functions",
    )
    parser.add_argument("--profile-from", type=int, default=0, metavar="B", help="profile from boundary B on")
    args = parser.parse_args()
    opts = vars(args) | {
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "run_id": f"soak-ddp-{uuid.uuid4().hex[:12]}",
    }
    with tempfile.TemporaryDirectory() as directory:
        if args.log == "jsonl":
            spawn_ranks(rank_main, 2, f"jsonl://{directory}", opts)
        else:
            with redis_url() as url:
                spawn_ranks(rank_main, 2, url, opts)


if __name__ == "__main__":
    main()

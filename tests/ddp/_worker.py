"""One rank of a multi-rank test run: `python -m tests.ddp._worker MODE ...` under torchrun's env.

The harness (`_harness.py`) starts one copy per rank with `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
`MASTER_PORT` and `TORCHELASTIC_RESTART_COUNT` set, as torchrun would. A worker joins a gloo
process group, does what MODE asks and prints one JSON line on stdout: its result, or the
exception that ended it (then it exits 3 without tearing the group down, which a dead peer
could block). Faults are injected into the real demo run, never by replacing our components:

- `--nudge STEP`: rank 1 adds 1e-3 to one head weight after step STEP's boundary;
- `--die-at STEP`: rank `--die-rank` SIGKILLs itself after step STEP's boundary;
- `--leader-dies-at STEP`: the leader SIGKILLs itself while deciding step STEP, before its seal.

With `--scheduled EVERY` the leader decides with `tests._expert_actions.SeededDecider` instead
of the expert coordinator: every EVERY steps one of SPAWN, SPLIT, PRUNE, MERGE in turn, on
experts its seed picks, so what a run decides does not depend on this CPU's floats. A train
report lists, after every evaluation step, the routing experts and the rows of each layer.

Mode `collectives` exercises `projections.training.distributed` on real tensors and prints what it saw.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import bus
from projections.training import SyncConfig, distributed
from replay.cli._launch import worker_from_env
from replay.demo import DemoOptions, DemoRun, RankOptions, demo_config
from tests._expert_actions import install

ERROR_EXIT = 3
"""The exit status of a worker whose run raised (its JSON line names the exception)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tests.ddp._worker")
    parser.add_argument("mode", choices=("train", "collectives"))
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--run", default="ddp")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", choices=("masked", "resize"), default="masked")
    parser.add_argument("--sync-timeout", type=float, default=60.0)
    parser.add_argument("--repair", action="store_true")
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--nudge", type=int, default=0, metavar="STEP")
    parser.add_argument("--die-at", type=int, default=0, metavar="STEP")
    parser.add_argument("--die-rank", type=int, default=1)
    parser.add_argument("--leader-dies-at", type=int, default=0, metavar="STEP")
    parser.add_argument("--scheduled", type=int, default=0, metavar="EVERY")
    return parser


def train(args: argparse.Namespace, restart: int) -> dict[str, Any]:
    """Train the demo on this rank with the faults asked for; return its digests."""
    rank = dist.get_rank()
    ranks = RankOptions(
        sync=SyncConfig(timeout=args.sync_timeout, repair=args.repair),
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume=restart > 0,
    )
    with bus.open(args.url, args.run) as log:
        demo = DemoRun(
            DemoOptions(steps=args.steps, seed=args.seed, strategy=args.strategy), log, ranks=ranks
        )
        assert demo.lifecycle is not None
        if args.scheduled:
            install(demo, every=args.scheduled)
        if args.leader_dies_at and demo.lifecycle.sync.is_leader:
            _die_while_deciding(demo, args.leader_dies_at)
        shapes: list[dict[str, Any]] = []

        def after_step(step: int) -> None:
            if step == args.nudge and rank == 1:
                with torch.no_grad():
                    demo.model.head.weight[0, 0] += 1e-3
            if step == args.die_at and rank == args.die_rank:
                os.kill(os.getpid(), signal.SIGKILL)
            if step % demo_config(demo.options).lifecycle_eval_interval == 0:
                shapes.append(_shape(demo, step))

        demo.run(after_step=after_step)
        surgery = demo.lifecycle.surgery
        return {
            "rank": rank,
            "digest": demo.digest,
            "own": surgery.digest(),
            "model": surgery.digest(event_ids=False),
            "rewraps": demo.replicated.rewraps,
            "shapes": shapes,
        }


def _shape(demo: DemoRun, step: int) -> dict[str, Any]:
    """Where the model stands after step `step`'s boundary: routing experts and rows per layer."""
    rows = {str(i): int(layer.capacity) for i, layer in demo.model.layers().items()}
    routing = {str(i): n for i, n in demo.experts().items()}
    return {"step": step, "routing": routing, "rows": rows}


def _die_while_deciding(demo: DemoRun, step: int) -> None:
    """Make the leader's coordinator SIGKILL this process when asked to decide `step`."""
    assert demo.lifecycle is not None
    coordinator = demo.lifecycle.coordinator
    decide = coordinator.decide

    def dying(registry: Any, **kwargs: Any) -> Any:
        if kwargs["step"] == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return decide(registry, **kwargs)

    coordinator.decide = dying  # type: ignore[method-assign]


def collectives() -> dict[str, Any]:
    """Run each `projections.training.distributed` helper on rank-dependent tensors; return what came back."""
    rank, size = dist.get_rank(), dist.get_world_size()
    summed = {
        "float32": torch.full((2, 3), float(rank + 1)),
        "float64": torch.tensor([0.5 * (rank + 1)], dtype=torch.float64),
        "int64": torch.arange(4, dtype=torch.int64) * (rank + 1),
        "int32": torch.tensor([[rank, 10 * rank]], dtype=torch.int32),
        "float32_b": torch.tensor([rank + 0.25]),
    }
    distributed.sum_in_place(summed.values())
    digests = {
        "low": f"{rank + 1:016x}",  # below 2**63
        "high": f"{(1 << 64) - 1 - rank:016x}",  # above 2**63: negative as int64
        "mixed": "7fffffffffffffff" if rank == 0 else "8000000000000000",
        "equal": "8000000000000001",
    }
    ranges = {name: distributed.digest_range(d) for name, d in digests.items()}
    gathered = {name: distributed.gather_digests(d) for name, d in digests.items()}
    return {
        "rank": rank,
        "world_size": size,
        "active": distributed.active(),
        "summed": {name: {"dtype": str(t.dtype), "values": t.tolist()} for name, t in summed.items()},
        "ranges": ranges,
        "gathered": gathered,
        "broadcast": _broadcast_check(rank),
    }


def _broadcast_check(rank: int) -> dict[str, Any]:
    """Give each rank different weights and optimizer state, broadcast rank 0's; report both."""
    torch.manual_seed(100 + rank)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(rank + 1):  # different moments and a different `step` count per rank
        optimizer.zero_grad()
        model(torch.randn(5, 3)).square().sum().backward()
        optimizer.step()
    before = _fingerprint(model, optimizer)
    distributed.broadcast_training_state(distributed.named_state(model), optimizer, src=0)
    return {"before": before, "after": _fingerprint(model, optimizer)}


def _fingerprint(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Return every parameter, buffer and optimizer state value as plain lists."""
    out: dict[str, Any] = {n: t.detach().tolist() for n, t in distributed.named_state(model)}
    for i, state in enumerate(optimizer.state_dict()["state"].values()):
        for key, value in sorted(state.items()):
            out[f"opt{i}/{key}"] = value.tolist() if isinstance(value, torch.Tensor) else value
    return out


def main() -> None:
    """Join the process group, run the mode, print one JSON line, leave the group in step with
    the other ranks; exit 3 on an exception, leaving nothing."""
    args = _parser().parse_args()
    worker = worker_from_env(os.environ)
    assert worker is not None, "run me with RANK and WORLD_SIZE set"
    torch.set_num_threads(1)
    with distributed.process_group("gloo", timeout=datetime.timedelta(seconds=60)):
        try:
            result = train(args, worker.restart) if args.mode == "train" else collectives()
        except Exception as e:
            report = {
                "rank": worker.rank,
                "error": type(e).__name__,
                "message": str(e),
                "step": getattr(e, "step", None),
                "ranks": getattr(e, "ranks", None),
                "error_rank": getattr(e, "rank", None),
            }
            print(json.dumps(report), flush=True)
            os._exit(ERROR_EXIT)  # no teardown: a collective with a dead peer could block it
        print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()

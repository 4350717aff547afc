"""`lifecycle-es demo seeds [--spec kasmina|module] [--controller heuristic|policy|hybrid]
[--grafting NAME] [--strategy masked|resize] [--ranks N] [--baseline] [--steps N] [--seed S]
[--log URL] [--run RUN] [--policy FILE] [--quiet] [--resume RUN]`: train a small host network that lacks
capacity while a seed controller grows seeds into its middle layer, log every decision, and
print what happened.

Seeds germinate when the host's loss plateaus, train to reconstruct their chunk, are grafted in
with the chosen schedule, stabilize, are evaluated by their measured contribution, and fossilize
or are culled; a graft that makes the held-out loss worse is rolled back (its weights restored
from the rollback point) and its slot embargoed. `lifecycle-es demo moe` (or plain `demo`) is
the MoE demo. `--ranks N` starts N gloo ranks as the MoE demo does: rank 0 decides and writes,
every rank folds the log into its own copy, and each prints its digest.

SIGTERM or SIGINT (to the process, or to any one rank) stops every rank at the next evaluation
(at most 10 steps on), where each saves a checkpoint and the run is recorded `interrupted`
(`stopped` for SIGINT); the command exits 143 (130). `--resume RUN` continues it from there
with the arguments it recorded when it started, and ends with the digest (weights and optimizer
state, printed as `digest:`) of a run trained without a stop along the same log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bus
from bus import JsonlLog, Log
from lifecycle_es.errors import ConfigError
from replay.cli._launch import SIGNALS_HELP, launch, worker_from_env
from replay.cli._resume import add_resume_argument, gather_found, metadata, require_checkpoints, take_recorded
from replay.cli.demo import LOG_ENV, _open_new, decisions_path, interrupted, run_dir
from replay.export import write_decisions

if TYPE_CHECKING:
    from replay.demo.seeds import SeedsOptions, SeedsRun
    from replay.demo.seeds.report import SeedsOutcome

__all__ = ["COMMAND", "DEFAULT_STEPS", "add_parser", "route", "run"]

COMMAND = "demo-seeds"
"""The parser's name for `demo seeds` (`route` maps the two words onto it)."""
DEFAULT_STEPS = 3000
"""About 15 s on one CPU thread: room for two or three generations of seeds per slot."""
_GLOBAL_WITH_VALUE = frozenset({"--log-level", "--log-format", "--color"})
RECORDED = ("spec", "controller", "grafting", "strategy", "steps", "seed", "ranks", "policy")
"""The arguments a seeds run records in `RunStarted.metadata` and `--resume` takes back."""


def route(argv: Sequence[str]) -> list[str]:
    """Map `demo seeds ...` onto the `demo-seeds` command and `demo moe ...` onto `demo ...`."""
    args, i = list(argv), 0
    while i < len(args) and args[i].startswith("-"):  # the global options before the command
        i += 2 if args[i] in _GLOBAL_WITH_VALUE else 1
    if i + 1 < len(args) and args[i] == "demo" and args[i + 1] in ("seeds", "moe"):
        return [*args[:i], COMMAND if args[i + 1] == "seeds" else "demo", *args[i + 2 :]]
    return args


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the seeds demo's options to `parser`."""
    from replay.demo.seeds.options import CONTROLLERS, GRAFTINGS

    parser.add_argument(
        "--spec", choices=("kasmina", "module"), default="kasmina", help="seed lifecycle (default kasmina)"
    )
    parser.add_argument(
        "--controller", choices=CONTROLLERS, default="heuristic", help="who decides (default heuristic)"
    )
    parser.add_argument(
        "--grafting", choices=GRAFTINGS, default="linear", help="alpha schedule (default linear)"
    )
    parser.add_argument(
        "--strategy",
        choices=("masked", "resize"),
        default="masked",
        help="pre-allocated blueprint rows (default), or rows really added and removed",
    )
    parser.add_argument("--policy", metavar="FILE", help="a saved DemoPolicy state dict (policy, hybrid)")
    parser.add_argument(
        "--baseline", action="store_true", help="also train the host alone and a host of equal size"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        metavar="N",
        help=f"training steps (default {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the weights and data (default 0)"
    )
    parser.add_argument(
        "--log",
        default=bus.DEFAULT_URL,
        metavar="URL",
        help=f"the run's log: a directory, jsonl://DIR or redis:// URL (default {bus.DEFAULT_URL})",
    )
    parser.add_argument("--run", metavar="RUN", help="the run id (default seeds-<date>-<time>)")
    parser.add_argument(
        "--ranks",
        type=int,
        default=1,
        metavar="N",
        help=f"train on N local gloo ranks (default 1). {SIGNALS_HELP}",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_resume_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train with the seeds (and the baselines if asked), export the decisions, print a summary."""
    worker = worker_from_env(os.environ)
    if worker is not None:
        args.log = os.environ.get(LOG_ENV, args.log)
    take_recorded(args, RECORDED, command="seeds")
    options = _options(args)
    run_id = time.strftime("seeds-%Y%m%d-%H%M%S") if args.run is None else args.run
    if worker is None and args.ranks > 1:
        if args.resume:
            where = _checkpoint_dir(args.log, run_id)
            found = [_has_checkpoint(where, rank) for rank in range(args.ranks)]
            require_checkpoints(found, run=run_id, where=where)
        return launch(_worker_argv(args, run_id), args.ranks, env={LOG_ENV: args.log})
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors; one thread keeps runs repeatable
    try:
        if worker is not None:
            return _run_rank(args, options, run_id, worker.rank, worker.world_size)
        # apply_recorded found the resumed run's log; a writer opens it as a writer
        with bus.open(args.log, run_id) if args.resume else _open_new(args.log, run_id) as log:
            live, outcome = _train(options, log, "lifecycle (seeds)", args.quiet, args=args)
            if live.stopped_at is not None:
                return interrupted("demo seeds", args, log, live)
            outcomes = [outcome, *(_baselines(options, live, args.quiet) if args.baseline else [])]
            _report(args, log, live, outcomes)
    finally:
        torch.set_num_threads(threads)
    return 0


def _options(args: argparse.Namespace) -> SeedsOptions:
    from replay.demo.seeds import SeedsOptions

    if args.ranks < 1:
        raise ConfigError(f"--ranks must be >= 1, got {args.ranks}")
    if args.baseline and args.ranks > 1:
        raise ConfigError("--baseline runs in one process; leave out --ranks")
    return SeedsOptions(
        spec=args.spec,
        controller=args.controller,
        grafting=args.grafting,
        strategy=args.strategy,
        steps=args.steps,
        seed=args.seed,
        policy_path=args.policy,
    )


def _worker_argv(args: argparse.Namespace, run_id: str) -> list[str]:
    """Return the command line every rank runs: this one, with the run id fixed and no --log."""
    argv = ["--log-level", args.log_level, "--log-format", args.log_format, "--color", args.color, COMMAND]
    for flag in ("spec", "controller", "grafting", "strategy", "steps", "seed", "ranks"):
        argv += [f"--{flag}", str(getattr(args, flag))]
    argv += [
        "--resume" if args.resume else "--run",
        run_id,
        *(["--policy", args.policy] if args.policy else []),
    ]
    return argv + (["--quiet"] if args.quiet else [])


def _run_rank(args: argparse.Namespace, options: SeedsOptions, run_id: str, rank: int, world: int) -> int:
    """Be one rank: join the process group, train (rank 0 decides), print the digest."""
    import datetime

    from projections.training import distributed
    from replay.cli.demo import _leaders_run_id

    with distributed.process_group("gloo", timeout=datetime.timedelta(seconds=120)):
        run_id = _leaders_run_id(run_id)
        log = _open_new(args.log, run_id) if rank == 0 and not args.resume else None
        import torch.distributed as dist

        dist.barrier()  # the leader created the run's log
        if args.resume:  # under torchrun no launcher checked: every rank tells the others
            where = _checkpoint_dir(args.log, run_id)
            require_checkpoints(gather_found(_has_checkpoint(where, rank), world), run=run_id, where=where)
        with log or bus.open(args.log, run_id) as opened:
            quiet = args.quiet or rank != 0
            live, outcome = _train(options, opened, f"rank {rank}", quiet, args=args, rank=rank, world=world)
            if live.stopped_at is not None:
                sys.stderr.write(f"rank {rank}: stopped at step {live.stopped_at}\n")
                return interrupted("demo seeds", args, opened, live) if rank == 0 else live.exit_code
            sys.stderr.write(f"rank {rank}: finished step {options.steps} with digest {live.digest}\n")
            sys.stderr.flush()
            digests = _gather(live.digest, world)
            if rank == 0:
                _report(args, opened, live, [outcome])
                same = "every rank ended with" if len(set(digests)) == 1 else "DIGESTS DIFFER:"
                print(f"ranks:     {world}, {same} digest {' '.join(sorted(set(digests)))}")
    return 0


def _checkpoint_dir(url: str, run_id: str) -> Path:
    """Where the ranks of run `run_id` of the log at `url` save their stop checkpoints."""
    with bus.open(url, run_id, create=False) as log:
        return (run_dir(log) / "checkpoints").absolute()


def _has_checkpoint(directory: Path, rank: int) -> bool:
    """Whether rank `rank` has a seeds-demo checkpoint in `directory` (as its resume loads one)."""
    from projections.training.checkpoint_manager import CheckpointManager
    from replay.demo.seeds.checkpoint import STATE

    if not directory.is_dir():
        return False
    return bool(CheckpointManager(directory).list_checkpoints(layer=0, seed=rank, state=STATE, place="all"))


def _gather(digest: str, world: int) -> list[str]:
    """Return every rank's digest (16 hex digits each), gathered as bytes: no pickle."""
    import torch
    import torch.distributed as dist

    mine = torch.tensor(list(digest.encode().ljust(16)[:16]), dtype=torch.uint8)
    every = [torch.zeros(16, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(every, mine)
    return [bytes(t.tolist()).decode().strip() for t in every]


def _train(
    options: SeedsOptions,
    log: Log | None,
    label: str,
    quiet: bool,
    *,
    args: argparse.Namespace | None = None,
    rank: int = 0,
    world: int = 1,
) -> tuple[SeedsRun, SeedsOutcome]:
    """Train one run; a run with a log (the lifecycle's, given `args`) is guarded against preemption."""
    from replay.demo.seeds import SeedsRun
    from replay.demo.seeds.report import SeedsBar, SeedsOutcome

    demo = SeedsRun(options, log, rank=rank, world_size=world, **_files(log, args, rank))
    started = time.monotonic()
    bar = None if quiet else SeedsBar(sys.stderr, label=label)
    try:
        show = None if bar is None else lambda s, loss, states: bar.show(s, options.steps, loss, states)
        demo.run(show, guarded=log is not None and args is not None)
    finally:
        if bar is not None:
            bar.close()
    return demo, SeedsOutcome.of(label, demo, time.monotonic() - started)


def _files(log: Log | None, args: argparse.Namespace | None, rank: int) -> dict[str, Any]:
    """The rollback and checkpoint directories of a run with a log, its resume flag and metadata."""
    if log is None:
        return {}
    # absolute: the log records the path, and a resume may run in another directory
    files = {"rollback_dir": (run_dir(log) / f"rollback-{rank}").absolute()}
    if args is None:
        return files
    checkpoints = (run_dir(log) / "checkpoints").absolute()
    recorded = metadata(args, RECORDED, command="seeds", checkpoint_dir=checkpoints, seed=args.seed)
    return {**files, "checkpoint_dir": checkpoints, "resume": args.resume is not None, "metadata": recorded}


def _baselines(options: SeedsOptions, live: SeedsRun, quiet: bool) -> list[SeedsOutcome]:
    """Train the host alone, and a host widened to the lifecycle model's parameter count."""
    import dataclasses

    from replay.demo.seeds.model import parameter_count

    total = sum(p.numel() for p in live.model.parameters())
    width = options.width
    while parameter_count(width) < total:
        width += 1
    runs = [("host alone", options.width), (f"host, width {width} (same params)", width)]
    return [
        _train(dataclasses.replace(options, lifecycle=False, width=w, chunks=1), None, label, quiet)[1]
        for label, w in runs
    ]


def _report(args: argparse.Namespace, log: Log, live: SeedsRun, outcomes: list[SeedsOutcome]) -> None:
    from replay.demo.seeds.report import seeds_summary

    path = decisions_path(log)
    write_decisions(log, path)
    where = str(log.path) if isinstance(log, JsonlLog) else f"{log.url} (Redis stream)"
    print(seeds_summary(live, outcomes), end="")
    print(f"\nlog:       {where}, run {log.run_id}")
    print(f"files:     {run_dir(log)}{os.sep} (decisions and rollback points)")
    print(f"decisions: {path}")
    print(f"replay it: lifecycle-es replay {bus.redact_url(args.log)} --run {log.run_id}")
    print(f"digest:    {live.final_digest} (parameters and optimizer state)")

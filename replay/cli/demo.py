"""`lifecycle-es demo [--log URL] [--steps N] [--seed S] [--strategy masked|resize] [--baseline]
[--run RUN] [--quiet] [--ranks N] [--max-restarts K] [--checkpoint-every S] [--sync-timeout T]
[--repair] [--resume RUN]`: train a small MoE whose experts the lifecycle spawns, prunes, splits
and merges, log every decision, and print what happened.

The run is preemption-safe: SIGTERM, SIGINT (or SIGTERM to any one rank) stops every rank at the
next evaluation boundary (at most 10 steps on), where a checkpoint is saved and the run recorded
`interrupted` (`stopped` for SIGINT); the command exits 143 (130), the code requeue wrappers read
as "run me again". `--resume RUN` continues it from its newest intact checkpoint with the
arguments it recorded in `RunStarted`, and ends bit-identical to a run never interrupted.

With `--ranks N` the command starts N gloo ranks on this machine (each a copy of itself with
torchrun's environment); run under `torchrun --nproc-per-node N -m replay.cli -- demo ...` it is
one of torchrun's ranks (the `--` keeps torchrun from reading `--log` and `--run` as
abbreviations of its own options). Rank 0 decides and prints; every rank follows the log.

Each decision's noise is seeded from the run's seed, step, action and target, so a run is
reproduced exactly by the same `--seed`, `--steps` and `--strategy`, in another log directory
or under another `--run`. torch is imported only when the command runs, so the rest
of the command line starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bus
from bus import JsonlLog, Log, MirroredLog
from lifecycle_es.errors import ConfigError
from replay.analysis import decisions
from replay.cli._launch import SIGNALS_HELP, Worker, launch, worker_from_env
from replay.cli._resume import add_resume_argument, apply_recorded, metadata
from replay.export import write_decisions

if TYPE_CHECKING:
    from replay.demo import DemoOptions, DemoRun, RankOptions
    from replay.demo.report import Outcome
    from replay.demo.seeds import SeedsRun

__all__ = ["DEFAULT_STEPS", "LOG_ENV", "RECORDED", "add_parser", "decisions_path", "run", "run_dir"]

DEFAULT_STEPS = 3000
"""The default run length: five phases of 600 steps, about 15 s on one CPU thread."""
DECISIONS_FILE = "lifecycle_decisions.jsonl"
LOCAL_RUNS = Path("runs")
"""Where the files of a run whose log has no directory (a Redis log without a mirror) go:
`runs/<run>/`, as for the default JSONL log."""
LOG_ENV = "LIFECYCLE_ES_DEMO_LOG"
"""The variable through which `--ranks N` hands the log URL to its ranks: a URL may hold a
password, and a process's environment is readable by its user only, its argv by everyone (`ps`)."""
RECORDED = ("steps", "seed", "strategy", "ranks", "checkpoint_every", "sync_timeout", "repair")
"""The arguments a run records in `RunStarted.metadata` and `--resume` takes back."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the demo options to `parser`."""
    _add_run_options(parser)
    _add_rank_options(parser.add_argument_group("several ranks (DDP on gloo, CPU)"))
    add_resume_argument(parser)
    parser.set_defaults(handler=run)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of one run: where its log goes, how long it trains, what it compares."""
    parser.add_argument(
        "--log",
        default=bus.DEFAULT_URL,
        metavar="URL",
        help="where the run's log goes: an existing directory, jsonl://DIR or a redis:// URL "
        f"(default {bus.DEFAULT_URL}); the run's other files go to a directory per run beside it",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        metavar="N",
        help=f"training steps (default {DEFAULT_STEPS}); the phases scale with them",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the model's weights and of the data (default 0)",
    )
    parser.add_argument(
        "--strategy",
        choices=("masked", "resize"),
        default="masked",
        help="model surgery: fixed slots with a mask (default), or parameters really added and removed",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also train static models (lifecycle off) of the start, mean and maximum "
        "number of experts on the same task, and compare losses",
    )
    parser.add_argument("--run", metavar="RUN", help="the run id (default demo-<date>-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_rank_options(ranks: argparse._ArgumentGroup) -> None:
    """The options of a run on several ranks: how many, restarts, checkpoints, step sync."""
    ranks.add_argument(
        "--ranks",
        type=int,
        default=1,
        metavar="N",
        help=f"train on N local processes (default 1); under torchrun, torchrun's ranks. {SIGNALS_HELP}",
    )
    ranks.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="K",
        help="restart every rank from the last checkpoint up to K times when one dies",
    )
    ranks.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="S",
        help="write a checkpoint every S steps, a multiple of 10 (default: none)",
    )
    ranks.add_argument(
        "--sync-timeout",
        type=float,
        default=60.0,
        metavar="T",
        help="seconds a rank waits for the leader to seal a step (default 60)",
    )
    ranks.add_argument(
        "--repair",
        action="store_true",
        help="on a digest mismatch, copy rank 0's state to every rank instead of failing",
    )


def run(args: argparse.Namespace) -> int:
    """Train with the lifecycle (and the baseline if asked), export the decisions, print a summary."""
    worker = worker_from_env(os.environ)
    if worker is not None:
        args.log = os.environ.get(LOG_ENV, args.log)
    if args.resume is not None:
        if args.run is not None or args.baseline:
            raise ConfigError("--resume RUN names the run: leave out --run and --baseline")
        apply_recorded(args, RECORDED, command="moe")
        args.run = args.resume
    _check(args)
    # `--run ""` is an invalid id for bus.open to refuse, not a request for the default one.
    run_id = time.strftime("demo-%Y%m%d-%H%M%S") if args.run is None else args.run
    if worker is None and args.ranks > 1:
        argv = _worker_argv(args, run_id)
        return launch(argv, args.ranks, max_restarts=args.max_restarts, env={LOG_ENV: args.log})
    import torch  # here, not at import: `lifecycle-es tail` should not pay for torch

    from replay.demo import DemoOptions

    options = DemoOptions(steps=args.steps, seed=args.seed, strategy=args.strategy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tensors are small, and one thread keeps runs repeatable
    try:
        if worker is not None:
            return _run_rank(args, options, run_id, worker)
        resume = args.resume is not None
        # apply_recorded found the resumed run's log; a writer opens it as a writer
        with bus.open(args.log, run_id) if resume else _open_new(args.log, run_id) as log:
            ranks = _rank_options(args, log, resume=resume)
            live, outcome = _train(options, log, "lifecycle", args.quiet, ranks, _metadata(args, ranks))
            if live.stopped_at is not None:
                return interrupted("demo", args, log, live)
            runs = [outcome]
            if args.baseline:
                runs += [
                    _train(static, None, label, args.quiet)[1]
                    for label, static in _static_baselines(options, live)
                ]
            _report(args, log, live, runs)
    finally:
        torch.set_num_threads(threads)
    return 0


def _metadata(args: argparse.Namespace, ranks: RankOptions) -> dict[str, Any]:
    assert ranks.checkpoint_dir is not None
    return metadata(args, RECORDED, command="moe", checkpoint_dir=ranks.checkpoint_dir, seed=args.seed)


def interrupted(command: str, args: argparse.Namespace, log: Log, live: DemoRun | SeedsRun) -> int:
    """Say where a stopped `lifecycle-es COMMAND` run stopped and how to resume it; return its exit code."""
    print(f"stopped:   at step {live.stopped_at} of {live.options.steps}, checkpoint in {run_dir(log)}")
    print(f"resume:    lifecycle-es {command} --log {bus.redact_url(args.log)} --resume {log.run_id}")
    return live.exit_code


def _check(args: argparse.Namespace) -> None:
    if args.steps < 50:
        raise ConfigError(f"--steps must be at least 50, got {args.steps}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.ranks < 1 or args.max_restarts < 0 or args.checkpoint_every < 0:
        raise ConfigError("--ranks must be >= 1, --max-restarts and --checkpoint-every >= 0")
    if args.checkpoint_every % 10:
        raise ConfigError(
            f"--checkpoint-every must be a multiple of 10 (the evaluation interval), "
            f"got {args.checkpoint_every}"
        )
    if not 0 < args.sync_timeout < float("inf"):
        raise ConfigError(f"--sync-timeout must be a number of seconds > 0, got {args.sync_timeout}")
    if args.baseline and args.ranks > 1:
        raise ConfigError("--baseline runs in one process; leave out --ranks")


def _worker_argv(args: argparse.Namespace, run_id: str) -> list[str]:
    """Return the command line every rank runs: this one, with the run id fixed."""
    argv = [
        "--log-level",  # the logging options go first, where every command takes them
        args.log_level,
        "--log-format",
        args.log_format,
        "--color",
        args.color,
        "demo",  # no --log: it goes in LOG_ENV
        "--steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--strategy",
        args.strategy,
        "--resume" if args.resume is not None else "--run",
        run_id,
        "--ranks",
        str(args.ranks),
        "--checkpoint-every",
        str(args.checkpoint_every),
        "--sync-timeout",
        str(args.sync_timeout),
    ]
    return argv + [flag for flag, on in (("--quiet", args.quiet), ("--repair", args.repair)) if on]


def _rank_options(args: argparse.Namespace, log: Log, *, resume: bool = False) -> RankOptions:
    from projections.training.sync import SyncConfig
    from replay.demo import RankOptions

    return RankOptions(
        sync=SyncConfig(timeout=args.sync_timeout, repair=args.repair),
        # absolute: the log records the path, and a resume may run in another directory
        checkpoint_dir=(run_dir(log) / "checkpoints").absolute(),
        checkpoint_every=args.checkpoint_every,
        resume=resume,
    )


def _run_rank(args: argparse.Namespace, options: DemoOptions, run_id: str, worker: Worker) -> int:
    """Be one rank of a multi-rank run: join the process group, train, report (rank 0)."""
    from projections.training import distributed

    if args.run is None and worker.restart:
        raise ConfigError("a restarted rank finds its run by id: pass --run to every rank")
    timeout = datetime.timedelta(seconds=max(60.0, 2 * args.sync_timeout))
    with distributed.process_group("gloo", timeout=timeout):  # leaves in step with the others
        run_id = _leaders_run_id(run_id)
        leader = worker.rank == 0
        fresh = worker.restart == 0 and args.resume is None
        log = _open_new(args.log, run_id) if leader and fresh else bus.open(args.log, run_id)
        with log:
            quiet = args.quiet or not leader
            ranks = _rank_options(args, log, resume=not fresh)
            live, outcome = _train(options, log, f"rank {worker.rank}", quiet, ranks, _metadata(args, ranks))
            if live.stopped_at is not None:
                sys.stderr.write(f"rank {worker.rank}: stopped at step {live.stopped_at}\n")
                return interrupted("demo", args, log, live) if leader else live.exit_code
            # One write of the whole line: ranks share the launcher's stderr, and print()'s
            # separate write of the newline lets another rank's line land in between.
            sys.stderr.write(f"rank {worker.rank}: finished step {options.steps} with digest {live.digest}\n")
            sys.stderr.flush()
            if leader:
                _report(args, log, live, [outcome])
                print(f"ranks:     {worker.world_size}, every rank ended with digest {live.digest}")
    return 0


def _leaders_run_id(run_id: str) -> str:
    """Return rank 0's run id on every rank (their default ids, made of the time, may differ)."""
    import torch
    import torch.distributed as dist

    encoded = torch.zeros(256, dtype=torch.uint8)
    raw = run_id.encode()[:256]
    encoded[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    dist.broadcast(encoded, src=0)
    return bytes(encoded.tolist()).rstrip(b"\x00").decode()


def _report(args: argparse.Namespace, log: Log, live: DemoRun, runs: list[Outcome]) -> None:
    path = decisions_path(log)
    write_decisions(log, path)
    made = [(int(d["step"]), str(d["action"])) for d in decisions(log)]
    where = str(log.path) if isinstance(log, JsonlLog) else f"{log.url} (Redis stream)"
    print(_summary(live, made, runs), end="")
    print(f"\nlog:       {where}, run {log.run_id}")
    print(f"files:     {run_dir(log)}{os.sep} (every file the demo wrote for this run)")
    print(f"decisions: {path}")
    print(f"replay it: lifecycle-es replay {bus.redact_url(args.log)} --run {log.run_id}")
    print(f"digest:    {live.final_digest} (parameters, optimizer state, registry)")


def run_dir(log: Log) -> Path:
    """Return the directory of every file the demo writes for a run (decisions, checkpoints).

    `DIR/<run>/` beside a JSONL log `DIR/<run>.jsonl` or a Redis log's JSONL mirror in `DIR`
    (ChronoMoE's `outputs/<run_id>/` layout), else `runs/<run>/`: one directory per run
    whatever the log, so runs never overwrite each other's files.
    """
    if isinstance(log, JsonlLog):
        return log.path.parent / log.run_id
    if isinstance(log, MirroredLog):
        return log.mirror.path.parent / log.run_id
    return LOCAL_RUNS / log.run_id


def decisions_path(log: Log) -> Path:
    """Return where the demo writes a run's decisions: `lifecycle_decisions.jsonl` in `run_dir`."""
    return run_dir(log) / DECISIONS_FILE


def _open_new(url: str, run_id: str) -> Log:
    """Open the log of a new run; a run id that already has records is refused."""
    log = bus.open(url, run_id)
    if log.last_seq():
        log.close()
        raise ConfigError(f"run {run_id!r} already has a log at {bus.redact_url(url)}; choose another --run")
    return log


def _train(
    options: DemoOptions,
    log: Log | None,
    label: str,
    quiet: bool,
    ranks: RankOptions | None = None,
    recorded: dict[str, Any] | None = None,
) -> tuple[DemoRun, Outcome]:
    """Train one run; a run with a log (the lifecycle's) is guarded against preemption."""
    from replay.demo import DemoRun
    from replay.demo.report import Outcome, ProgressBar

    demo = DemoRun(options, log, ranks=ranks, metadata=recorded)
    started = time.monotonic()
    bar = None if quiet else ProgressBar(sys.stderr, label=label)
    with bar or contextlib.nullcontext():  # the bar ends its line on Ctrl-C too
        demo.run(bar, guarded=log is not None)
    seconds = time.monotonic() - started
    return demo, Outcome(label, demo.timeline.phase_losses, demo.mean_loss, seconds)


def _static_baselines(options: DemoOptions, live: DemoRun) -> list[tuple[str, DemoOptions]]:
    """Return the static models `--baseline` trains: the lifecycle off, a fixed number of experts.

    Three sizes, so a reader can tell whether the lifecycle beats a static model of its own
    size and not only a small one: the experts it started with, the mean number it routed over
    the run (rounded), and the most it may hold (`max_experts`). Sizes that coincide train once.
    """
    counts = [sum(n.values()) / max(len(n), 1) for _, n in live.timeline.experts]
    mean = max(1, round(sum(counts) / len(counts))) if counts else options.initial_experts
    sizes = {"start": options.initial_experts, "mean": mean, "max": options.max_experts}
    chosen: dict[int, str] = {}
    for name, size in sizes.items():
        chosen[size] = f"{chosen[size]}/{name}" if size in chosen else name
    return [
        (f"static {size} ({names})", dataclasses.replace(options, lifecycle=False, initial_experts=size))
        for size, names in chosen.items()
    ]


def _summary(live: DemoRun, made: list[tuple[int, str]], runs: list[Outcome]) -> str:
    from replay.demo.report import sample, summary

    task = live.task
    rows = sample(live.timeline.experts, made, lambda step: task.phases[task.phase_index(step)].name)
    return summary(samples=rows, decisions=Counter(a for _, a in made), runs=runs)

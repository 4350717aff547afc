"""`lifecycle-es demo [--log URL] [--steps N] [--seed S] [--strategy masked|resize] [--baseline]
[--run RUN] [--quiet]`: train a small MoE whose experts the lifecycle spawns, prunes, splits and
merges, log every decision, and print what happened.

The run id seeds each decision's noise (the expert coordinator derives it from run, step and
action), so a run is reproduced exactly by the same `--seed`, `--steps`, `--strategy` and
`--run`, in another log directory. torch is imported only when the command runs, so the rest
of the command line starts fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import bus
from bus import JsonlLog, Log
from lifecycle_es.errors import ConfigError
from replay.analysis import decisions
from replay.export import write_decisions

if TYPE_CHECKING:
    from replay.demo import DemoOptions, DemoRun
    from replay.demo._report import Outcome

__all__ = ["DEFAULT_STEPS", "add_parser", "decisions_path", "run"]

DEFAULT_STEPS = 3000
"""The default run length: five phases of 600 steps, about 15 s on one CPU thread."""
DECISIONS_FILE = "lifecycle_decisions.jsonl"


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the demo options to `parser`."""
    parser.add_argument("--log", default=bus.DEFAULT_URL, metavar="URL",
                        help=f"where the run's log goes: jsonl://DIR or a redis:// URL "
                             f"(default {bus.DEFAULT_URL})")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                        help=f"training steps (default {DEFAULT_STEPS}); the phases scale with them")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the model's weights and of the data (default 0)")
    parser.add_argument("--strategy", choices=("masked", "resize"), default="masked",
                        help="model surgery: fixed slots with a mask (default), or parameters "
                             "really added and removed")
    parser.add_argument("--baseline", action="store_true",
                        help="also train the same task with the lifecycle off and compare losses")
    parser.add_argument("--run", metavar="RUN", help="the run id (default demo-<date>-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train with the lifecycle (and the baseline if asked), export the decisions, print a summary."""
    if args.steps < 50:
        raise ConfigError(f"--steps must be at least 50, got {args.steps}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    run_id = args.run or time.strftime("demo-%Y%m%d-%H%M%S")
    import torch  # here, not at import: `lifecycle-es tail` should not pay for torch

    from replay.demo import DemoOptions

    options = DemoOptions(steps=args.steps, seed=args.seed, strategy=args.strategy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tensors are small, and one thread keeps runs repeatable
    try:
        with _open_new(args.log, run_id) as log:
            live, outcome = _train(options, log, "lifecycle", args.quiet)
            runs = [outcome]
            if args.baseline:
                baseline = dataclasses.replace(options, lifecycle=False)
                runs.append(_train(baseline, None, "baseline", args.quiet)[1])
            path = decisions_path(log)
            write_decisions(log, path)
            made = [(int(d["step"]), str(d["action"])) for d in decisions(log)]
            where = str(log.path) if isinstance(log, JsonlLog) else f"{log.url} (Redis stream)"
    finally:
        torch.set_num_threads(threads)
    print(_summary(live, made, runs), end="")
    print(f"\nlog:       {where}, run {run_id}")
    print(f"decisions: {path}")
    print(f"replay it: lifecycle-es replay {args.log} --run {run_id}")
    return 0


def decisions_path(log: Log) -> Path:
    """Return where the demo writes a run's decisions.

    `DIR/<run>/lifecycle_decisions.jsonl` next to a JSONL log `DIR/<run>.jsonl` (ChronoMoE's
    `outputs/<run_id>/` layout, so runs never overwrite each other's), else
    `./lifecycle_decisions.jsonl`.
    """
    if isinstance(log, JsonlLog):
        return log.path.parent / log.run_id / DECISIONS_FILE
    return Path(DECISIONS_FILE)


def _open_new(url: str, run_id: str) -> Log:
    """Open the log of a new run; a run id that already has records is refused."""
    log = bus.open(url, run_id)
    if log.last_seq():
        log.close()
        raise ConfigError(f"run {run_id!r} already has a log at {url}; choose another --run")
    return log


def _train(options: DemoOptions, log: Log | None, label: str, quiet: bool) -> tuple[DemoRun, Outcome]:
    from replay.demo import DemoRun
    from replay.demo._report import Outcome, ProgressBar

    demo = DemoRun(options, log)
    started = time.monotonic()
    demo.run(None if quiet else ProgressBar(sys.stderr, label=label))
    seconds = time.monotonic() - started
    return demo, Outcome(label, demo.timeline.phase_losses, demo.mean_loss, seconds)


def _summary(live: DemoRun, made: list[tuple[int, str]], runs: list[Outcome]) -> str:
    from replay.demo._report import sample, summary

    task = live.task
    rows = sample(live.timeline.experts, made, lambda step: task.phases[task.phase_index(step)].name)
    return summary(samples=rows, decisions=Counter(a for _, a in made), runs=runs)

"""`--resume RUN` for the training commands: record a run's arguments, and read them back.

A command records `metadata(args, names, ...)` in its run's `RunStarted`; `--resume RUN` then
calls `apply_recorded(args, names)`, which opens the run's log, checks that the run was started
by the same command, and sets each recorded argument on `args`, so the run continues exactly as
it began whatever else the resuming command line says. Nothing here knows one demo from another.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bus
from lifecycle_es.errors import CheckpointError, ConfigError

__all__ = [
    "MissingCheckpointError",
    "add_resume_argument",
    "apply_recorded",
    "gather_found",
    "metadata",
    "require_checkpoints",
    "take_recorded",
]


def add_resume_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--resume RUN` to a training command."""
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue run RUN of --log from its newest intact checkpoint, with the arguments it "
        "recorded when it started (the other training options are ignored)",
    )


def metadata(
    args: argparse.Namespace, names: Sequence[str], *, command: str, checkpoint_dir: Path, seed: int
) -> dict[str, Any]:
    """What `RunStarted.metadata` records: `names` of `args`, the command line and the versions."""
    from projections.training import run_metadata  # torch: imported only once a run starts

    return run_metadata(
        command=sys.argv,
        arguments={name: getattr(args, name) for name in names},
        checkpoint_dir=os.fspath(checkpoint_dir),
        seed=seed,
        demo=command,
    )


def apply_recorded(args: argparse.Namespace, names: Sequence[str], *, command: str) -> None:
    """Set `names` on `args` from what run `args.resume` of `args.log` recorded when it started."""
    from projections.training import recorded_metadata

    with bus.open(args.log, args.resume, create=False) as log:
        recorded = recorded_metadata(log)
    if recorded.get("demo") != command:
        raise ConfigError(
            f"run {args.resume!r} was started by demo {recorded.get('demo')!r}, not {command!r}; "
            f"resume it with that demo"
        )
    arguments = recorded.get("arguments")
    missing = [n for n in names if not isinstance(arguments, dict) or n not in arguments]
    if missing:
        raise ConfigError(f"run {args.resume!r} did not record the arguments {missing} it needs to resume")
    assert isinstance(arguments, dict)
    for name in names:
        setattr(args, name, arguments[name])


def take_recorded(args: argparse.Namespace, names: Sequence[str], *, command: str) -> None:
    """For a `--resume RUN`: refuse `--run` and `--baseline`, take the recorded `names` and the run id."""
    if args.resume is None:
        return
    if args.run is not None or args.baseline:
        raise ConfigError("--resume RUN names the run: leave out --run and --baseline")
    apply_recorded(args, names, command=command)
    args.run = args.resume


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A rank of a multi-rank resume has no checkpoint of its own to resume from."""


def require_checkpoints(found: Sequence[bool], *, run: str, where: Path) -> None:
    """Refuse a resume of `run` unless every rank (`found[rank]`) has its checkpoint in `where`.

    Called before any rank trains, so a missing checkpoint ends every rank at once instead of
    leaving the others waiting in a collective until the process group's timeout."""
    missing = [rank for rank, ok in enumerate(found) if not ok]
    if missing:
        raise MissingCheckpointError(
            f"cannot resume run {run!r}: rank {missing[0]} has no checkpoint in {where} "
            f"({len(missing)} of {len(found)} ranks have none)"
        )


def gather_found(found: bool, world: int) -> list[bool]:
    """Return every rank's `found`, by a gloo all-gather of one byte each (no pickle)."""
    import torch
    import torch.distributed as dist

    every = [torch.zeros(1, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(every, torch.tensor([int(found)], dtype=torch.uint8))
    return [bool(t.item()) for t in every]

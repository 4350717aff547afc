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
from lifecycle_es.errors import ConfigError

__all__ = ["add_resume_argument", "apply_recorded", "metadata", "take_recorded"]


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

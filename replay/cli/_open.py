"""Opening a run's log for the read-only commands: never created, `--lenient` only on JSONL."""

from __future__ import annotations

import argparse
from pathlib import Path

import bus
from bus import Log
from lifecycle_es.errors import ConfigError, UsageError
from replay.cli._checked import CheckedLog

__all__ = ["add_lenient_argument", "add_log_arguments", "open_run", "settle_run"]


def open_run(url: str, run_id: str, *, lenient: bool) -> Log:
    """Open the existing log of `run_id`; `lenient` skips unreadable lines of a JSONL log.

    `url` is a log URL or a bare directory (`bus.log_url` reads it). Every record read is
    shape-checked (`CheckedLog`): a misshapen one is a `SchemaError`, or skipped when lenient.
    """
    if not lenient:
        return CheckedLog(bus.open(url, run_id, create=False), lenient=False)
    url = bus.log_url(url)
    if not url.lower().startswith("jsonl://"):
        # Only the JSONL backend has lines to skip; the others would fail on the option.
        raise ConfigError("--lenient applies only to jsonl:// logs")
    return CheckedLog(bus.open(url, run_id, create=False, lenient=True), lenient=True)


def add_log_arguments(parser: argparse.ArgumentParser, *, run_help: str = "the run id") -> None:
    """Add what every reading command starts with: the LOG positional and `--run`.

    `settle_run` (which the entry point calls before the command) reads a LOG given as a
    run's own file, `DIR/RUN.jsonl`, as the directory and the run, so `--run` may be left out.
    """
    parser.add_argument(
        "log_url",
        metavar="LOG",
        help="a directory, jsonl://DIR, a redis:// URL or a run's file DIR/RUN.jsonl",
    )
    parser.add_argument("--run", help=f"{run_help} (needed unless LOG is a run's RUN.jsonl file)")
    parser.set_defaults(settle_run=True)


def settle_run(args: argparse.Namespace) -> None:
    """Turn a LOG given as `DIR/RUN.jsonl` into LOG=DIR and `--run RUN`; require `--run` otherwise.

    A user holding one run's file passes it as it is; a `--run` naming another run than the
    file's is refused rather than silently read from the file's directory.
    """
    location, run_id = args.log_url, args.run
    path = Path(location) if isinstance(location, str) and "://" not in location else None
    if path is not None and path.suffix == ".jsonl" and path.is_file():
        if run_id is not None and run_id != path.stem:
            raise UsageError(f"LOG is the file of run {path.stem!r} but --run names {run_id!r}")
        args.log_url, args.run = str(path.parent), path.stem
    elif path is not None and path.suffix == ".jsonl" and not path.exists():
        raise UsageError(f"no log file at {location}")
    elif run_id is None:
        raise UsageError("--run RUN is needed unless LOG is a run's file DIR/RUN.jsonl")


def add_lenient_argument(
    parser: argparse.ArgumentParser, *, help_text: str = "skip unreadable JSONL lines and report how many"
) -> None:
    """Add `--lenient`, which `open_run` passes on to a JSONL log."""
    parser.add_argument("--lenient", action="store_true", help=help_text)

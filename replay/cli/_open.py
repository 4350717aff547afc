"""Opening a run's log for the read-only commands: never created, `--lenient` only on JSONL."""

from __future__ import annotations

import argparse

import bus
from bus import Log
from lifecycle_es.errors import ConfigError
from replay.cli._checked import CheckedLog

__all__ = ["add_lenient_argument", "add_log_arguments", "open_run"]


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
    """Add what every reading command starts with: the LOG positional and `--run`."""
    parser.add_argument("log_url", metavar="LOG", help="a directory, jsonl://DIR or a redis:// URL")
    parser.add_argument("--run", required=True, help=run_help)


def add_lenient_argument(
    parser: argparse.ArgumentParser, *, help_text: str = "skip unreadable JSONL lines and report how many"
) -> None:
    """Add `--lenient`, which `open_run` passes on to a JSONL log."""
    parser.add_argument("--lenient", action="store_true", help=help_text)

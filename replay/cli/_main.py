"""The `lifecycle-es` parser and entry point: each subcommand is a module of this package."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

import bus
from bus.errors import BusError, InvalidArgumentError, InvalidRunIdError, InvalidUrlError, UnknownRunError
from lifecycle_es.errors import CheckpointError, ConfigError, LifecycleError, UsageError
from replay.cli import agents as agents_command
from replay.cli import demo, export_decisions, metrics, replay, report, spec, tables, tail, verify, what_if
from replay.cli import demo_seeds as seeds_command
from replay.cli import runs as runs_command
from replay.cli._colour import COLOUR_CHOICES, colour_for
from replay.cli._launch import worker_from_env
from replay.cli._logging import LOG_FORMATS, LOG_LEVELS, logging_to_stderr
from replay.cli._open import settle_run

__all__ = ["build_parser", "main"]

_log = logging.getLogger("replay.cli")

_COMMANDS: tuple[tuple[str, str, ModuleType], ...] = (
    ("demo", "train a small MoE whose experts the lifecycle spawns, prunes, splits and merges", demo),
    ("spec", "list the built-in lifecycle specs, or show one as a table, JSON or Mermaid", spec),
    ("tail", "print a run's events from a point, filtered, and follow it live", tail),
    ("replay", "rebuild a run's registry as of a seq, a step or a wall time", replay),
    (
        "tables",
        "print a run's analysis table (time in state, gate pass rates, ...) as text, JSON or CSV",
        tables,
    ),
    ("what-if", "re-run a run's controllers with changed settings and diff their decisions", what_if),
    ("verify", "compare a Redis log with its JSONL mirror, and optionally repair the mirror", verify),
    ("metrics", "print, serve over HTTP or write to a file a run's metrics for Prometheus", metrics),
    ("report", "write a run's self-contained HTML page of plots and decisions", report),
    (
        "export-decisions",
        "write a run's decisions as ChronoMoE lifecycle_decisions.jsonl lines",
        export_decisions,
    ),
    ("agents", "print an agent service's agents with their states and the lifecycle metrics", agents_command),
    (
        "runs",
        "list a log's runs with their state (running, interrupted, ...), last step and checkpoint",
        runs_command,
    ),
    (
        seeds_command.COMMAND,
        "`demo seeds`: train a small host network whose seeds a controller grows, grafts and culls",
        seeds_command,
    ),
)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
"""A URL inside a usage message (argparse quotes values with ' or ")."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse echoes the offending arguments, and one of them may be a log URL with a password.
        sys.stderr.write(f"lifecycle-es: {_URL.sub(lambda m: bus.redact_url(m[0]), message)}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every subcommand."""
    parser = _Parser(
        prog="lifecycle-es",
        description="Event-sourced lifecycle orchestration for dynamic ML training.",
        # The top level reads every argument, the subcommand's too: with abbreviations on, the
        # demo's `--log URL` would be an ambiguous prefix of --log-level and --log-format here.
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"lifecycle-es {_version()}")
    _add_global_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text, module in _COMMANDS:
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_parser(subparser)
        _add_global_options(subparser, top=False)
    return parser


def _version() -> str:
    """The installed distribution's version (pyproject.toml's, once `pip install` ran)."""
    try:
        return importlib.metadata.version("lifecycle-es")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"  # run from a source tree that was never installed


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The logging and colour options, taken before the subcommand and after it alike.

    Only the top-level parser has defaults: a subcommand's parser sets the attribute only when
    the option is given there, so it never overwrites a value given before the subcommand.
    """
    logs = parser.add_argument_group("logging (before or after the command)")
    logs.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning" if top else argparse.SUPPRESS,
        help="log lines of the package from this level on, on stderr (default warning)",
    )
    logs.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="console" if top else argparse.SUPPRESS,
        help="log lines as console text (coloured as --color says) or one JSON object each (default console)",
    )
    parser.add_argument(
        "--color",
        choices=COLOUR_CHOICES,
        default="auto" if top else argparse.SUPPRESS,
        help="colour tail's pretty lines and the console log lines: auto (default: on a terminal, "
        "unless NO_COLOR is set and not empty), always or never",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    A rank of a multi-rank demo (torchrun's RANK and WORLD_SIZE set) does not return: once its
    output is flushed it ends at once with the status. Once DDP has wrapped a model, gloo's
    threads outlive `destroy_process_group` (pytorch/pytorch#130345), and a gloo thread still
    running while the interpreter finalizes aborts the process (SIGABRT, exit status 134;
    pytorch/pytorch#179291). The run's log is closed and its checkpoints written by then.
    """
    args = build_parser().parse_args(seeds_command.route(sys.argv[1:] if argv is None else argv))
    colour = colour_for(args.color, sys.stderr, os.environ)
    with logging_to_stderr(args.log_level, args.log_format, colour=colour):
        _log.debug("running %s", args.command)
        status = _run(args)
        _log.debug("%s exited with status %d", args.command, status)
    if args.command in ("demo", seeds_command.COMMAND) and worker_from_env(os.environ) is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _run(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if getattr(args, "settle_run", False):
            settle_run(args)
        status = handler(args)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's last flush
        return status
    except (
        CheckpointError,
        ConfigError,
        InvalidArgumentError,
        InvalidRunIdError,
        InvalidUrlError,
        UnknownRunError,
        UsageError,
    ) as e:
        sys.stderr.write(f"lifecycle-es {args.command}: {e}\n")
        return 2  # bad input (an unusable checkpoint among it), as for a usage error
    except (LifecycleError, BusError) as e:
        sys.stderr.write(f"lifecycle-es {args.command}: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, jq) went away; that is how a pipeline ends, not an error. What is
        # left in stdout's buffer goes to /dev/null, so the interpreter's last flush cannot fail
        # (the recipe of Python's signal module docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0

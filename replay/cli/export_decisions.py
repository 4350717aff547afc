"""`lifecycle-es export-decisions LOG --run RUN [-o lifecycle_decisions.jsonl | -]`."""

from __future__ import annotations

import argparse
import sys

from lifecycle_es.errors import ConfigError
from replay.cli._open import add_lenient_argument, add_log_arguments, open_run
from replay.export import decision_lines, dumps, write_decisions

__all__ = ["add_parser", "run"]

DEFAULT_OUTPUT = "lifecycle_decisions.jsonl"


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the export options to `parser`."""
    add_log_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        metavar="PATH",
        help=f"the file to write (default {DEFAULT_OUTPUT}); - for stdout",
    )
    add_lenient_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write one seeds/002 line per lifecycle decision of the run, to a file or stdout."""
    with open_run(args.log_url, args.run, lenient=args.lenient) as log:
        if args.output == "-":
            for line in decision_lines(log):
                print(dumps(line), flush=True)
        else:
            try:
                count = write_decisions(log, args.output)
            except OSError as e:
                raise ConfigError(f"cannot write {args.output}: {e.strerror or e}") from e
            print(f"{count} decisions of run {args.run} written to {args.output}")
        skipped = getattr(log, "skipped", 0)
    if skipped:
        sys.stderr.write(f"lifecycle-es export-decisions: skipped {skipped} unreadable lines\n")
    return 0

"""`lifecycle-es report LOG --run RUN [-o report.html]`: one self-contained HTML page of a run.

The page (see `replay.report`) needs matplotlib, the `report` extra; without it the command
says `pip install 'lifecycle-es[report]'` in one line and exits 1.
"""

from __future__ import annotations

import argparse
import sys

from lifecycle_es.errors import ConfigError
from replay.cli._open import add_lenient_argument, add_log_arguments, open_run
from replay.report import write_report

__all__ = ["DEFAULT_OUTPUT", "add_parser", "run"]

DEFAULT_OUTPUT = "report.html"


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the report options to `parser`."""
    add_log_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        metavar="PATH",
        help=f"the HTML file to write (default {DEFAULT_OUTPUT})",
    )
    add_lenient_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the run's report and say where it went."""
    with open_run(args.log_url, args.run, lenient=args.lenient) as log:
        try:
            summary = write_report(log, args.output)
        except OSError as e:
            raise ConfigError(f"cannot write {args.output}: {e.strerror or e}") from e
        skipped = getattr(log, "skipped", 0)
    print(
        f"report of run {summary.run_id} written to {summary.path} ({summary.bytes:,} bytes; "
        f"{len(summary.plots)} plots, {summary.decisions} decisions, {summary.steps} steps)"
    )
    if skipped:
        sys.stderr.write(f"lifecycle-es report: skipped {skipped} unreadable lines\n")
    return 0

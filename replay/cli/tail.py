"""`lifecycle-es tail LOG_URL --run RUN [--from ...] [--follow] [filters] [--format] [--count N]`."""

from __future__ import annotations

import argparse
import sys

from lifecycle_es.errors import ConfigError
from replay._tail import Filter, Printer, parse_kinds, records_from, start_after, take
from replay.cli._open import open_run

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the tail options to `parser`."""
    parser.add_argument("log_url", metavar="LOG_URL", help="jsonl://DIR or a redis:// URL")
    parser.add_argument("--run", required=True, help="the run id")
    parser.add_argument(
        "--from",
        dest="start",
        default="beginning",
        metavar="WHERE",
        help="beginning (default), end, seq:N, step:N or time:ISO8601",
    )
    parser.add_argument("--follow", action="store_true", help="keep printing records as they arrive")
    parser.add_argument("--kind", help="comma-separated event kinds to show")
    parser.add_argument("--entity", metavar="GLOB", help="show records whose entity matches")
    parser.add_argument("--layer", type=int, metavar="N")
    parser.add_argument("--rank", type=int, metavar="N")
    parser.add_argument("--format", choices=("pretty", "json"), default="pretty")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N records")
    parser.add_argument("--lenient", action="store_true", help="skip unreadable JSONL lines")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the run's records from the chosen start, filtered; follow if asked."""
    if args.count is not None and args.count < 0:
        raise ConfigError(f"--count must be >= 0, got {args.count}")
    flt = Filter(kinds=parse_kinds(args.kind), entity=args.entity, layer=args.layer, rank=args.rank)
    printer = Printer(sys.stdout, fmt=args.format, colour=args.format == "pretty" and sys.stdout.isatty())
    with open_run(args.log_url, args.run, lenient=args.lenient) as log:
        after = start_after(log, args.start)
        try:
            for record in take(records_from(log, after, follow=args.follow), flt, args.count):
                printer.write(record)
        except KeyboardInterrupt:
            return 0  # Ctrl-C is how a follow ends
    return 0

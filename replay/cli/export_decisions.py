"""`lifecycle-es export-decisions LOG --run RUN [--dataset] [-o PATH | -]`.

Without `--dataset`: ChronoMoE `lifecycle_decisions.jsonl` lines. With it: the seed controllers'
decisions as (observation, action, probabilities, reward, next observation) rows, to train a
policy offline.
"""

from __future__ import annotations

import argparse
import sys

from lifecycle_es.errors import ConfigError
from replay.cli._open import add_lenient_argument, add_log_arguments, open_run
from replay.export import dataset_rows, decision_lines, dumps, write_dataset, write_decisions

__all__ = ["add_parser", "run"]

DEFAULT_OUTPUT = "lifecycle_decisions.jsonl"
DEFAULT_DATASET = "seed_dataset.jsonl"


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the export options to `parser`."""
    add_log_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="PATH",
        help=f"the file to write (default {DEFAULT_OUTPUT}, or {DEFAULT_DATASET} with --dataset); "
        "- for stdout",
    )
    parser.add_argument(
        "--dataset",
        action="store_true",
        help="write the seed controllers' decisions as (observation, action, probabilities, reward, "
        "next observation) rows instead, to train a policy offline",
    )
    add_lenient_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write one seeds/002 line per lifecycle decision (or one dataset row per seed decision)."""
    output = args.output or (DEFAULT_DATASET if args.dataset else DEFAULT_OUTPUT)
    what = "dataset rows" if args.dataset else "decisions"
    with open_run(args.log_url, args.run, lenient=args.lenient) as log:
        if output == "-":
            for line in dataset_rows(log) if args.dataset else decision_lines(log):
                print(dumps(line), flush=True)
        else:
            try:
                count = (write_dataset if args.dataset else write_decisions)(log, output)
            except OSError as e:
                raise ConfigError(f"cannot write {output}: {e.strerror or e}") from e
            print(f"{count} {what} of run {args.run} written to {output}")
        skipped = getattr(log, "skipped", 0)
    if skipped:
        sys.stderr.write(f"lifecycle-es export-decisions: skipped {skipped} unreadable lines\n")
    return 0

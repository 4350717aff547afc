"""`lifecycle-es tables LOG --run RUN --table NAME [--format table|json|csv]`: one analysis table
of a run (`replay.analysis`), for a terminal, a JSON reader or a spreadsheet.

| `--table` | one row per | columns after `run_id` |
|---|---|---|
| `time-in-state` | spec and state | spec, state, steps |
| `gate-pass-rates` | gate | gate, checked, passed, failed, rate |
| `populations` | step that changed anything, spec, layer and state | step, spec, layer, state, count |
| `decisions` | decision | seq, step, action, entity, layer, parent, children, reason, apply_at_step, seed |

JSON is one array of row objects; CSV has a header line; both start every row with `run_id`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bus import Log
from replay import analysis
from replay._replay import replay
from replay.cli._open import add_lenient_argument, add_log_arguments, open_run
from replay.cli._rows import ROW_FORMATS, with_run_id, write_rows

__all__ = ["TABLES", "add_parser", "run"]

Rows = list[dict[str, Any]]

TABLES: dict[str, tuple[tuple[str, ...], Callable[[Log], Rows]]] = {
    "time-in-state": (
        ("spec", "state", "steps"),
        lambda log: analysis.time_in_state(replay(log, tensors=False)),
    ),
    "gate-pass-rates": (
        ("gate", "checked", "passed", "failed", "rate"),
        lambda log: analysis.gate_pass_rates(replay(log, tensors=False)),
    ),
    "populations": (("step", "spec", "layer", "state", "count"), analysis.population_over_steps),
    "decisions": (
        ("seq", "step", "action", "entity", "layer", "parent", "children", "reason", "apply_at_step", "seed"),
        analysis.decisions,
    ),
}
"""Each table's name, its columns (after run_id) and how it is computed from the run's log."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the tables options to `parser`."""
    add_log_arguments(parser)
    parser.add_argument("--table", required=True, choices=tuple(TABLES), help="which table")
    parser.add_argument(
        "--format",
        choices=ROW_FORMATS,
        default="table",
        help="aligned text (default), a JSON array of rows, or CSV; JSON and CSV rows start with run_id",
    )
    add_lenient_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the chosen table of the run."""
    columns, compute = TABLES[args.table]
    with open_run(args.log_url, args.run, lenient=args.lenient) as log:
        rows = compute(log)
        skipped = getattr(log, "skipped", 0)
    if skipped:
        sys.stderr.write(f"lifecycle-es tables: skipped {skipped} unreadable lines\n")
    if args.format == "table":
        print(f"{args.table} of run {args.run}: {len(rows)} rows\n")
        write_rows(sys.stdout, rows, columns, "table")
    else:
        write_rows(sys.stdout, with_run_id(args.run, rows), _with_run_id(columns), args.format)
    return 0


def _with_run_id(columns: Sequence[str]) -> list[str]:
    return ["run_id", *columns]

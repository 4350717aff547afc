"""`lifecycle-es agents LOG --run RUN [--format table|json]`: the agents of an agent service's
run (seeds/004) with their state and DevCycle's predicates, then the lifecycle metrics.

The run's log is folded with the agent service's specs (the built-in ones and `task`), exactly
as a service process folds it, so the table is what `get_all_agent_statuses` answers there.
JSON is one object: `run_id`, `agents` (one status object each) and `metrics`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lifecycle_es.agents import AgentLifecycleService
from replay.cli._open import add_log_arguments, open_run
from replay.cli._rows import text_table

__all__ = ["COLUMNS", "add_parser", "run"]

COLUMNS = (
    "agent_id",
    "current_state",
    "is_operational",
    "is_available_for_tasks",
    "is_in_error_state",
    "is_in_maintenance",
    "transitions",
    "rejections",
    "triggered_by",
    "reason",
)
"""The status table's columns; the last two are those of the agent's last applied move."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the agents options to `parser`."""
    add_log_arguments(parser)
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="aligned text (default) or one JSON object",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the run's agent statuses and lifecycle metrics."""
    with open_run(args.log_url, args.run, lenient=False) as log:
        service = AgentLifecycleService(log, run_id=args.run)
        statuses = list(service.sync.get_all_agent_statuses().values())
        metrics = service.sync.get_lifecycle_metrics()
    if args.format == "json":
        print(json.dumps({"run_id": args.run, "agents": statuses, "metrics": metrics}))
        return 0
    print(f"agents of run {args.run}: {len(statuses)}\n")
    sys.stdout.write(text_table(COLUMNS, [_cells(s) for s in statuses]))
    print()
    for name, value in metrics.items():
        shown = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else value
        print(f"{name}: {shown}")
    return 0


def _cells(status: dict[str, Any]) -> list[str]:
    last = status["last_transition"] or {}
    row = {**status, "triggered_by": last.get("triggered_by"), "reason": last.get("reason")}
    return [_cell(row[c]) for c in COLUMNS]


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)

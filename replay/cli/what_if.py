"""`lifecycle-es what-if LOG --run RUN --set NAME=VALUE ... [--until-step N] [--format table|json]`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import JsonValue

from lifecycle_es.errors import ConfigError
from lifecycle_es.events import DecisionMade
from replay.cli._open import add_lenient_argument, add_log_arguments, open_run
from replay.cli._rows import text_table
from replay.whatif import DecisionChange, WhatIf, what_if

__all__ = ["add_parser", "parse_setting", "run", "what_if_json"]

_SPELLINGS: dict[str, JsonValue] = {"None": None, "True": True, "False": False}
"""Python's spellings of the JSON constants, accepted beside null, true and false."""
_DECISION_FIELDS = (
    "seq",
    "step",
    "action",
    "entity",
    "layer",
    "parent",
    "children",
    "reason",
    "metrics_at_decision",
    "apply_at_step",
    "seed",
)


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the what-if options to `parser`."""
    add_log_arguments(parser)
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a controller setting to change, e.g. split_patience=8 (repeat for more); "
        "on a seed run a heuristic threshold (improvement_threshold=0.001) or the hybrid's blend; "
        "VALUE is JSON (null, true, 0.5) or else a string",
    )
    parser.add_argument("--until-step", type=int, metavar="N", help="compare through step N")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_lenient_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the decisions the changed settings add, remove and change."""
    changes: dict[str, JsonValue] = {}
    for text in args.settings:
        name, value = parse_setting(text)
        if name in changes:
            raise ConfigError(f"--set {name} is given twice")
        changes[name] = value
    with open_run(args.log_url, args.run, lenient=args.lenient) as log:
        result = what_if(log, changes, until_step=args.until_step)
        skipped = getattr(log, "skipped", 0)
    if skipped:
        sys.stderr.write(f"lifecycle-es what-if: skipped {skipped} unreadable lines\n")
    if args.format == "json":
        print(json.dumps(what_if_json(result)))
    else:
        print(_table(result), end="")
    return 0


def parse_setting(text: str) -> tuple[str, JsonValue]:
    """Split `NAME=VALUE`; VALUE is read as JSON (or None/True/False), else kept as a string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"--set takes NAME=VALUE, got {text!r}")
    if raw in _SPELLINGS:
        return name, _SPELLINGS[raw]
    try:
        value: JsonValue = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def what_if_json(result: WhatIf) -> dict[str, Any]:
    """The documented JSON form of a what-if: the settings, the counts and every differing decision."""
    return {
        "run_id": result.run_id,
        "until_step": result.until_step,
        "settings": [
            {"controller": s.controller, "name": s.name, "recorded": s.recorded, "what_if": s.what_if}
            for s in result.settings
        ],
        "evaluations": result.evaluations,
        "recorded": len(result.recorded),
        "what_if": len(result.counterfactual),
        "same": _same(result),
        "difference": not result.same,
        "first_parting_step": result.first_parting_step,
        "skipped": result.skipped,
        "rows": [_row_json(row) for row in result.rows],
    }


def _row_json(row: DecisionChange) -> dict[str, Any]:
    return {
        "step": row.step,
        "change": row.change,
        "action": row.action.value,
        "layer": row.layer,
        "entity": row.entity,
        "children": list(row.children),
        "changed": list(row.changed),
        "on_recorded_signals": row.on_recorded_signals,
        "unobserved": list(row.unobserved),
        "stand_ins": list(row.stand_ins),
        "recorded": _decision_json(row.recorded),
        "what_if": _decision_json(row.what_if),
    }


def _decision_json(d: DecisionMade | None) -> dict[str, Any] | None:
    return None if d is None else d.model_dump(mode="json", include=set(_DECISION_FIELDS))


def _same(result: WhatIf) -> int:
    differing = sum(row.change != "added" for row in result.rows)
    return len(result.recorded) - differing


# -- the table ---------------------------------------------------------------------------------


def _table(result: WhatIf) -> str:
    bound = "its end" if result.until_step is None else f"step {result.until_step}"
    changed = "; ".join(f"{s.name} {_value(s.recorded)} -> {_value(s.what_if)}" for s in result.settings)
    lines = [f"what-if on run {result.run_id} through {bound}: {changed or 'no setting changed'}"]
    if result.skipped:
        lines.append(f"{result.skipped} recorded events no longer fit the what-if and were left out")
    if result.same:
        count = len(result.recorded)
        lines.append(
            f"no difference: the what-if reproduces the {count} recorded decision{'s' * (count != 1)} "
            f"over {result.evaluations} evaluations"
        )
        return "\n".join(lines) + "\n"
    counts = {c: sum(row.change == c for row in result.rows) for c in ("changed", "removed", "added")}
    lines += [
        f"{result.evaluations} evaluations decided again; recorded {len(result.recorded)} decisions, "
        f"what-if {len(result.counterfactual)}: {_same(result)} the same, "
        + ", ".join(f"{n} {c}" for c, n in counts.items()),
        f"the decisions part at step {result.first_parting_step}; a row with exact 'no' comes "
        "later and rests on signals recorded under the original decisions",
        "",
    ]
    header = ("step", "change", "action", "layer", "entity", "parent", "children", "differs", "exact", "note")
    return "\n".join(lines) + "\n" + text_table(header, [_cells(row) for row in result.rows])


def _cells(row: DecisionChange) -> list[str]:
    d = row.what_if or row.recorded
    assert d is not None  # every row holds one decision or two
    parent = d.parent or ""
    if row.recorded is not None and row.what_if is not None and row.recorded.parent != row.what_if.parent:
        parent = f"{row.recorded.parent or '-'} -> {row.what_if.parent or '-'}"
    notes = []
    if row.unobserved:
        notes.append("unobserved: " + ",".join(row.unobserved))
    if row.stand_ins:
        notes.append("another's signals: " + ",".join(row.stand_ins))
    return [
        str(row.step),
        row.change,
        row.action.value,
        "" if row.layer is None else str(row.layer),
        row.entity or "",
        parent,
        ",".join(row.children),
        ",".join(name.replace("metrics_at_decision.", "metrics.") for name in row.changed),
        "no" if row.on_recorded_signals else "yes",
        "; ".join(notes),
    ]


def _value(value: JsonValue) -> str:
    return json.dumps(value)

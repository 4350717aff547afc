"""The ChronoMoE `lifecycle_decisions.jsonl` export: one line per lifecycle decision of a run.

The line format is seeds/002's `LifecycleDecision` (reference/seed-projects.md section 2.7):
`step, run_id, action, layer_id, expert_id, parent_id, reason, metrics_at_decision,
config_snapshot`, in that order, then two keys of ours: `seq`, the decision's place on the log
(`tail --from seq:N`, the report's `#seq-N`), and `apply_at_step`, the step boundary its
change takes effect at. A reader of seeds/002 lines ignores keys it does not know, and the
two let a line be found on the log again. A `DecisionMade` names its entity, parent and children; the
export reads them per action:

| action | expert_id | parent_id |
|---|---|---|
| SPAWN | the new expert (first child, else the entity) | the expert it was cloned from, or null |
| SPLIT | the new expert (first child, else the entity) | the expert split (parent, else the entity) |
| PRUNE | the expert pruned (the entity) | the decision's parent, normally null |
| MERGE | the survivor, which keeps its id (the entity) | the expert absorbed into it (first child) |
| other | the entity | the decision's parent |

`step` is the step the decision was made at; `apply_at_step` the step it is applied at. A
decision with several children gives one line named after the first; the expert coordinator
makes one child per decision.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bus import Log

__all__ = ["FIELDS", "decision_line", "decision_lines", "dumps", "write_decisions"]

FIELDS = (
    "step",
    "run_id",
    "action",
    "layer_id",
    "expert_id",
    "parent_id",
    "reason",
    "metrics_at_decision",
    "config_snapshot",
    "seq",
    "apply_at_step",
)
"""The keys of every exported line, in order: seeds/002's nine, then the log's seq and apply_at_step."""

_CREATES = frozenset({"SPAWN", "SPLIT"})


def decision_line(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return the seeds/002 line of one `DecisionMade` record."""
    action = str(record["action"])
    entity = record.get("entity")
    children = list(record.get("children") or [])
    parent = record.get("parent")
    if action in _CREATES:
        expert = children[0] if children else entity
        if action == "SPLIT" and parent is None and entity != expert:
            parent = entity  # a split named by its parent entity and its child
    elif action == "MERGE":
        expert = entity
        parent = children[0] if children else parent
    else:
        expert = entity
    return {
        "step": record["step"],
        "run_id": record["run_id"],
        "action": action,
        "layer_id": record.get("layer"),
        "expert_id": expert,
        "parent_id": parent,
        "reason": record.get("reason", ""),
        "metrics_at_decision": dict(record.get("metrics_at_decision") or {}),
        "config_snapshot": dict(record.get("config_snapshot") or {}),
        "seq": record.get("seq"),
        "apply_at_step": record.get("apply_at_step"),
    }


def decision_lines(log: Log) -> Iterator[dict[str, Any]]:
    """Yield the seeds/002 line of every `DecisionMade` of the run, in log order."""
    for batch in log.pages():
        for record in batch:
            if record.get("kind") == "DecisionMade":
                yield decision_line(record)


def dumps(line: Mapping[str, Any]) -> str:
    """Return one exported line as compact JSON (no NaN or infinity, which JSON lacks)."""
    return json.dumps(line, separators=(",", ":"), allow_nan=False)


def write_decisions(log: Log, path: str | os.PathLike[str]) -> int:
    """Write the run's decisions to `path` as JSON lines, replacing it atomically; return how many."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as out:
            for line in decision_lines(log):
                out.write(dumps(line) + "\n")
                count += 1
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count

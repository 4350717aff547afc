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

The seed controllers' decisions also export as a dataset to train a policy offline
(`dataset_rows`, `write_dataset`): one row per decision of a `SeedDriver`, with the keys of
`DATASET_FIELDS`. `observation` and `next_observation` are lists in `OBSERVATION_KEYS` order
(`next_observation` is the same entity's next decision's, null after its last), `action` the
seed action and `action_index` its place in `SEED_ACTIONS`, `probabilities` the policy's (null
for the heuristic), `reward` the decision's `RewardRecorded` (null if none was recorded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bus import Log
from lifecycle_es import SchemaError
from lifecycle_es.controllers import OBSERVATION_KEYS, SEED_ACTIONS, SEED_DECISION_KEY, SeedAction

__all__ = [
    "DATASET_FIELDS",
    "FIELDS",
    "dataset_rows",
    "decision_line",
    "decision_lines",
    "dumps",
    "write_dataset",
    "write_decisions",
]

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


DATASET_FIELDS = (
    "seq",
    "step",
    "run_id",
    "entity",
    "controller",
    "observation",
    "action",
    "action_index",
    "probabilities",
    "reward",
    "next_observation",
    "done",
)
"""The keys of every dataset row, in order."""


def _observation(record: Mapping[str, Any]) -> list[float]:
    seen = record["metrics_at_decision"].get("observation") or {}
    return [float(seen.get(key, 0.0)) for key in OBSERVATION_KEYS]


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    seen = record["metrics_at_decision"]
    try:
        action = SeedAction(seen[SEED_DECISION_KEY])
    except ValueError:
        raise SchemaError(
            f"record seq {record.get('seq')}: {SEED_DECISION_KEY} "
            f"{seen[SEED_DECISION_KEY]!r} is no seed action"
        ) from None
    return {
        "seq": record.get("seq"),
        "step": record["step"],
        "run_id": record["run_id"],
        "entity": record.get("entity"),
        "controller": seen.get("controller"),
        "observation": _observation(record),
        "action": action.value,
        "action_index": SEED_ACTIONS.index(action),
        "probabilities": seen.get("probabilities"),
        "reward": None,
        "next_observation": None,
        "done": True,
    }


def dataset_rows(log: Log) -> list[dict[str, Any]]:
    """Return the (observation, action, probabilities, reward, next observation) row of every
    seed controller decision of the run, in log order."""
    rows: list[dict[str, Any]] = []
    by_decision: dict[str, dict[str, Any]] = {}
    last_of: dict[str, dict[str, Any]] = {}
    for batch in log.pages():
        for record in batch:
            kind = record.get("kind")
            if kind == "DecisionMade" and SEED_DECISION_KEY in (record.get("metrics_at_decision") or {}):
                row = _row(record)
                previous = last_of.get(row["entity"])
                if previous is not None:
                    previous["next_observation"], previous["done"] = row["observation"], False
                rows.append(row)
                by_decision[record["event_id"]] = last_of[row["entity"]] = row
            elif kind == "RewardRecorded" and record.get("causation") in by_decision:
                by_decision[record["causation"]]["reward"] = record["reward"]
    return rows


def write_dataset(log: Log, path: str | os.PathLike[str]) -> int:
    """Write the run's seed decision dataset to `path` as JSON lines, atomically; return how many."""
    return _write_lines(path, dataset_rows(log))


def write_decisions(log: Log, path: str | os.PathLike[str]) -> int:
    """Write the run's decisions to `path` as JSON lines, replacing it atomically; return how many."""
    return _write_lines(path, decision_lines(log))


def _write_lines(path: str | os.PathLike[str], lines: Iterable[Mapping[str, Any]]) -> int:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as out:
            for line in lines:
                out.write(dumps(line) + "\n")
                count += 1
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count

"""Analysis of a run as plain tables (lists of row dicts), ready for a report or a DataFrame."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus import Log
from lifecycle_es.codec import CODEC
from lifecycle_es.registry import Registry, fold_record
from lifecycle_es.spec import Spec
from lifecycle_es.specs import BUILTIN_SPECS
from replay._replay import Replay

__all__ = [
    "decisions",
    "gate_pass_rates",
    "population_over_steps",
    "run_metrics",
    "state_intervals",
    "time_in_state",
]

Row = dict[str, Any]


def time_in_state(result: Replay) -> list[Row]:
    """Steps spent in each state, per spec and state, as of the replay's end."""
    return result.metrics.time_in_state_rows()


def gate_pass_rates(result: Replay) -> list[Row]:
    """Checks, passes and pass rate of every gate, as of the replay's end."""
    return result.metrics.gate_rows()


def population_over_steps(log: Log, *, specs: Mapping[str, Spec] = BUILTIN_SPECS) -> list[Row]:
    """Entities per (spec, layer, state) at the end of every step that changed anything."""
    registry = Registry(specs)
    rows: list[Row] = []
    last = registry.populations()
    for batch in log.pages():
        for record in batch:
            if record["step"] > registry.step and registry.seq:
                last = _sample(registry, last, rows)
            fold_record(registry, CODEC.check(record))
    if registry.seq:
        _sample(registry, last, rows)
    return rows


def _sample(
    registry: Registry, last: dict[tuple[str, int | None, str], int], rows: list[Row]
) -> dict[tuple[str, int | None, str], int]:
    now = registry.populations()
    if now != last or not rows:
        rows += [
            {"step": registry.step, "spec": spec, "layer": layer, "state": state, "count": n}
            for (spec, layer, state), n in sorted(now.items(), key=_sort_key)
        ]
    return now


def _sort_key(item: tuple[tuple[str, int | None, str], int]) -> tuple[str, int, str]:
    (spec, layer, state), _ = item
    return spec, -1 if layer is None else layer, state


def decisions(log: Log) -> list[Row]:
    """Every lifecycle decision of the run, in log order."""
    fields = (
        "seq",
        "step",
        "action",
        "entity",
        "layer",
        "parent",
        "children",
        "reason",
        "apply_at_step",
        "seed",
    )
    return [
        {k: record.get(k) for k in fields}
        for batch in log.pages()
        for record in batch
        if record.get("kind") == "DecisionMade"
    ]


def state_intervals(log: Log) -> list[Row]:
    """Every stay of every entity in a state, in the order the stays began.

    A row is {"entity", "spec", "layer", "state", "start", "end"}: the steps the entity entered
    and left the state; `end` is None for the state an entity is still in when the log ends.
    """
    rows: list[Row] = []
    current: dict[str, Row] = {}
    for batch in log.pages():
        for record in batch:
            kind, step = record.get("kind"), record["step"]
            if kind == "EntityRegistered":
                entity: str = record["entity"]
                where = {"entity": entity, "spec": record["spec"], "layer": record.get("layer")}
                current[entity] = {**where, "state": record["state"], "start": step, "end": None}
            elif kind == "TransitionApplied" and record["entity"] in current:
                entity = record["entity"]
                current[entity]["end"] = step
                current[entity] = {**current[entity], "state": record["to_state"], "start": step, "end": None}
            else:
                continue
            rows.append(current[entity])
    return rows


def run_metrics(log: Log) -> list[Row]:
    """The run's own metrics (`MetricsObserved` of no entity and no layer), one row per value.

    A row is {"seq", "step", "name", "value"}, in log order; a training loop records its loss
    this way, apart from the entity and layer metrics the controllers read.
    """
    return [
        {"seq": record["seq"], "step": record["step"], "name": name, "value": value}
        for batch in log.pages()
        for record in batch
        if record.get("kind") == "MetricsObserved"
        and record.get("entity") is None
        and record.get("layer") is None
        for name, value in record["metrics"].items()
    ]

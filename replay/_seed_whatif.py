"""What-if for the seed controllers: each recorded seed decision decided again under other settings.

A seed run (`SeedDriver`) records every decision with the controller's settings, the seed's
state and observation, the policy's probabilities and the decision's seed. `seed_what_if`
folds the run's log into a registry and, at each recorded seed decision, asks the heuristic
(another `HeuristicConfig`) or the hybrid (another blend, or other heuristic thresholds) again,
over what the driver saw at that point: the entity as the registry had it, its latest metrics
with the observation's values over them, the decision's seed. The policy is never run: the
hybrid's policy answers with the probabilities the decision recorded, so the blend's draw and
a sampling policy's choice are those of the run.

It is a re-decision over the recorded observations, not a counterfactual run: the moves the new
decisions would make are not applied, so from the first step where the decisions part, the
later ones rest on states and signals the recorded decisions shaped (`on_recorded_signals`).
A decision hysteresis held back is held back again when the new decision is a move (the check
depends on the entity's history and the step, not on the action); a recorded hold that
hysteresis never checked is taken as allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import JsonValue

from bus import Record
from lifecycle_es.codec import CODEC
from lifecycle_es.controllers import (
    SEED_DECISION_KEY,
    HeuristicConfig,
    HeuristicController,
    HybridConfig,
    HybridController,
    PolicyController,
)
from lifecycle_es.controllers._seed_actions import SeedAction, decision_action
from lifecycle_es.controllers._seed_view import OBSERVATION_KEYS, SeedController, SeedDecision, SeedView
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.events import DecisionMade
from lifecycle_es.registry import Registry, fold_record
from lifecycle_es.specs import BUILTIN_SPECS
from replay._decision_diff import Coverage, DecisionChange, diff

__all__ = ["SEED_CONTROLLERS", "SeedDecisions", "SeedRerun", "is_seed_decision", "seed_rerun", "seed_what_if"]

SEED_CONTROLLERS = ("heuristic", "hybrid")
"""The seed controllers what-if re-runs (a policy alone has no settings to change)."""

_HEURISTIC = frozenset(f.name for f in dataclasses.fields(HeuristicConfig))
_HYBRID = frozenset(f.name for f in dataclasses.fields(HybridConfig))


def is_seed_decision(record: Mapping[str, Any]) -> bool:
    """True for a `DecisionMade` record a `SeedDriver` wrote."""
    return record["kind"] == "DecisionMade" and SEED_DECISION_KEY in record["metrics_at_decision"]


@dataclasses.dataclass(frozen=True, slots=True)
class SeedRerun:
    """A seed controller built again under changed settings, with the recorded policy's stand-in."""

    controller: SeedController
    policy: _RecordedPolicy
    settings: dict[str, JsonValue]
    """Every setting in force, flattened (`blend`, `max_regression`, ...)."""
    recorded: dict[str, JsonValue]
    """The recorded settings, flattened the same way."""


class _RecordedPolicy:
    """The hybrid's policy, answering with the probabilities the current decision recorded."""

    def __init__(self) -> None:
        self.probabilities: Sequence[float] = ()

    def __call__(self, vector: Sequence[float]) -> Sequence[float]:
        return self.probabilities


def seed_rerun(snapshot: Mapping[str, JsonValue], changes: Mapping[str, JsonValue]) -> SeedRerun:
    """Build the recorded seed controller (its decisions' `config_snapshot`) with `changes` over it."""
    name, policy = snapshot.get("controller"), _RecordedPolicy()
    if name == "heuristic":
        recorded = {k: v for k, v in snapshot.items() if k in _HEURISTIC}
        _known(changes, _HEURISTIC, "the heuristic")
        config = HeuristicConfig(**dict[str, Any](recorded, **changes))
        return SeedRerun(HeuristicController(config), policy, config.snapshot(), recorded)
    if name != "hybrid":
        raise UsageError(f"what-if re-runs the seed controllers {SEED_CONTROLLERS}, the run used {name!r}")
    rules, learned = snapshot.get("heuristic"), snapshot.get("policy")
    if not isinstance(rules, dict) or not isinstance(learned, dict):
        raise UsageError("the hybrid's recorded settings lack its heuristic's or its policy's")
    _known(changes, _HEURISTIC | _HYBRID, "the hybrid")
    blend = {k: v for k, v in snapshot.items() if k in _HYBRID}
    thresholds = {k: v for k, v in rules.items() if k in _HEURISTIC}
    heuristic = HeuristicConfig(
        **dict[str, Any](thresholds, **{k: v for k, v in changes.items() if k in _HEURISTIC})
    )
    hybrid = HybridConfig(**dict[str, Any](blend, **{k: v for k, v in changes.items() if k in _HYBRID}))
    stand_in = PolicyController(
        policy, name=str(learned.get("controller", "policy")), sample=bool(learned.get("sample"))
    )
    controller = HybridController(HeuristicController(heuristic), stand_in, hybrid)
    settings = {**heuristic.snapshot(), **dataclasses.asdict(hybrid)}
    return SeedRerun(controller, policy, settings, {**thresholds, **blend})


def _known(changes: Mapping[str, JsonValue], names: frozenset[str], owner: str) -> None:
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}: not a setting of {owner}")


@dataclasses.dataclass(frozen=True, slots=True)
class SeedDecisions:
    """A seed what-if's outcome: the rerun, both decision lists and how they differ."""

    rerun: SeedRerun
    recorded: list[DecisionMade]
    again: list[DecisionMade]
    rows: tuple[DecisionChange, ...]
    first_parting_step: int | None


def seed_what_if(records: Iterator[Record], changes: Mapping[str, JsonValue]) -> SeedDecisions:
    """Decide every recorded seed decision of `records` again under `changes`; diff the decisions."""
    registry, rerun = Registry(BUILTIN_SPECS), None
    recorded: list[DecisionMade] = []
    again: list[DecisionMade] = []
    for record in records:
        if is_seed_decision(record):
            made = CODEC.from_record(record)
            assert isinstance(made, DecisionMade)
            rerun = rerun or seed_rerun(made.config_snapshot, changes)
            recorded.append(made)
            again.append(_decide_again(registry, rerun, made))
        fold_record(registry, record)
    if rerun is None:
        raise UsageError("the run records no seed decision what-if can re-run")
    births = {e.entity: (e.born_step, e.parent) for e in registry}
    coverage = Coverage(last_observed={}, recorded_births=births, births=births)
    return SeedDecisions(rerun, recorded, again, *diff(recorded, again, coverage))


def _decide_again(registry: Registry, rerun: SeedRerun, made: DecisionMade) -> DecisionMade:
    """The decision the rerun controller makes where the driver made `made`."""
    assert made.entity is not None  # a seed decision names its seed
    seen = made.metrics_at_decision
    entity = registry.get(made.entity)
    observed = seen.get("observation")
    observation = observed if isinstance(observed, dict) else {}
    latest = registry.latest_metrics(made.entity)
    metrics = dict(latest)
    for key in OBSERVATION_KEYS[2:]:  # state_code and time_in_state come from the entity
        value = observation.get(key, 0.0)
        if isinstance(value, int | float) and (value != 0.0 or key in latest):
            metrics[key] = float(value)
    probabilities = seen.get("probabilities")
    given = probabilities if isinstance(probabilities, list) else []
    rerun.policy.probabilities = [float(p) for p in given if isinstance(p, int | float)]
    view = SeedView(entity, registry.spec_of(entity), made.step, metrics, made.seed or 0)
    decision = _held_again(made, rerun.controller.decide(view))
    details: dict[str, JsonValue] = {
        "controller": rerun.controller.name,
        SEED_DECISION_KEY: decision.action.value,
        "state": entity.state,
        "observation": dict[str, JsonValue](view.observation),
        "probabilities": None if decision.probabilities is None else list(decision.probabilities),
        **decision.details,
    }
    return made.model_copy(
        update={
            "action": decision_action(entity.spec, decision.action),
            "reason": decision.reason,
            "metrics_at_decision": details,
            "config_snapshot": rerun.controller.snapshot(),
        }
    )


def _held_again(made: DecisionMade, decision: SeedDecision) -> SeedDecision:
    """Hold a move where hysteresis held the recorded one (its check ignores the action)."""
    if "proposed" not in made.metrics_at_decision or decision.action in (
        SeedAction.HOLD,
        SeedAction.ROLLBACK,
    ):
        return decision
    details = {**decision.details, "proposed": decision.action.value}
    return SeedDecision(
        action=SeedAction.HOLD, reason=made.reason, probabilities=decision.probabilities, details=details
    )

"""Triggers (seeds/000): what turns metrics, time in state, budgets or a controller into a request.

A trigger never moves an entity itself. It produces a `TransitionRequest`, and `fire` hands the
request to `Lifecycle.transition`, so the edge's gates are checked and every check, the move or
its refusal is on the log, with `triggered_by` saying which trigger asked:

- `MetricTrigger`: a metric crosses a threshold (`loss_delta < 0.001`: a plateau);
- `TimeTrigger`: a minimum time in state blocks a move, a maximum forces one;
- `BudgetTrigger`: `should_prune` when the parameters exceed the budget, `can_grow` before growth;
- a controller (`lifecycle_es.controllers.SeedDriver`) whose decisions become requests.

`TriggerSet` combines them for one entity in seeds/000's order: a time minimum blocks
everything, a time maximum forces its move, then an over-budget prune, then the first metric
trigger that fires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from lifecycle_es._arguments import check_text
from lifecycle_es.errors import ConfigError, InvalidTransitionError

if TYPE_CHECKING:
    from lifecycle_es.registry import EntityState
    from lifecycle_es.session import Lifecycle

__all__ = [
    "BudgetTrigger",
    "Comparator",
    "Fired",
    "MetricTrigger",
    "TimeTrigger",
    "TimeVerdict",
    "TransitionRequest",
    "TriggerSet",
    "fire",
]

_EQ_TOLERANCE = 1e-6
"""seeds/000's `eq`: equal within this absolute tolerance."""


class Comparator(StrEnum):
    """How a metric trigger compares the observed value with its threshold."""

    GT = "gt"
    LT = "lt"
    EQ = "eq"


class TimeVerdict(StrEnum):
    """What a time trigger says: the move is blocked, forced, or left to the other triggers."""

    BLOCK = "block"
    FORCE = "force"
    NEUTRAL = "neutral"


@dataclass(frozen=True, kw_only=True, slots=True)
class TransitionRequest:
    """A request to fire one spec trigger of an entity, and who asked for it."""

    entity: str
    trigger: str
    """The spec's trigger name (`graft`, `prune`, ...): the edge leaving the entity's state."""
    triggered_by: str
    """Which trigger asked (`metric:loss_delta<0.001`, `time:max_steps`, `controller:heuristic`)."""
    reason: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Metrics the gates read over the entity's latest observed ones."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """JSON values recorded with the move or its refusal."""
    causation: str | None = None
    """The event id of the decision that asked, if any."""


@dataclass(frozen=True, slots=True)
class Fired:
    """The result of a request: whether the move was applied, and every failed check if not."""

    request: TransitionRequest
    accepted: bool
    reasons: tuple[str, ...] = ()


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _steps(value: int | None, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigError(f"{name} must be an int >= 0 or None, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricTrigger:
    """Fires `fires` when the metric compares to the threshold as asked (seeds/000)."""

    metric: str
    comparator: Comparator
    threshold: float
    fires: str
    """The spec trigger to request when the condition holds."""

    def __post_init__(self) -> None:
        check_text(self.metric, "metric", ConfigError)
        check_text(self.fires, "fires", ConfigError)
        if self.comparator not in tuple(Comparator):
            raise ConfigError(
                f"comparator must be one of {[c.value for c in Comparator]}, got {self.comparator!r}"
            )
        object.__setattr__(self, "comparator", Comparator(self.comparator))
        _finite(self.threshold, "threshold")

    @property
    def name(self) -> str:
        """The trigger as `triggered_by` records it, e.g. `metric:loss_delta<0.001`."""
        sign = {Comparator.GT: ">", Comparator.LT: "<", Comparator.EQ: "=="}[self.comparator]
        return f"metric:{self.metric}{sign}{self.threshold:g}"

    def check(self, metrics: Mapping[str, float]) -> bool:
        """Tell whether the condition holds; a metric not observed never fires."""
        value = metrics.get(self.metric)
        if value is None:
            return False
        if self.comparator is Comparator.GT:
            return value > self.threshold
        if self.comparator is Comparator.LT:
            return value < self.threshold
        return abs(value - self.threshold) < _EQ_TOLERANCE

    def request(self, entity: str, metrics: Mapping[str, float]) -> TransitionRequest | None:
        """Return the request when the condition holds, else None."""
        if not self.check(metrics):
            return None
        value = metrics[self.metric]
        return TransitionRequest(
            entity=entity,
            trigger=self.fires,
            triggered_by=self.name,
            reason=f"{self.metric} {value:g} {self.comparator.value} {self.threshold:g}",
            metrics=dict(metrics),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeTrigger:
    """Time in state (seeds/000): below `min_steps` a move is blocked, at `max_steps` it is forced."""

    min_steps: int | None = None
    max_steps: int | None = None
    fires: str = ""
    """The spec trigger a forced move requests (needed with `max_steps`)."""

    def __post_init__(self) -> None:
        _steps(self.min_steps, "min_steps")
        _steps(self.max_steps, "max_steps")
        if self.max_steps is not None and not check_text(self.fires, "fires", ConfigError):
            raise ConfigError("fires must name the spec trigger that max_steps forces")
        if self.min_steps is not None and self.max_steps is not None and self.max_steps < self.min_steps:
            raise ConfigError(f"max_steps {self.max_steps} is below min_steps {self.min_steps}")

    def check(self, entity: EntityState, step: int) -> tuple[TimeVerdict, str]:
        """Return the verdict at `step` and one sentence why."""
        spent = entity.time_in_state(step)
        if self.min_steps is not None and spent < self.min_steps:
            return TimeVerdict.BLOCK, f"Minimum steps not reached: {spent} < {self.min_steps}"
        if self.max_steps is not None and spent >= self.max_steps:
            return TimeVerdict.FORCE, f"Maximum steps reached: {spent} >= {self.max_steps}"
        return TimeVerdict.NEUTRAL, f"{spent} steps in {entity.state}: within time bounds"

    def request(self, entity: EntityState, step: int) -> TransitionRequest | None:
        """Return the forced request once the maximum is reached, else None."""
        verdict, why = self.check(entity, step)
        if verdict is not TimeVerdict.FORCE:
            return None
        return TransitionRequest(
            entity=entity.entity, trigger=self.fires, triggered_by="time:max_steps", reason=why
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetTrigger:
    """A parameter budget (seeds/000): prune when over it, grow only when the growth fits."""

    param_budget: float
    prunes: str = "prune"
    """The spec trigger `should_prune` requests (`cull` for Kasmina seeds)."""

    def __post_init__(self) -> None:
        if _finite(self.param_budget, "param_budget") < 0:
            raise ConfigError(f"param_budget must be >= 0, got {self.param_budget!r}")
        check_text(self.prunes, "prunes", ConfigError)

    def should_prune(self, metrics: Mapping[str, float]) -> bool:
        """Tell whether `total_params` exceeds the budget."""
        return metrics.get("total_params", 0.0) > self.param_budget

    def can_grow(self, metrics: Mapping[str, float], proposed_params: float) -> bool:
        """Tell whether `total_params + proposed_params` fits the budget."""
        return metrics.get("total_params", 0.0) + proposed_params <= self.param_budget

    def request(self, entity: str, metrics: Mapping[str, float]) -> TransitionRequest | None:
        """Return a prune request for `entity` while the run is over budget, else None."""
        if not self.should_prune(metrics):
            return None
        total = metrics["total_params"]
        return TransitionRequest(
            entity=entity,
            trigger=self.prunes,
            triggered_by="budget:should_prune",
            reason=f"{total:g} parameters exceed the budget of {self.param_budget:g}",
            metrics=dict(metrics),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TriggerSet:
    """The triggers of one lifecycle, asked together: at most one request per entity and step."""

    time: TimeTrigger | None = None
    budget: BudgetTrigger | None = None
    metrics: tuple[MetricTrigger, ...] = ()
    """Tried in order; the first that fires wins."""

    def __post_init__(self) -> None:
        for name, value, kind in (("time", self.time, TimeTrigger), ("budget", self.budget, BudgetTrigger)):
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"{name} must be a {kind.__name__} or None, got {type(value).__name__}")
        if not isinstance(self.metrics, tuple) or not all(isinstance(t, MetricTrigger) for t in self.metrics):
            raise ConfigError("metrics must be a tuple of MetricTrigger")

    def request(
        self, entity: EntityState, step: int, metrics: Mapping[str, float]
    ) -> TransitionRequest | None:
        """Return the entity's request at `step`, or None when nothing fires or time blocks."""
        if self.time is not None:
            verdict, _ = self.time.check(entity, step)
            if verdict is TimeVerdict.BLOCK:
                return None
            if verdict is TimeVerdict.FORCE:
                return self.time.request(entity, step)
        if self.budget is not None and (pruned := self.budget.request(entity.entity, metrics)) is not None:
            return pruned
        for trigger in self.metrics:
            if (fired := trigger.request(entity.entity, metrics)) is not None:
                return fired
        return None


def fire(lc: Lifecycle, request: TransitionRequest, *, step: int | None = None) -> Fired:
    """Request the transition through `lc`: gates checked and recorded, then applied or refused.

    A refusal (no such edge from the entity's state, or a failed gate) is recorded on the log
    and returned as `Fired(accepted=False)`; bad input still raises.
    """
    try:
        lc.transition(
            request.entity,
            trigger=request.trigger,
            metrics=request.metrics,
            reason=request.reason,
            step=step,
            causation=request.causation,
            triggered_by=request.triggered_by,
            metadata=dict(request.metadata) or None,
        )
    except InvalidTransitionError as refused:
        return Fired(request, False, refused.reasons)
    return Fired(request, True)

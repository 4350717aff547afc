"""`SeedDriver`: runs a seed controller over a lifecycle's seeds and records every step of it.

At each evaluation the training loop observes the seeds' metrics and calls
`driver.run(lc, step=step)`. For each seed, in name order, the driver:

1. builds the `SeedView` (state, time in state, the latest metrics) with the decision's seed,
   derived from the run's seed, the step and the entity;
2. asks the controller, and turns a move that hysteresis forbids into a hold;
3. records the `DecisionMade` (observation, action, probabilities, controller settings);
4. fires the action's spec trigger as a controller trigger: gates checked and recorded, moved
   or refused, with `triggered_by="controller:<name>"` and the decision as causation;
5. records the decision's `RewardRecorded` (seeds/000's `get_reward` over the decision's metrics;
   `integration_success` is set when the move reached a success state).

A replay reads all of it from the log; the controller (and its policy) is never asked again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pydantic import JsonValue

from lifecycle_es._arguments import check_mapping
from lifecycle_es.commands import check_metrics
from lifecycle_es.controllers._basin_math import decision_seed
from lifecycle_es.controllers._seed_actions import ACTION_TRIGGERS, SeedAction, decision_action, trigger_for
from lifecycle_es.controllers._seed_view import SeedController, SeedDecision, SeedView
from lifecycle_es.controllers.rewards import get_reward
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.events import DecisionMade, RewardRecorded
from lifecycle_es.policies import HysteresisConfig
from lifecycle_es.registry import EntityState
from lifecycle_es.spec import StateCategory
from lifecycle_es.triggers import Fired, TransitionRequest, fire

if TYPE_CHECKING:
    from lifecycle_es.session import Lifecycle

__all__ = ["SEED_DECISION_KEY", "SeedDriver", "SeedStep"]

SEED_DECISION_KEY = "seed_action"
"""The `metrics_at_decision` key that marks a seed controller's decision (the dataset export's)."""

_EMERGENCY = frozenset({SeedAction.ROLLBACK})
"""Moves hysteresis never holds back, as the spec lets them skip the minimum time in state."""


@dataclass(frozen=True, slots=True)
class SeedStep:
    """What the driver did for one seed: the decision, the fired request (None for a hold), the reward."""

    entity: str
    decision: SeedDecision
    decision_id: str
    fired: Fired | None
    reward: float


class SeedDriver:
    """Applies one seed controller to the `kasmina` and `module` entities of a lifecycle."""

    def __init__(self, controller: SeedController, *, hysteresis: HysteresisConfig | None = None) -> None:
        if not callable(getattr(controller, "decide", None)) or not callable(
            getattr(controller, "snapshot", None)
        ):
            raise ConfigError(
                f"controller must have decide() and snapshot(), got {type(controller).__name__}"
            )
        if hysteresis is not None and not isinstance(hysteresis, HysteresisConfig):
            raise ConfigError(f"hysteresis must be a HysteresisConfig, got {type(hysteresis).__name__}")
        self.controller = controller
        self.hysteresis = hysteresis

    def run(
        self,
        lc: Lifecycle,
        *,
        step: int,
        entities: Iterable[str] | None = None,
        metrics: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[SeedStep]:
        """Decide and apply one action per seed (default: every seed not in a terminal state).

        `metrics` gives per entity values over its latest observed ones (the gates read them too).
        """
        if lc.registry.run_id is None:
            raise UsageError("the run was not started: call Lifecycle.start() before driving seeds")
        lc.advance(step)
        given = dict(check_mapping({} if metrics is None else metrics, "run(metrics=...)"))
        names = sorted(self._seeds(lc) if entities is None else entities)
        if stray := sorted(set(given) - set(names)):
            raise UsageError(f"run(metrics=...) names entities this run does not drive: {stray}")
        return [self._one(lc, lc.registry.get(name), step, check_metrics(given.get(name))) for name in names]

    def _seeds(self, lc: Lifecycle) -> list[str]:
        return [
            e.entity
            for e in lc.registry
            if e.spec in ACTION_TRIGGERS and not lc.registry.spec_of(e).state(e.state).terminal
        ]

    def _one(self, lc: Lifecycle, entity: EntityState, step: int, given: dict[str, float]) -> SeedStep:
        if entity.spec not in ACTION_TRIGGERS:
            raise UsageError(
                f"{entity.entity} follows spec {entity.spec!r}; "
                f"seed controllers drive {sorted(ACTION_TRIGGERS)}"
            )
        spec = lc.registry.spec_of(entity)
        merged = {**lc.registry.latest_metrics(entity.entity), **given}
        seed = decision_seed(lc.registry.run_seed, step, "SEED", entity.entity)
        view = SeedView(entity, spec, step, merged, seed)
        decision = self._debounced(view, self.controller.decide(view))
        record = self._record(lc, view, decision)
        fired = None
        trigger = trigger_for(spec, entity.state, decision.action)
        if trigger is not None:
            request = TransitionRequest(
                entity=entity.entity,
                trigger=trigger,
                triggered_by=f"controller:{self.controller.name}",
                reason=decision.reason,
                metrics=given,
                metadata={SEED_DECISION_KEY: decision.action.value},
                causation=record.event_id,
            )
            fired = fire(lc, request, step=step)
        reward = self._reward(lc, entity.entity, merged, decision.action, fired, record.event_id, step)
        return SeedStep(entity.entity, decision, record.event_id, fired, reward)

    def _debounced(self, view: SeedView, decision: SeedDecision) -> SeedDecision:
        if self.hysteresis is None or decision.action is SeedAction.HOLD or decision.action in _EMERGENCY:
            return decision
        allowed, why = self.hysteresis.check(view.entity, view.step)
        if allowed:
            return decision
        details = {**decision.details, "proposed": decision.action.value}
        return SeedDecision(
            action=SeedAction.HOLD,
            reason=f"hysteresis: {why}",
            probabilities=decision.probabilities,
            details=details,
        )

    def _record(self, lc: Lifecycle, view: SeedView, decision: SeedDecision) -> DecisionMade:
        entity = view.entity
        seen: dict[str, JsonValue] = {
            "controller": self.controller.name,
            SEED_DECISION_KEY: decision.action.value,
            "state": entity.state,
            "observation": cast(dict[str, JsonValue], view.observation),
            "probabilities": None if decision.probabilities is None else list(decision.probabilities),
            **decision.details,
        }
        event = DecisionMade(
            run_id=lc.run_id,
            step=view.step,
            rank=lc.rank,
            entity=entity.entity,
            action=decision_action(entity.spec, decision.action),
            layer=entity.layer,
            reason=decision.reason,
            metrics_at_decision=seen,
            config_snapshot=self.controller.snapshot(),
            apply_at_step=view.step,
            seed=view.seed,
        )
        lc.append([event])
        return event

    def _reward(
        self,
        lc: Lifecycle,
        entity: str,
        metrics: dict[str, float],
        action: SeedAction,
        fired: Fired | None,
        decision_id: str,
        step: int,
    ) -> float:
        now = lc.registry.get(entity)
        reached = lc.registry.spec_of(now).state(now.state).category is StateCategory.SUCCESS
        if fired is not None and fired.accepted and reached:
            metrics = {**metrics, "integration_success": 1.0}
        reward, terms = get_reward(metrics, action)
        lc.append(
            [
                RewardRecorded(
                    run_id=lc.run_id,
                    step=step,
                    rank=lc.rank,
                    entity=entity,
                    causation=decision_id,
                    reward=reward,
                    components=terms,
                )
            ]
        )
        return reward

"""The heuristic seed controller: seeds/000's per-state rules, with their thresholds as config.

seeds/000 writes the rules for TRAINING and BLENDING and leaves "other states" open; the rest
below follow the same pattern (regression prunes or rolls back, a good signal advances, else
hold), for the states of both the `module` and the `kasmina` spec:

- DORMANT: grow when the host's loss has plateaued, abs(loss_delta) < plateau_threshold;
- INSTANTIATED, GERMINATED: advance (start training);
- TRAINING: after min_training_steps, advance when loss_delta < -improvement_threshold and
  prune when loss_delta > regression_threshold; prune at max_training_steps (a maximum forces);
- BLENDING, HOLDING: prune when host_regression > max_regression; advance when contribution >
  min_contribution (HOLDING only after min_holding_steps);
- GRAFTING, STABILIZATION, FINE_TUNING: roll back when host_regression > max_regression, else
  advance;
- EVALUATING: prune when performance_delta < -regression_threshold or error_rate >
  max_error_rate; advance when performance_delta > 0 and stability_score >= min_stability;
- PRUNED: prune again, which embargoes the slot (seeds/000: after failure, wait before retrying);
- EMBARGOED: advance (release); the `not_embargoed` gate refuses it until the backoff ends.

No rule advances before the spec's minimum time in the state (a minimum blocks); such a
request would only be refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pydantic import JsonValue

from lifecycle_es.controllers._seed_actions import SeedAction
from lifecycle_es.controllers._seed_view import SeedDecision, SeedView
from lifecycle_es.errors import ConfigError

__all__ = ["HeuristicConfig", "HeuristicController"]

_A = SeedAction


@dataclass(frozen=True, kw_only=True)
class HeuristicConfig:
    """The thresholds of the heuristic's per-state rules; times are steps in the state."""

    min_training_steps: int = 5
    """Steps in TRAINING before the loss decides (seeds/000's min_training_epochs)."""
    max_training_steps: int | None = None
    """Steps in TRAINING after which a seed that did not advance is pruned (a maximum forces)."""
    improvement_threshold: float = 0.01
    """TRAINING advances when loss_delta < -improvement_threshold."""
    regression_threshold: float = 0.05
    """TRAINING prunes when loss_delta > this; EVALUATING when performance_delta < -this."""
    max_regression: float = 0.02
    """host_regression above this prunes (BLENDING, HOLDING) or rolls back (a graft)."""
    min_contribution: float = 0.0
    """BLENDING and HOLDING advance when contribution exceeds this."""
    min_holding_steps: int = 10
    """Steps in HOLDING before it may advance to INTEGRATED."""
    plateau_threshold: float = 0.001
    """DORMANT grows when abs(loss_delta) < this (seeds/000's loss_plateau trigger)."""
    max_error_rate: float = 0.1
    """EVALUATING prunes when error_rate exceeds this (Kasmina's negative evaluation)."""
    min_stability: float = 0.8
    """EVALUATING advances only with stability_score at least this (Kasmina's positive evaluation)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "max_training_steps" and value is None:
                continue
            if name.endswith("_steps"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if self.max_training_steps is not None and self.max_training_steps < self.min_training_steps:
            raise ConfigError(
                f"max_training_steps {self.max_training_steps} is below "
                f"min_training_steps {self.min_training_steps}"
            )
        for name in ("improvement_threshold", "regression_threshold", "max_regression", "plateau_threshold"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def snapshot(self) -> dict[str, JsonValue]:
        """Return the thresholds as JSON values."""
        return dict(asdict(self))


class HeuristicController:
    """Decides by seeds/000's rules; deterministic, so a replay gets the same answer."""

    name = "heuristic"

    def __init__(self, config: HeuristicConfig | None = None) -> None:
        if config is not None and not isinstance(config, HeuristicConfig):
            raise ConfigError(f"config must be a HeuristicConfig, got {type(config).__name__}")
        self.config = config or HeuristicConfig()
        self._rules: dict[str, Callable[[SeedView], SeedDecision]] = {
            "DORMANT": self._dormant,
            "INSTANTIATED": _start,
            "GERMINATED": _start,
            "TRAINING": self._training,
            "BLENDING": self._blending,
            "HOLDING": self._holding,
            "GRAFTING": self._grafted,
            "STABILIZATION": self._grafted,
            "FINE_TUNING": self._grafted,
            "EVALUATING": self._evaluating,
            "PRUNED": lambda v: SeedDecision(
                action=_A.PRUNE, reason="after a failure the slot waits out a cooldown"
            ),
            "EMBARGOED": lambda v: SeedDecision(
                action=_A.ADVANCE, reason="release the slot once its embargo ends"
            ),
        }

    def snapshot(self) -> dict[str, JsonValue]:
        """Return the controller's name and thresholds."""
        return {"controller": self.name, **self.config.snapshot()}

    def decide(self, view: SeedView) -> SeedDecision:
        """Return the action of the rule for the entity's state (hold when no rule fires)."""
        rule = self._rules.get(view.entity.state)
        if rule is None or view.spec.state(view.entity.state).terminal:
            return _hold(f"no rule moves an entity in {view.entity.state}")
        decision = rule(view)
        if decision.action is _A.ADVANCE and (blocked := _too_soon(view)) is not None:
            return _hold(blocked)
        return decision

    def _dormant(self, view: SeedView) -> SeedDecision:
        if "loss_delta" not in view.metrics:
            return _hold("loss_delta was not observed: no plateau to grow on")
        delta, limit = view.metric("loss_delta"), self.config.plateau_threshold
        if abs(delta) < limit:
            return SeedDecision(
                action=_A.GROW, reason=f"loss plateau: |loss_delta| {abs(delta):g} < {limit:g}"
            )
        return _hold(f"loss still moving: |loss_delta| {abs(delta):g} >= {limit:g}")

    def _training(self, view: SeedView) -> SeedDecision:
        c, spent = self.config, view.time_in_state()
        if c.max_training_steps is not None and spent >= c.max_training_steps:
            return SeedDecision(
                action=_A.PRUNE, reason=f"Maximum steps reached: {spent} >= {c.max_training_steps}"
            )
        if spent < c.min_training_steps:
            return _hold(f"Minimum steps not reached: {spent} < {c.min_training_steps}")
        delta = view.metric("loss_delta")
        if delta < -c.improvement_threshold:
            return SeedDecision(
                action=_A.ADVANCE, reason=f"loss_delta {delta:g} < -{c.improvement_threshold:g}"
            )
        if delta > c.regression_threshold:
            return SeedDecision(action=_A.PRUNE, reason=f"loss_delta {delta:g} > {c.regression_threshold:g}")
        return _hold(
            f"loss_delta {delta:g} within [-{c.improvement_threshold:g}, {c.regression_threshold:g}]"
        )

    def _blending(self, view: SeedView, *, min_steps: int = 0) -> SeedDecision:
        c = self.config
        regression, contribution = view.metric("host_regression"), view.metric("contribution")
        if regression > c.max_regression:
            return SeedDecision(
                action=_A.PRUNE, reason=f"host_regression {regression:g} > {c.max_regression:g}"
            )
        if contribution > c.min_contribution and view.time_in_state() >= min_steps:
            return SeedDecision(
                action=_A.ADVANCE, reason=f"contribution {contribution:g} > {c.min_contribution:g}"
            )
        return _hold(f"contribution {contribution:g}, host_regression {regression:g}: keep observing")

    def _holding(self, view: SeedView) -> SeedDecision:
        return self._blending(view, min_steps=self.config.min_holding_steps)

    def _grafted(self, view: SeedView) -> SeedDecision:
        regression, limit = view.metric("host_regression"), self.config.max_regression
        if regression > limit:
            return SeedDecision(action=_A.ROLLBACK, reason=f"host_regression {regression:g} > {limit:g}")
        return SeedDecision(action=_A.ADVANCE, reason=f"host_regression {regression:g} <= {limit:g}")

    def _evaluating(self, view: SeedView) -> SeedDecision:
        c = self.config
        delta, errors = view.metric("performance_delta"), view.metric("error_rate")
        stability = view.metric("stability_score")
        if delta < -c.regression_threshold or errors > c.max_error_rate:
            return SeedDecision(action=_A.PRUNE, reason=f"performance_delta {delta:g}, error_rate {errors:g}")
        if delta > 0 and stability >= c.min_stability:
            return SeedDecision(
                action=_A.ADVANCE, reason=f"performance_delta {delta:g} > 0, stability {stability:g}"
            )
        return _hold(f"performance_delta {delta:g}, stability {stability:g}: not conclusive")


def _hold(reason: str) -> SeedDecision:
    return SeedDecision(action=_A.HOLD, reason=reason)


def _start(view: SeedView) -> SeedDecision:
    return SeedDecision(action=_A.ADVANCE, reason="start training")


def _too_soon(view: SeedView) -> str | None:
    """The spec's minimum time in state blocks an advance (it would only be refused)."""
    minimum = view.spec.state(view.entity.state).min_time_in_state
    spent = view.time_in_state()
    return (
        f"Minimum steps not reached: {spent} < {minimum} in {view.entity.state}" if spent < minimum else None
    )

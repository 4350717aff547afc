"""The hybrid seed controller: the heuristic as a safety net, the policy where it is confident.

seeds/000's `HybridController`: when the heuristic prunes or rolls back on a clear failure
(host_regression above `safety_regression`) its action stands; otherwise the policy's
confidence (its largest probability) decides: above `high_confidence` the policy's action, below
`low_confidence` the heuristic's, and in between a weighted random choice, the policy's with
probability `blend`. The draw is seeded from the decision's seed, so a replay draws the same.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from pydantic import JsonValue

from lifecycle_es.controllers._seed_actions import SeedAction
from lifecycle_es.controllers._seed_view import SeedDecision, SeedView
from lifecycle_es.controllers.heuristic import HeuristicController
from lifecycle_es.controllers.policy import PolicyController
from lifecycle_es.errors import ConfigError

__all__ = ["HybridConfig", "HybridController"]

_FAILURE_ACTIONS = frozenset({SeedAction.PRUNE, SeedAction.ROLLBACK})


@dataclass(frozen=True, kw_only=True)
class HybridConfig:
    """How the hybrid blends: confidence bounds, the blend weight and the safety net's threshold."""

    high_confidence: float = 0.8
    """Above this the policy's action is taken."""
    low_confidence: float = 0.3
    """Below this the heuristic's action is taken."""
    blend: float = 0.5
    """In between, the probability of taking the policy's action (seeds/000's blend_alpha)."""
    safety_regression: float = 0.1
    """A heuristic prune or rollback with host_regression above this overrides the policy."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        for name in ("high_confidence", "low_confidence", "blend"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.low_confidence > self.high_confidence:
            raise ConfigError(
                f"low_confidence {self.low_confidence} is above high_confidence {self.high_confidence}"
            )


class HybridController:
    """Blends a heuristic and a policy controller by the policy's confidence, with a safety net."""

    name = "hybrid"

    def __init__(
        self, heuristic: HeuristicController, policy: PolicyController, config: HybridConfig | None = None
    ) -> None:
        if not isinstance(heuristic, HeuristicController) or not isinstance(policy, PolicyController):
            raise ConfigError("HybridController takes a HeuristicController and a PolicyController")
        if config is not None and not isinstance(config, HybridConfig):
            raise ConfigError(f"config must be a HybridConfig, got {type(config).__name__}")
        self.heuristic = heuristic
        self.policy = policy
        self.config = config or HybridConfig()

    def snapshot(self) -> dict[str, JsonValue]:
        """Return the blend settings and both controllers' settings."""
        return {
            "controller": self.name,
            **{k: float(v) for k, v in asdict(self.config).items()},
            "heuristic": self.heuristic.snapshot(),
            "policy": self.policy.snapshot(),
        }

    def decide(self, view: SeedView) -> SeedDecision:
        """Return the heuristic's or the policy's action, recording both and how it chose."""
        rule, learned = self.heuristic.decide(view), self.policy.decide(view)
        assert learned.probabilities is not None  # a PolicyController always gives them
        confidence = max(learned.probabilities)
        details: dict[str, JsonValue] = {
            "heuristic_action": rule.action.value,
            "policy_action": learned.action.value,
            "confidence": confidence,
        }
        regression = view.metric("host_regression")
        c = self.config
        if rule.action in _FAILURE_ACTIONS and regression > c.safety_regression:
            chosen, why = rule, f"safety net: host_regression {regression:g} > {c.safety_regression:g}"
        elif confidence > c.high_confidence:
            chosen, why = learned, f"policy confident: {confidence:.3g} > {c.high_confidence:g}"
        elif confidence < c.low_confidence:
            chosen, why = rule, f"policy unsure: {confidence:.3g} < {c.low_confidence:g}"
        else:
            # Its own stream: a sampling policy draws from the decision's seed itself.
            draw = random.Random(f"hybrid-{view.seed}").random()
            details["draw"] = draw
            chosen = learned if draw < c.blend else rule
            why = f"blend: draw {draw:.3g} {'<' if draw < c.blend else '>='} {c.blend:g}"
        details["chosen_by"] = "policy" if chosen is learned else "heuristic"
        return SeedDecision(
            action=chosen.action,
            reason=f"{why}; {chosen.reason}",
            probabilities=learned.probabilities,
            details=details,
        )

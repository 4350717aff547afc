"""The policy seed controller: a user's policy maps the observation to action probabilities.

The policy is any callable from the observation vector (`OBSERVATION_KEYS` order) to one
probability per action (`SEED_ACTIONS` order); a torch network is wrapped by
`projections.seeds.policy.TorchPolicy`, which keeps this package free of torch. The decision
records the observation, the probabilities and the chosen action, so a replay reads the
decision from the log and never calls the policy again. The choice is the most probable action,
or, with `sample=True`, a draw seeded from the decision's seed (the same on every replay).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from pydantic import JsonValue

from lifecycle_es.controllers._seed_actions import SEED_ACTIONS
from lifecycle_es.controllers._seed_view import SeedDecision, SeedView
from lifecycle_es.errors import ConfigError, UsageError

__all__ = ["PolicyController", "PolicyFn", "probabilities_of"]

PolicyFn = Callable[[Sequence[float]], Sequence[float]]
"""Observation vector -> one probability per action in `SEED_ACTIONS` order."""

_TOLERANCE = 1e-3
"""How far from 1 a policy's probabilities may sum (float32 softmax drifts)."""


def probabilities_of(policy: PolicyFn, vector: Sequence[float]) -> tuple[float, ...]:
    """Call the policy and return its probabilities, normalised to sum to 1, or raise `UsageError`."""
    raw = policy(list(vector))
    try:
        probs = tuple(float(p) for p in raw)
    except (TypeError, ValueError) as e:
        raise UsageError(f"the policy must return {len(SEED_ACTIONS)} numbers, got {raw!r}") from e
    total = math.fsum(probs)
    if (
        len(probs) != len(SEED_ACTIONS)
        or not all(math.isfinite(p) and p >= 0 for p in probs)
        or abs(total - 1) > _TOLERANCE
    ):
        raise UsageError(
            f"the policy must return {len(SEED_ACTIONS)} probabilities >= 0 summing to 1 "
            f"(actions {[a.value for a in SEED_ACTIONS]}), got {list(probs)}"
        )
    return tuple(p / total for p in probs)


class PolicyController:
    """Decides with a user's policy; the observation and probabilities are recorded with the choice."""

    def __init__(self, policy: PolicyFn, *, name: str = "policy", sample: bool = False) -> None:
        if not callable(policy):
            raise ConfigError(
                f"policy must be callable (observation -> probabilities), got {type(policy).__name__}"
            )
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        self.policy = policy
        self.name = name
        self.sample = bool(sample)

    def snapshot(self) -> dict[str, JsonValue]:
        """Return the controller's name and how it chooses."""
        return {"controller": self.name, "sample": self.sample}

    def decide(self, view: SeedView) -> SeedDecision:
        """Return the policy's action for the viewed entity, with its probabilities."""
        probs = probabilities_of(self.policy, view.vector)
        index = choose(probs, view.seed) if self.sample else max(range(len(probs)), key=probs.__getitem__)
        how = "drawn" if self.sample else "most probable"
        return SeedDecision(
            action=SEED_ACTIONS[index],
            reason=f"policy: {SEED_ACTIONS[index].value} ({how}, p={probs[index]:.3g})",
            probabilities=probs,
        )


def choose(probs: Sequence[float], seed: int) -> int:
    """Return an index drawn from `probs` with a generator seeded by `seed` (same on every replay)."""
    draw = random.Random(seed).random()
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if draw < acc:
            return i
    return max(i for i, p in enumerate(probs) if p > 0)

"""What a seed controller sees (`SeedView`), what it answers (`SeedDecision`), and its protocol.

The observation is a fixed list of named numbers (`OBSERVATION_KEYS`), so a policy network gets
the same vector on every run and the recorded one can be fed back to it offline. A metric that
was not observed reads 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from lifecycle_es.controllers._seed_actions import SEED_ACTIONS, SeedAction
from lifecycle_es.errors import UsageError
from lifecycle_es.registry import EntityState
from lifecycle_es.spec import Spec

__all__ = ["OBSERVATION_KEYS", "SeedController", "SeedDecision", "SeedView", "observation_of"]

OBSERVATION_KEYS: tuple[str, ...] = (
    "state_code",
    "time_in_state",
    "current_loss",
    "loss_delta",
    "contribution",
    "host_regression",
    "reconstruction_loss",
    "performance_delta",
    "stability_score",
    "error_rate",
)
"""The observation's entries in vector order: the state's code, steps in it, then metrics."""

_FROM_ENTITY = ("state_code", "time_in_state")


def observation_of(
    entity: EntityState, spec: Spec, step: int, metrics: Mapping[str, float]
) -> dict[str, float]:
    """Return the observation of `entity` at `step`: its state code, time in state and metrics."""
    seen = {key: float(metrics.get(key, 0.0)) for key in OBSERVATION_KEYS if key not in _FROM_ENTITY}
    return {
        "state_code": float(spec.state(entity.state).code),
        "time_in_state": float(entity.time_in_state(step)),
        **seen,
    }


@dataclass(frozen=True, slots=True)
class SeedView:
    """One entity at one evaluation, as a seed controller sees it."""

    entity: EntityState
    spec: Spec
    step: int
    metrics: Mapping[str, float]
    """The entity's latest observed metrics with those given to this evaluation over them."""
    seed: int
    """The decision's seed (from the run's seed, the step and the entity): any random draw uses it."""

    @property
    def observation(self) -> dict[str, float]:
        """The observation, by name in `OBSERVATION_KEYS` order."""
        return observation_of(self.entity, self.spec, self.step, self.metrics)

    @property
    def vector(self) -> list[float]:
        """The observation as the list a policy takes."""
        return list(self.observation.values())

    def time_in_state(self) -> int:
        """Steps the entity has spent in its state."""
        return self.entity.time_in_state(self.step)

    def metric(self, name: str) -> float:
        """The metric's value, 0.0 when it was not observed."""
        return self.metrics.get(name, 0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class SeedDecision:
    """A seed controller's answer for one entity: the action, why, and what it was chosen from."""

    action: SeedAction
    reason: str
    probabilities: tuple[float, ...] | None = None
    """The policy's probability of each action in `SEED_ACTIONS` order; None for rules."""
    details: Mapping[str, JsonValue] = field(default_factory=dict)
    """What else the controller wants recorded (the hybrid's two candidates and its draw)."""

    def __post_init__(self) -> None:
        probs = self.probabilities
        if probs is not None and (len(probs) != len(SEED_ACTIONS) or not all(map(math.isfinite, probs))):
            raise UsageError(
                f"probabilities must be {len(SEED_ACTIONS)} finite numbers, got {self.probabilities!r}"
            )


class SeedController(Protocol):
    """Anything that decides a seed's next action from a `SeedView`."""

    @property
    def name(self) -> str:
        """The controller's name, recorded in each decision (`heuristic`, `policy`, `hybrid`)."""
        ...

    def decide(self, view: SeedView) -> SeedDecision:
        """Return the action for the viewed entity; must be deterministic given the view."""
        ...

    def snapshot(self) -> dict[str, JsonValue]:
        """Return the controller's settings, recorded as each decision's `config_snapshot`."""
        ...

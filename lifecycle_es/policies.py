"""Policies that keep a lifecycle from thrashing: cooldown/embargo, hysteresis, budgets, patience.

Every policy is a pure function of facts the registry folded from events (failure counts per
slot, transition history, populations, metric windows, decisions this cycle) and of its own
parameters. No policy keeps a counter of its own, so replaying a log reproduces every decision,
and a what-if replay with other parameters sees the same facts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lifecycle_es.errors import ConfigError
from lifecycle_es.events import Action
from lifecycle_es.registry import HISTORY_LIMIT

if TYPE_CHECKING:
    from lifecycle_es.registry import EntityState, Registry

__all__ = [
    "HysteresisConfig",
    "action_budget_left",
    "cooldown_elapsed",
    "embargo_until",
    "hysteresis",
    "patience",
    "population_budget_left",
    "population_floor_left",
    "streak",
]


def embargo_until(registry: Registry, entity: EntityState, *, base: int, exponential: bool) -> int:
    """Return the first step at which the entity's slot may be reused after its failures.

    The cooldown after the n-th failure in a row is `base * 2**(n-1)` with exponential backoff,
    else `base`; a success (entering a success state) resets the count (seeds/000).
    """
    failures = registry.slot_failures(entity)
    if failures is None:
        return 0
    count, last_step = failures
    cooldown = base * 2 ** (count - 1) if exponential else base
    return last_step + cooldown


def hysteresis(
    entity: EntityState, step: int, *, min_time: int, max_transitions: int, window: int
) -> tuple[bool, str, int]:
    """Debounce: refuse when the entity entered its state too recently or moved too often.

    Returns (allowed, reason, transitions within the last `window` steps).
    """
    recent = sum(1 for at, _, _ in entity.history if step - at < window)
    spent = entity.time_in_state(step)
    if spent < min_time:
        return False, f"Too soon since last transition: {spent} < {min_time} steps", recent
    if recent >= max_transitions:
        return False, f"Too many transitions in window: {recent} >= {max_transitions}", recent
    return True, f"{spent} steps in state, {recent} transitions in the last {window}", recent


@dataclass(frozen=True, kw_only=True)
class HysteresisConfig:
    """seeds/000's `HysteresisGuard`: debounce state thrashing, with its defaults."""

    min_time_in_state: int = 50
    """Steps an entity must spend in a state before it moves again."""
    max_transitions_per_window: int = 3
    """At most this many moves within the last `window_size` steps."""
    window_size: int = 100

    def __post_init__(self) -> None:
        for name in ("min_time_in_state", "max_transitions_per_window", "window_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
        if not 1 <= self.max_transitions_per_window <= HISTORY_LIMIT:
            # The registry keeps the latest HISTORY_LIMIT moves; a larger cap could never be reached.
            raise ConfigError(
                f"max_transitions_per_window must lie in [1, {HISTORY_LIMIT}], "
                f"got {self.max_transitions_per_window}"
            )

    def check(self, entity: EntityState, step: int) -> tuple[bool, str]:
        """Return whether the entity may move at `step`, and one sentence why."""
        allowed, reason, _ = hysteresis(
            entity,
            step,
            min_time=self.min_time_in_state,
            max_transitions=self.max_transitions_per_window,
            window=self.window_size,
        )
        return allowed, reason


def population_budget_left(
    registry: Registry, spec: str, layer: int | None, states: Iterable[str], cap: int
) -> int:
    """Return how many more entities of `spec` in `states` the layer may hold under `cap`."""
    return cap - sum(registry.population(spec, layer, s) for s in states)


def population_floor_left(
    registry: Registry, spec: str, layer: int | None, states: Iterable[str], floor: int
) -> int:
    """Return how many entities of `spec` in `states` the layer may lose before it hits `floor`."""
    return sum(registry.population(spec, layer, s) for s in states) - floor


def action_budget_left(registry: Registry, action: Action, cap: int) -> int:
    """Return how many more `action` decisions fit in the current evaluation cycle."""
    return cap - registry.decisions_this_cycle(action)


def cooldown_elapsed(
    registry: Registry, action: Action, step: int, cooldown: int, *, key: str | int | None = None
) -> bool:
    """Tell whether `cooldown` steps have passed since the last `action` on `key`.

    `key` narrows the cooldown: an entity id (a per-expert split cooldown), a layer, or None
    for a global one.
    """
    last = registry.last_decision_step(action, key)
    return last is None or step - last >= cooldown


def patience(values: tuple[float, ...], n: int, signal: Callable[[float], bool]) -> bool:
    """Tell whether `signal` held on each of the last `n` observed values (n checkpoints)."""
    return n > 0 and len(values) >= n and all(signal(v) for v in values[-n:])


def streak(values: tuple[float, ...], signal: Callable[[float], bool]) -> int:
    """Return for how many of the latest observed values in a row `signal` has held.

    The progress of a patience policy: `patience(values, n, signal)` holds once this is >= n.
    """
    held = 0
    for value in reversed(values):
        if not signal(value):
            break
        held += 1
    return held

"""The structural checks of the expert coordinator: caps, floors, slots, budgets, cooldowns, lineage.

Each returns a `Check` (category structural) built from the policies of `lifecycle_es.policies`
over the registry, so every limit reads facts folded from the log and nothing else.
"""

from __future__ import annotations

from lifecycle_es.controllers._batch import Check
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.events import Action, GateCategory
from lifecycle_es.policies import (
    action_budget_left,
    cooldown_elapsed,
    population_budget_left,
    population_floor_left,
)
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.specs.expert import EXPERT_SPEC, ExpertState

__all__ = ["LIVE_STATES", "budget", "cap", "cooldown", "count", "floor", "lineage", "live", "slot"]

LIVE_STATES = (ExpertState.PENDING_SPAWN, ExpertState.COOLING, ExpertState.ACTIVE, ExpertState.DORMANT)
"""States that count toward a layer's cap and floor; pending_prune and archived are on their way out."""
_STRUCT = GateCategory.STRUCTURAL
_EXPERT = EXPERT_SPEC.name


def count(n: int, noun: str) -> str:
    """Return "1 checkpoint", "3 checkpoints": a count with its noun, for check reasons."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def live(registry: Registry, layer: int) -> int:
    """Return the number of live experts (see `LIVE_STATES`) of a layer."""
    return sum(registry.population(_EXPERT, layer, s) for s in LIVE_STATES)


def floor(registry: Registry, config: ExpertCoordinatorConfig, gate: str, layer: int) -> Check:
    """Pass while the layer may lose a live expert without going under `min_experts_per_layer`."""
    least = config.min_experts_per_layer
    left = population_floor_left(registry, _EXPERT, layer, LIVE_STATES, least)
    return Check(
        gate,
        _STRUCT,
        left > 0,
        f"layer {layer} has {count(left + least, 'live expert')}, floor {least}",
        {"live_experts": left + least},
        {"min_experts_per_layer": least},
    )


def cap(registry: Registry, config: ExpertCoordinatorConfig, gate: str, layer: int) -> Check:
    """Pass while the layer has room for another live expert under `max_experts_per_layer`."""
    most = config.max_experts_per_layer
    left = population_budget_left(registry, _EXPERT, layer, LIVE_STATES, most)
    return Check(
        gate,
        _STRUCT,
        left > 0,
        f"layer {layer} has {count(most - left, 'live expert')}, cap {most}",
        {"live_experts": most - left},
        {"max_experts_per_layer": most},
    )


def slot(gate: str, layer: int, free: int | None, capacity: int) -> Check:
    """Pass when the layer has a free slot (`free`, the lowest one, or None).

    The layer's capacity is observed (a fact of the model, not a setting), so it is recorded
    whether the check passes or not: what-if reads it back.
    """
    return Check(
        gate,
        _STRUCT,
        free is not None,
        f"slot {free} of layer {layer} is free"
        if free is not None
        else f"all {capacity} slots of layer {layer} are held",
        {"capacity": capacity} if free is None else {"free_slot": free, "capacity": capacity},
        {},
    )


def budget(registry: Registry, gate: str, action: Action, most: int) -> Check:
    """Pass while fewer than `most` `action` decisions were made this cycle (since `StepSealed`)."""
    used = registry.decisions_this_cycle(action)
    return Check(
        gate,
        _STRUCT,
        action_budget_left(registry, action, most) > 0,
        f"{count(used, action.value + ' decision')} this cycle, budget {most}",
        {"decisions_this_cycle": used},
        {"max_per_cycle": most},
    )


def cooldown(registry: Registry, step: int, gate: str, action: Action, steps: int, key: str | None) -> Check:
    """Pass once `steps` have passed since the last `action` on `key` (None: on anything)."""
    last = registry.last_decision_step(action, key)
    what = "any expert" if key is None else key
    return Check(
        gate,
        _STRUCT,
        cooldown_elapsed(registry, action, step, steps, key=key),
        f"no {action.value} of {what} yet"
        if last is None
        else f"last {action.value} of {what} {count(step - last, 'step')} ago, cooldown {steps}",
        {} if last is None else {"steps_since_last": step - last},
        {"cooldown_steps": steps},
    )


def lineage(step: int, config: ExpertCoordinatorConfig, a: EntityState, b: EntityState) -> Check:
    """Pass unless one expert was made from the other, or both from one parent (twins), less
    than `split_cooldown_per_expert` ago.

    A clone starts with its parent's weights and basin (seeds/002: "their basins should diverge
    as the router learns to distinguish them"), so it meets both merge thresholds at birth;
    merging it back then would only undo the split or spawn that made it.
    """
    grace = config.split_cooldown_per_expert
    child = b if b.parent == a.entity else a if a.parent == b.entity else None
    if child is None and a.parent is not None and a.parent == b.parent:
        child = a if a.born_step >= b.born_step else b  # twins: the younger one's age counts
    if child is None:
        return Check(
            "merge.lineage_grace",
            _STRUCT,
            True,
            f"{a.entity} and {b.entity} are not parent and child",
            {},
            {"grace_steps": grace},
        )
    age = step - child.born_step
    return Check(
        "merge.lineage_grace",
        _STRUCT,
        age >= grace,
        f"{child.entity} was made from {child.parent} {count(age, 'step')} ago, grace {grace}",
        {"steps_since_birth": age},
        {"grace_steps": grace},
    )

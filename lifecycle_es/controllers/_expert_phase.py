"""What every phase of an expert evaluation reads: the scratch registry, seen through the config.

A phase (upkeep, prune, merge, split, spawn) is a small class over the evaluation's config,
capacity and `Batch`; it reads the experts and their share windows through the helpers here,
so "in its current state" and "the next free slot" mean the same thing to every phase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lifecycle_es.controllers._batch import Batch
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_ids import expert_id, parse_expert_id
from lifecycle_es.controllers._revive import reserved_slots
from lifecycle_es.controllers._signals import SHARE, checkpoints_since
from lifecycle_es.events import GateCategory
from lifecycle_es.registry import EntityState
from lifecycle_es.specs.expert import EXPERT_SPEC

__all__ = ["PERF", "STAB", "STRUCT", "ExpertPhase", "above", "position"]

PERF, STAB, STRUCT = GateCategory.PERFORMANCE, GateCategory.STABILITY, GateCategory.STRUCTURAL
"""The categories of signal checks (performance, stability) and of limits (structural)."""


@dataclass(frozen=True, slots=True)
class ExpertPhase:
    """One phase of an evaluation: the scratch registry it reads and the batch it adds to."""

    config: ExpertCoordinatorConfig
    capacity: dict[int, int]
    """Slots per managed layer; experts of other layers are left alone."""
    batch: Batch

    @property
    def step(self) -> int:
        """The step of the checkpoint being evaluated."""
        return self.batch.stamp.step

    def experts(self, states: Iterable[str], layer: int | None = None) -> list[EntityState]:
        """Return the managed experts in `states` (of `layer`, if given), by layer and slot."""
        wanted = frozenset(states)  # live states only: archived experts are never asked for
        found = [
            e
            for e in self.batch.registry.live()
            if e.spec == EXPERT_SPEC.name
            and e.layer in self.capacity
            and e.state in wanted
            and (layer is None or e.layer == layer)
        ]
        return sorted(found, key=position)

    def shares(self, e: EntityState) -> tuple[float, ...]:
        """Return the expert's routing-share window, oldest first."""
        return self.batch.registry.metric_window(e.entity, SHARE)

    def latest_share(self, e: EntityState) -> float | None:
        """Return the expert's latest routing share, or None before its first observation."""
        shares = self.shares(e)
        return shares[-1] if shares else None

    def in_state(self, e: EntityState) -> int:
        """Return how many checkpoints have observed the expert in its current state."""
        if not e.history:  # never moved: every observation of it was made in this state
            return len(self.shares(e))
        return checkpoints_since(self.batch.registry, e.layer, e.entered_step)

    def shares_in_state(self, e: EntityState) -> tuple[float, ...]:
        """Return the shares observed since the expert entered its current state."""
        shares, k = self.shares(e), self.in_state(e)
        return shares[max(0, len(shares) - k) :] if k else ()

    def is_zero(self, share: float) -> bool:
        """Tell whether a share is too small to count as receiving tokens."""
        return share < self.config.dormant_share_epsilon

    def state_of(self, entity: str) -> str:
        """Return the entity's state now, after the events this evaluation already made."""
        return self.batch.registry.get(entity).state

    def free_slot(self, layer: int) -> int | None:
        """Return the layer's first free slot, one no parked expert wants back first."""
        registry = self.batch.registry
        slots = range(self.capacity[layer])
        free = [s for s in slots if registry.slot_holder(EXPERT_SPEC.name, layer, s) is None]
        wanted = reserved_slots(registry, layer, self.config.park_budget)
        return min(free, key=lambda s: (s in wanted, s), default=None)

    def next_id(self, layer: int) -> str:
        """Return the id a new expert of the layer gets: one past the highest number ever used."""
        taken = [
            parsed[1]
            for e in self.batch.registry
            if e.layer == layer and (parsed := parse_expert_id(e.entity)) and parsed[0] == layer
        ]
        return expert_id(layer, max(taken, default=-1) + 1)


def position(e: EntityState) -> tuple[int, int, str]:
    """Return the expert's sort key: layer, slot, then id."""
    return (e.layer if e.layer is not None else -1, e.slot if e.slot is not None else -1, e.entity)


def above(threshold: float) -> Callable[[float], bool]:
    """Return the test `value > threshold`, for patience and streak counts."""
    return lambda value: value > threshold

"""`EntityState`, one entity as the registry knows it, and the small rules about entities that
the registry and its fold share (which states hold a slot, whom a per-peer metric is about)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lifecycle_es.spec import Spec, StateCategory

__all__ = [
    "HISTORY_LIMIT",
    "EntityState",
    "entity_from_plain",
    "entity_to_plain",
    "holds_slot",
    "peer_of",
    "slot_key",
]

HISTORY_LIMIT = 32
"""Transitions kept per entity: enough for hysteresis windows and debugging, bounded."""

SlotKey = tuple[str, int | None, int | str]
"""(spec, layer, slot), or (spec, layer, "entity:<id>") for an entity without a slot."""


@dataclass(frozen=True, slots=True)
class EntityState:
    """One entity as the registry knows it. Immutable: the fold replaces it on every change."""

    entity: str
    spec: str
    state: str
    slot: int | None
    layer: int | None
    parent: str | None
    born_step: int
    entered_step: int
    transitions: int = 0
    rejections: int = 0
    history: tuple[tuple[int, str, str], ...] = ()
    """(step, from, to) of the latest transitions, oldest first, at most HISTORY_LIMIT."""
    attrs: Mapping[str, Any] = field(default_factory=dict)
    last_transition: Mapping[str, Any] | None = None
    """The latest applied move: from_state, to_state, step, reason, triggered_by, metadata."""
    entered_ts: float | None = field(default=None, compare=False)
    """Wall-clock time of the event that put the entity in its state. Not compared: two runs
    (or a what-if) that make the same moves at other moments hold equal registries."""

    def time_in_state(self, step: int) -> int:
        """Return the steps spent in the current state as of `step`."""
        return step - self.entered_step


def entity_to_plain(e: EntityState) -> dict[str, Any]:
    """Return the entity as plain data, for `Registry.to_state`."""
    plain = {f.name: getattr(e, f.name) for f in dataclasses.fields(e)}
    plain["history"] = [list(h) for h in e.history]
    plain["attrs"] = dict(e.attrs)
    plain["last_transition"] = copy.deepcopy(e.last_transition)
    return plain


def entity_from_plain(plain: Mapping[str, Any]) -> EntityState:
    """Rebuild an entity from `entity_to_plain` output."""
    return EntityState(
        **{**plain, "history": tuple(tuple(h) for h in plain["history"]), "attrs": dict(plain["attrs"])}
    )


def holds_slot(spec: Spec, state: str) -> bool:
    """Tell whether an entity in `state` keeps its slot (failure and terminal states release it).

    The same test says whether the entity is live: only live entities keep metric windows.
    """
    return state not in spec.states_in(StateCategory.FAILURE) and not spec.state(state).terminal


def peer_of(metric: str) -> str:
    """Return the entity a per-peer metric `<kind>.<entity id>` is about, or "" for another name."""
    return metric.partition(".")[2]


def slot_key(e: EntityState) -> SlotKey:
    """The key of the entity's slot in the embargo counts (its own name when it has no slot)."""
    return (e.spec, e.layer, e.slot) if e.slot is not None else (e.spec, e.layer, f"entity:{e.entity}")

"""The checks of a registration request (`commands.register`), made before its event exists.

Each raises the domain error naming what is wrong, in the order `register` calls them, so the
first problem of a request is the one reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lifecycle_es._arguments import check_mapping, first_non_json
from lifecycle_es.errors import (
    DuplicateEntityError,
    SchemaError,
    SlotEmbargoedError,
    SpecError,
    UnknownStateError,
    UsageError,
)
from lifecycle_es.gates import EMBARGO_GATE, GateInput, GateLibrary
from lifecycle_es.registry import EntityState, Registry

if TYPE_CHECKING:
    from lifecycle_es.commands import GatePolicy

__all__ = ["check_embargo", "check_place", "initial_state", "register_attrs"]


def register_attrs(entity: str, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a registration's attrs as a dict of JSON values, or raise `SchemaError`."""
    plain = dict(check_mapping({} if attrs is None else attrs, "attrs"))
    bad = first_non_json(plain, "attrs")
    if bad is not None:
        raise SchemaError(f"cannot register {entity!r}: attrs take JSON values with str keys only, but {bad}")
    return plain


def initial_state(registry: Registry, spec: str, state: str | None) -> str:
    """Return the state a new `spec` entity starts in: `state`, or the spec's default."""
    found = registry.specs.get(spec)
    if found is None:
        raise SpecError(f"unknown spec {spec!r}; this run knows {sorted(registry.specs)}")
    state = found.initial[0] if state is None else state
    if state not in found.initial:
        found.state(state)  # an unknown name raises its own, more precise error
        raise UnknownStateError(
            f"{spec} entities cannot start in {state!r}; initial states: {list(found.initial)}"
        )
    return state


def check_place(registry: Registry, spec: str, slot: int | None, layer: int | None) -> None:
    """Refuse a slot or layer that is not an int, and a slot another entity holds."""
    for name, value in (("slot", slot), ("layer", layer)):
        # Checked here, not left to pydantic, whose lax mode would turn "3" or True into 3
        # after the slot-holder check below had been skipped.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{name} must be an int or None, got {type(value).__name__}")
    if slot is not None and (holder := registry.slot_holder(spec, layer, slot)) is not None:
        raise DuplicateEntityError(f"slot {slot} of layer {layer} is held by {holder!r}")


def check_embargo(
    registry: Registry, gates: GateLibrary, policy: GatePolicy, step: int, candidate: EntityState
) -> None:
    """Refuse a registration into a slot the `not_embargoed` gate keeps on cooldown."""
    gate = gates[EMBARGO_GATE]
    params = gate.parameters(policy.params.get(EMBARGO_GATE, {}))
    result = gate.fn(GateInput(candidate, candidate.state, step, {}, registry), params)
    if not result.passed:
        raise SlotEmbargoedError(
            f"cannot register {candidate.entity!r} into slot {candidate.slot} of layer "
            f"{candidate.layer}: {result.reason}"
        )

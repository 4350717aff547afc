"""Command handlers: validate a request against the registry and return the events it produces.

Nothing here changes the registry. The caller appends the returned events to the run's log and
folds them; only then has anything happened.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from lifecycle_es._arguments import check_text, plain_text
from lifecycle_es._event_base import UUID_PATTERN
from lifecycle_es._registration import check_embargo, check_place, initial_state, register_attrs
from lifecycle_es.errors import (
    DuplicateEntityError,
    InvalidMetricError,
    SchemaError,
    UnknownStateError,
    UsageError,
)
from lifecycle_es.events import (
    EntityRegistered,
    EventBase,
    GateCategory,
    GateChecked,
    GateMode,
    MetricsObserved,
    TransitionApplied,
    TransitionRejected,
)
from lifecycle_es.gates import EMBARGO_GATE, MIN_TIME_GATE, GateInput, GateLibrary
from lifecycle_es.registry import EntityState, Registry, holds_slot
from lifecycle_es.spec import Spec, TransitionDef

__all__ = ["GatePolicy", "Outcome", "Stamp", "check_metrics", "observe", "register", "request_transition"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Stamp:
    """The envelope values a command puts on every event it produces."""

    run_id: str
    """The run whose log receives the events."""
    step: int
    """The training step the command happens at."""
    rank: int = 0
    """The rank of the process issuing the command."""
    causation: str | None = None
    """The event_id of the event that caused the command (a decision), if any."""
    envelope: dict[str, Any] = field(init=False, repr=False, compare=False)
    """The four values as an event's keyword arguments, made once: `Event.trusted(**envelope, ...)`."""

    def __post_init__(self) -> None:
        if self.step < 0 or self.rank < 0:
            raise UsageError(f"step and rank must be >= 0, got step {self.step}, rank {self.rank}")
        # Checked here because transitions and observations build their events unvalidated.
        if self.causation is not None and (
            not isinstance(self.causation, str) or not re.fullmatch(UUID_PATTERN, self.causation)
        ):
            raise UsageError(f"causation must be an event id (UUID text), got {self.causation!r}")
        for name, kind in (("step", int), ("rank", int), ("causation", str)):
            value = getattr(self, name)
            if value is not None and type(value) is not kind:  # an IntEnum, a str subclass
                object.__setattr__(self, name, kind(value))  # plain: the log takes events as built
        envelope = {"run_id": self.run_id, "step": self.step, "rank": self.rank, "causation": self.causation}
        object.__setattr__(self, "envelope", envelope)


@dataclass(frozen=True, kw_only=True, slots=True)
class GatePolicy:
    """How gates are applied: the mode and any parameters that override a gate's defaults."""

    mode: GateMode = GateMode.STRICT
    """Strict: every gate blocks. Permissive: only structural gates block (all are recorded)."""
    params: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per gate name, parameters over the gate's defaults (thresholds, windows, cooldowns)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The events of a transition request and whether the transition was accepted."""

    events: tuple[EventBase, ...]
    accepted: bool
    reasons: tuple[str, ...] = ()


_FLOAT_MAX = sys.float_info.max
_STRICT, _STRUCTURAL = GateMode.STRICT, GateCategory.STRUCTURAL  # an enum member lookup is slow


def check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Return the metrics as floats, or raise `InvalidMetricError` for a bad name or value."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        kind = type(metrics).__name__
        raise InvalidMetricError(f"metrics must be a mapping of names to numbers, got {kind}")
    checked: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InvalidMetricError(f"metric names must be non-empty strings, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidMetricError(f"metric {name!r} must be a number, got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > _FLOAT_MAX:  # float() would raise OverflowError
            raise InvalidMetricError(f"metric {name!r} must be finite, got an int too large for a float")
        if not math.isfinite(value):
            raise InvalidMetricError(f"metric {name!r} must be finite, got {value}")
        checked[str(name)] = float(value)
    return checked


def register(
    registry: Registry,
    stamp: Stamp,
    *,
    entity: str,
    spec: str,
    state: str | None = None,
    slot: int | None = None,
    layer: int | None = None,
    parent: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    gates: GateLibrary | None = None,
    policy: GatePolicy | None = None,
) -> EntityRegistered:
    """Return the event that registers `entity` under `spec`, in its default or a given initial state.

    With a gate library holding `not_embargoed`, a slot on cooldown is refused with
    `SlotEmbargoedError` (the gate's parameters from `policy`): no entity grows into it.
    """
    check_text(entity, "entity")
    check_text(spec, "spec")
    if state is not None:
        check_text(state, "state")
    attrs = register_attrs(entity, attrs)
    if entity in registry:
        raise DuplicateEntityError(f"entity {entity!r} is already registered")
    state = initial_state(registry, spec, state)
    check_place(registry, spec, slot, layer)
    if slot is not None and gates is not None and EMBARGO_GATE in gates:
        candidate = EntityState(entity, spec, state, slot, layer, parent, stamp.step, stamp.step)
        check_embargo(registry, gates, policy or GatePolicy(), stamp.step, candidate)
    try:
        return EntityRegistered(
            **stamp.envelope,
            entity=entity,
            spec=spec,
            state=state,
            slot=slot,
            layer=layer,
            parent=parent,
            attrs=attrs,
        )
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise SchemaError(f"cannot register {entity!r}: {where}: {err['msg']}") from e


def observe(
    registry: Registry,
    stamp: Stamp,
    metrics: Mapping[str, Any],
    *,
    entity: str | None = None,
    layer: int | None = None,
) -> MetricsObserved:
    """Return the event recording metrics of an entity, a layer, or the run."""
    checked = check_metrics(metrics)
    if entity is not None:
        entity = plain_text(entity, "entity")  # plain, as in request_transition
        registry.get(entity)
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise UsageError(f"layer must be a non-negative int, got {layer!r}")
    layer = None if layer is None else int(layer)
    return MetricsObserved.trusted(
        **stamp.envelope,
        entity=entity,
        layer=layer,
        metrics=checked,
    )


def request_transition(
    registry: Registry,
    gates: GateLibrary,
    policy: GatePolicy,
    stamp: Stamp,
    *,
    entity: str,
    to: str | None = None,
    trigger: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    reason: str = "",
    triggered_by: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Outcome:
    """Check a transition and return its events: gate checks, then applied or rejected.

    Bad input (unknown entity, state or trigger, bad metrics) raises before any event exists.
    A transition the spec or a gate refuses is not bad input: it returns the rejection's events.
    `triggered_by` and `metadata` (checked by the caller: `Lifecycle.plan`) go on the last event.
    """
    who = {"triggered_by": triggered_by, "metadata": metadata}
    # Plain strs (a str subclass becomes its value): the events are built unvalidated and
    # handed to the log as they are (`Log.append(plain=True)`).
    entity = plain_text(entity, "entity")
    to = None if to is None else plain_text(to, "to")
    trigger = None if trigger is None else plain_text(trigger, "trigger")
    current = registry.get(entity)
    spec = registry.spec_of(current)
    reason = plain_text(reason, "reason")  # the applied event is built unvalidated
    edge, target, trig = _resolve(spec, current.state, to, trigger)
    checked = {} if metrics is None else check_metrics(metrics)
    if edge is None:
        return _rejected(stamp, current, target, trig, (), (_no_edge(current.state, target, trig),), who)
    if current.slot is not None and (taken := _slot_taken(registry, spec, current, target)) is not None:
        return _rejected(stamp, current, target, trig, (), (taken,), who)
    merged = registry.latest_metrics(entity)
    merged.update(checked)  # a fresh dict: the observed values, then the request's over them
    gate_input = GateInput(current, target, stamp.step, merged, registry)
    checks: list[EventBase] = []
    failed = _check_guards(gates, policy, stamp, gate_input, spec, edge, checks)
    if failed:
        return _rejected(stamp, current, target, trig, tuple(checks), tuple(failed), who)
    checks.append(_applied(stamp, current, target, trig, reason, who))  # the outcome's events, in order
    return Outcome(tuple(checks), True)


def _no_edge(state: str, target: str, trigger: str) -> str:
    """Why a request the spec has no edge for is refused."""
    if target:
        return f"Invalid transition: {state} -> {target}"
    return f"Invalid transition: no {trigger!r} edge leaves {state}"


def _check_guards(
    gates: GateLibrary,
    policy: GatePolicy,
    stamp: Stamp,
    gate_input: GateInput,
    spec: Spec,
    edge: TransitionDef,
    checks: list[EventBase],
) -> list[str]:
    """Check the edge's gates, appending each `GateChecked` to `checks`; return why blocking ones failed."""
    # Loops rather than generators: a transition checks one or two gates, and a generator's
    # frame costs more than the checks' bookkeeping (DESIGN.md section 9).
    failed: list[str] = []
    for name in spec.guards(edge):
        check = _check(gates, policy, stamp, gate_input, name, spec, edge)
        checks.append(check)
        fields = check.__dict__
        if fields["blocking"] and not fields["passed"]:
            failed.append(f"{name}: {fields['reason']}")
    return failed


def _resolve(
    spec: Spec, state: str, to: str | None, trigger: str | None
) -> tuple[TransitionDef | None, str, str]:
    if (to is None) == (trigger is None):
        raise UsageError("name exactly one of `to` and `trigger`")
    if trigger is not None:
        edge = spec.edge_for_trigger(state, trigger)
        if edge is None and all(t.trigger != trigger for t in spec.transitions):
            raise UnknownStateError(f"spec {spec.name!r} has no trigger {trigger!r}")
        return edge, edge.target if edge else "", trigger
    assert to is not None
    spec.state(to)
    edge = spec.edge(state, to)
    return edge, to, edge.trigger if edge else ""


def _slot_taken(registry: Registry, spec: Spec, current: EntityState, target: str) -> str | None:
    """A slot released by a failure may have been given to another entity meanwhile."""
    if current.slot is None or not holds_slot(spec, target):
        return None
    holder = registry.slot_holder(current.spec, current.layer, current.slot)
    if holder is None or holder == current.entity:
        return None
    return f"slot {current.slot} of layer {current.layer} is now held by {holder!r}"


def _check(
    gates: GateLibrary,
    policy: GatePolicy,
    stamp: Stamp,
    gate_input: GateInput,
    name: str,
    spec: Spec,
    edge: TransitionDef,
) -> GateChecked:
    gate = gates[name]
    overrides = policy.params.get(name)
    if name == MIN_TIME_GATE:
        overrides = {**(overrides or {}), "min_steps": spec.state(edge.source).min_time_in_state}
    params = gate.parameters(overrides) if overrides else dict(gate.defaults)
    result = gate.fn(gate_input, params)
    blocking = policy.mode is _STRICT or gate.category is _STRUCTURAL
    return GateChecked.trusted(
        **stamp.envelope,
        entity=gate_input.entity.entity,
        from_state=edge.source,
        to_state=edge.target,
        gate=name,
        category=gate.category,
        # A gate is user code: its verdict is made plain here, as the log takes it unchecked.
        passed=bool(result.passed),
        blocking=blocking,
        reason=str(result.reason),
        observed={str(k): float(v) for k, v in result.observed.items() if math.isfinite(v)},
        thresholds={str(k): float(v) for k, v in params.items() if math.isfinite(v)},
        mode=policy.mode,
    )


def _applied(
    stamp: Stamp, current: EntityState, target: str, trigger: str, reason: str, who: dict[str, Any]
) -> TransitionApplied:
    return TransitionApplied.trusted(
        **stamp.envelope,
        entity=current.entity,
        from_state=current.state,
        to_state=target,
        trigger=trigger,
        reason=reason,
        **who,
    )


def _rejected(
    stamp: Stamp,
    current: EntityState,
    target: str,
    trigger: str,
    checks: tuple[EventBase, ...],
    reasons: tuple[str, ...],
    who: dict[str, Any],
) -> Outcome:
    rejected = TransitionRejected.trusted(
        **stamp.envelope,
        entity=current.entity,
        from_state=current.state,
        to_state=target,
        trigger=trigger,
        reasons=list(reasons),
        **who,
    )
    return Outcome((*checks, rejected), False, reasons)

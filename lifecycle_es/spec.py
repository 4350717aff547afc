"""Lifecycle specs as data: states, guarded transitions and hook points, validated at construction.

A spec is the one transition table of its lifecycle; the command handlers, the fold, the
projections and the printers all read it, and nothing copies it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from lifecycle_es.errors import SpecError, UnknownStateError

__all__ = ["MIN_TIME_GATE", "HookPoint", "Spec", "StateCategory", "StateDef", "TransitionDef"]

MIN_TIME_GATE = "min_time_in_state"
"""The structural gate checked first on an edge whose source state has a minimum time."""


class StateCategory(StrEnum):
    """The role of a state, used by queries such as 'operational' or 'in error'."""

    INITIAL = "initial"
    ACTIVE = "active"
    TRANSITIONAL = "transitional"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    MAINTENANCE = "maintenance"


@dataclass(frozen=True, kw_only=True, slots=True)
class StateDef:
    """One state of a spec."""

    name: str
    """Stable name, stored in events."""
    code: int
    """Small non-negative integer, stored in the state tensors."""
    category: StateCategory
    """The role of the state."""
    terminal: bool = False
    """True when no transition leaves the state (a recycled slot's state is not terminal)."""
    min_time_in_state: int = 0
    """Steps an entity must spend here before leaving, unless the edge skips the minimum."""
    description: str = ""
    embargo: bool = False
    """True when entering the state embargoes the entity's slot: nothing grows into the slot until
    its cooldown, counted from this entry, has passed (seeds/000's cooldown manager)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TransitionDef:
    """One allowed edge of a spec, with the gates that guard it."""

    source: str
    target: str
    trigger: str
    """Name of the command that fires the edge from `source`."""
    gates: tuple[str, ...] = ()
    """Names of the gates checked before the edge is taken, resolved in a gate library."""
    skip_min_time: bool = False
    """True when the edge may be taken before the source's minimum time (emergency exits)."""
    description: str = ""
    """Why the edge exists."""


@dataclass(frozen=True, kw_only=True, slots=True)
class HookPoint:
    """A named moment of a lifecycle, such as the run spec's 'pre_stop'."""

    name: str
    phase: Literal["pre", "post"]
    """Before the transition's events are appended, or after they are folded."""
    targets: tuple[str, ...]
    """The states whose entry fires the hook."""


@dataclass(frozen=True, slots=True)
class _Index:
    states: Mapping[str, StateDef]
    by_code: Mapping[int, StateDef]
    edges: Mapping[tuple[str, str], TransitionDef]
    triggers: Mapping[tuple[str, str], TransitionDef]
    exits: Mapping[str, tuple[TransitionDef, ...]]
    by_category: Mapping[StateCategory, frozenset[str]]
    guards: Mapping[tuple[str, str], tuple[str, ...]]
    """Per edge (source, target), the gates checked before it is taken, in order."""


@dataclass(frozen=True, kw_only=True)
class Spec:
    """A lifecycle: its states, its edges, the states an entity may start in, and hook points."""

    name: str
    states: tuple[StateDef, ...]
    transitions: tuple[TransitionDef, ...]
    initial: tuple[str, ...]
    """States a newly registered entity may start in; the first is the default."""
    hooks: tuple[HookPoint, ...] = ()
    description: str = ""
    _index: _Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(sorted(self.states, key=lambda s: s.code)))
        object.__setattr__(self, "_index", _build_index(self))
        _validate(self)

    # -- lookups -------------------------------------------------------------------------

    def state(self, name: str) -> StateDef:
        """Return the state called `name`, or raise `UnknownStateError`."""
        try:
            return self._index.states[name]
        except KeyError:
            raise UnknownStateError(f"spec {self.name!r} has no state {name!r}") from None

    def state_by_code(self, code: int) -> StateDef:
        """Return the state whose code is `code`, or raise `UnknownStateError`."""
        try:
            return self._index.by_code[code]
        except KeyError:
            raise UnknownStateError(f"spec {self.name!r} has no state with code {code}") from None

    def has_state(self, name: str) -> bool:
        """Tell whether `name` is a state of this spec."""
        return name in self._index.states

    def edge(self, source: str, target: str) -> TransitionDef | None:
        """Return the edge from `source` to `target`, or None when the spec has none."""
        return self._index.edges.get((source, target))

    def edge_for_trigger(self, source: str, trigger: str) -> TransitionDef | None:
        """Return the edge that `trigger` fires from `source`, or None."""
        return self._index.triggers.get((source, trigger))

    def guards(self, edge: TransitionDef) -> tuple[str, ...]:
        """Return the gates checked before `edge` is taken, in order: the spec's minimum-time
        gate first when the source state has a minimum time the edge does not skip."""
        return self._index.guards[(edge.source, edge.target)]

    def exits(self, source: str) -> tuple[TransitionDef, ...]:
        """Return the edges leaving `source`, in target-code order."""
        return self._index.exits.get(source, ())

    def hook_points(self, phase: str, target: str) -> tuple[str, ...]:
        """Return the names of the hook points of `phase` fired by entering `target`."""
        return tuple(h.name for h in self.hooks if h.phase == phase and target in h.targets)

    def states_in(self, *categories: StateCategory) -> frozenset[str]:
        """Return the names of the states in any of `categories`."""
        if len(categories) == 1:
            return self._index.by_category[categories[0]]
        return frozenset().union(*(self._index.by_category[c] for c in categories))

    @property
    def gate_names(self) -> frozenset[str]:
        """Every gate name the spec's edges refer to."""
        return frozenset(g for t in self.transitions for g in t.gates)

    # -- exports -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Return the spec in the documented JSON form (states by code, edges by codes)."""
        code = {s.name: s.code for s in self.states}
        edges = sorted(self.transitions, key=lambda t: (code[t.source], code[t.target]))
        return {
            "name": self.name,
            "initial": list(self.initial),
            "states": [
                {
                    "name": s.name,
                    "code": s.code,
                    "category": s.category.value,
                    "terminal": s.terminal,
                    "min_time_in_state": s.min_time_in_state,
                }
                for s in self.states
            ],
            "transitions": [
                {"from": t.source, "to": t.target, "trigger": t.trigger, "gates": list(t.gates)}
                for t in edges
            ],
        }

    def to_mermaid(self) -> str:
        """Return the spec as a Mermaid state diagram."""
        lines = ["stateDiagram-v2"]
        lines += [f"    [*] --> {s}" for s in self.initial]
        for t in self.to_json()["transitions"]:
            guard = f" [{', '.join(t['gates'])}]" if t["gates"] else ""
            lines.append(f"    {t['from']} --> {t['to']}: {t['trigger']}{guard}")
        lines += [f"    {s.name} --> [*]" for s in self.states if s.terminal]
        return "\n".join(lines) + "\n"


def _build_index(spec: Spec) -> _Index:
    states: dict[str, StateDef] = {}
    by_code: dict[int, StateDef] = {}
    for s in spec.states:
        if s.name in states or s.code in by_code:
            raise SpecError(f"spec {spec.name!r}: duplicate state name or code in {s.name!r}")
        if s.code < 0:
            raise SpecError(f"spec {spec.name!r}: state {s.name!r} has a negative code")
        states[s.name] = by_code[s.code] = s
    edges: dict[tuple[str, str], TransitionDef] = {}
    triggers: dict[tuple[str, str], TransitionDef] = {}
    exits: dict[str, list[TransitionDef]] = {}
    for t in spec.transitions:
        for end in (t.source, t.target):
            if end not in states:
                raise SpecError(
                    f"spec {spec.name!r}: edge {t.source}->{t.target} names unknown state {end!r}"
                )
        if (t.source, t.target) in edges:
            raise SpecError(f"spec {spec.name!r}: duplicate edge {t.source}->{t.target}")
        if (t.source, t.trigger) in triggers:
            raise SpecError(f"spec {spec.name!r}: trigger {t.trigger!r} is ambiguous from {t.source!r}")
        edges[(t.source, t.target)] = triggers[(t.source, t.trigger)] = t
        exits.setdefault(t.source, []).append(t)
    return _Index(
        states=states,
        by_code=by_code,
        edges=edges,
        triggers=triggers,
        exits={k: tuple(sorted(v, key=lambda t: states[t.target].code)) for k, v in exits.items()},
        by_category={c: frozenset(s.name for s in spec.states if s.category is c) for c in StateCategory},
        guards={(t.source, t.target): _guards(t, states[t.source]) for t in spec.transitions},
    )


def _guards(edge: TransitionDef, source: StateDef) -> tuple[str, ...]:
    """The edge's gates, after the minimum-time gate when its source has a minimum time that
    the edge does not skip."""
    if source.min_time_in_state > 0 and not edge.skip_min_time:
        return (MIN_TIME_GATE, *edge.gates)
    return edge.gates


def _validate(spec: Spec) -> None:
    index = spec._index
    if not spec.initial:
        raise SpecError(f"spec {spec.name!r}: needs at least one initial state")
    for name in spec.initial:
        if name not in index.states:
            raise SpecError(f"spec {spec.name!r}: initial state {name!r} is unknown")
    for t in spec.transitions:
        if t.source == t.target:
            raise SpecError(f"spec {spec.name!r}: self-transition on {t.source!r}")
        if index.states[t.source].terminal:
            raise SpecError(f"spec {spec.name!r}: terminal state {t.source!r} has an exit")
    for hook in spec.hooks:
        for target in hook.targets:
            if target not in index.states:
                raise SpecError(f"spec {spec.name!r}: hook {hook.name!r} names unknown state {target!r}")
    unreachable = set(index.states) - _reachable(spec.initial, index)
    if unreachable:
        raise SpecError(f"spec {spec.name!r}: unreachable states {sorted(unreachable)}")


def _reachable(start: Iterable[str], index: _Index) -> set[str]:
    seen = set(start)
    todo = deque(seen)
    while todo:
        for t in index.exits.get(todo.popleft(), ()):
            if t.target not in seen:
                seen.add(t.target)
                todo.append(t.target)
    return seen

"""The registry: the state of one run, and the one fold that builds it from events.

`fold(registry, event)` is the only way the registry changes. It is deterministic: it reads
nothing but the registry and the event (no clock, no randomness, no I/O), checks that the
event's seq is exactly one past the last, and checks the event against the registry before it
changes anything, so a refused event leaves the registry as it was. It updates the registry in
place and returns it; take `registry.copy()` first to keep an earlier state.

The fold reads events as field mappings, so the same code applies a validated event model and,
on the trusted bulk-replay path, a raw record read back from our own log.

The registry keeps per-entity state only for entities that can still act, so its size follows
the live entities, not the events or steps of the run. An entity is *live* while it holds its
slot (`holds_slot`: not in a failure or terminal state). When a transition takes it out of the
live set, the fold drops its metric windows, the per-peer windows others keep about it and its
per-entity decision keys; while it stays out, metrics of it or about it are not kept. Only its
`EntityState` stays, a small record with a bounded history, so ids stay unique and queries and
the `revive`/`recycle` edges still find it; `Registry.live()` iterates the live entities alone.
A metric named `<kind>.<entity id>` (`coact.L0_E5`, `cosine.L0_E5`) is a per-peer metric: it
is about that entity. Because these are fold rules, a registry replayed from the log equals the
live one, windows included.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from bus import Record
from lifecycle_es.errors import (
    InconsistentEventError,
    SchemaError,
    SequenceGapError,
    UnknownEntityError,
)
from lifecycle_es.events import Action, EventBase
from lifecycle_es.spec import Spec, StateCategory
from lifecycle_es.specs.run import RUN_SPEC

__all__ = ["EntityState", "Registry", "fold", "fold_record", "fold_records", "holds_slot", "peer_of"]

HISTORY_LIMIT = 32
"""Transitions kept per entity: enough for hysteresis windows and debugging, bounded."""

_ACTIONS = tuple(Action)  # iterating the enum class itself is slow on the fold's path
_MetricKey = tuple[str, str | int | None]  # ("entity", id) | ("layer", n) | ("run", None)
_SlotKey = tuple[str, int | None, int | str]


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


class Registry:
    """Every entity of a run with its state, plus the facts policies read; built only by `fold`."""

    def __init__(self, specs: Mapping[str, Spec], *, window: int = 50) -> None:
        self.specs = dict(specs)
        self.window = window
        """How many observations of each metric are kept per entity or layer."""
        self.run_id: str | None = None
        self.seq = 0
        self.step = 0
        self.run_state: str | None = None
        self.run_config: dict[str, Any] = {}
        self.run_seed = 0
        """The seed recorded in `RunStarted`; decisions derive their noise seeds from it."""
        self.sealed_step: int | None = None
        self.verified_step: int | None = None
        self.last_checkpoint: dict[str, Any] | None = None
        self.checkpoints: dict[str, str] = {}
        """Where each checkpoint a manager recorded is ("active", "archive" or "corrupt"), by id;
        a deleted one leaves."""
        self.entities: dict[str, EntityState] = {}
        self._live: dict[str, None] = {}
        """The names of the live entities (see the module docstring), for `live()`."""
        self._slots: dict[_SlotKey, str] = {}
        self._failures: dict[_SlotKey, tuple[int, int]] = {}
        self._population: Counter[tuple[str, int | None, str]] = Counter()
        self._windows: dict[_MetricKey, dict[str, deque[float]]] = {}
        """Metric windows of live entities, layers and the run; an owner has at least one."""
        self._cycle: Counter[str] = Counter()
        self._last_decision: dict[tuple[str, str | int | None], int] = {}
        self._retired = {
            name: frozenset(s.name for s in spec.states if not holds_slot(spec, s.name))
            for name, spec in self.specs.items()
        }
        """Per spec, the states whose entities are out of the live set (see the module docstring)."""
        self._embargoes = {
            name: frozenset(s.name for s in spec.states if s.embargo) for name, spec in self.specs.items()
        }
        """Per spec, the states whose entry embargoes the entity's slot (`StateDef.embargo`)."""
        self._successes = {name: spec.states_in(StateCategory.SUCCESS) for name, spec in self.specs.items()}
        """Per spec, the success states: entering one clears the slot's embargo count."""

    # -- queries -------------------------------------------------------------------------------

    def __contains__(self, entity: object) -> bool:
        return entity in self.entities

    def __iter__(self) -> Iterator[EntityState]:
        return iter(self.entities.values())

    def __len__(self) -> int:
        return len(self.entities)

    def get(self, entity: str) -> EntityState:
        """Return the entity, or raise `UnknownEntityError`."""
        try:
            return self.entities[entity]
        except KeyError:
            raise UnknownEntityError(f"no entity {entity!r} in run {self.run_id!r}") from None

    def spec_of(self, entity: EntityState) -> Spec:
        """Return the spec the entity follows."""
        return self.specs[entity.spec]

    def population(self, spec: str, layer: int | None, state: str) -> int:
        """Return how many entities of `spec` in `layer` are in `state`."""
        return self._population[(spec, layer, state)]

    def populations(self) -> dict[tuple[str, int | None, str], int]:
        """Return every non-zero population, keyed by (spec, layer, state)."""
        return {key: n for key, n in self._population.items() if n}

    def count_transitional(self, spec: str, *, exclude: str | None = None) -> int:
        """Return how many entities of `spec`, other than `exclude`, are in transitional states."""
        names = self.specs[spec].states_in(StateCategory.TRANSITIONAL)
        # From the populations, not a scan: the entities dict keeps every entity ever registered.
        count = sum(n for (s, _, state), n in self._population.items() if s == spec and state in names)
        left = self.entities.get(exclude) if exclude is not None else None
        return count - (left is not None and left.spec == spec and left.state in names)

    def live(self) -> Iterator[EntityState]:
        """Iterate over the live entities, in no set order: the cost follows them, not the run's past."""
        return map(self.entities.__getitem__, self._live)

    def is_live(self, entity: str) -> bool:
        """Tell whether a registered entity can still act: it holds its slot (`holds_slot`)."""
        e = self.get(entity)
        return e.state not in self._retired[e.spec]

    def slot_holder(self, spec: str, layer: int | None, slot: int) -> str | None:
        """Return the entity holding a slot, or None when the slot is free."""
        return self._slots.get((spec, layer, slot))

    def slot_failures(self, entity: EntityState) -> tuple[int, int] | None:
        """Return (embargoes in a row, step the latest began) for the entity's slot, or None.

        A slot's count grows each time an entity in it enters one of its spec's embargo states
        (`StateDef.embargo`) and is cleared when one enters a success state (seeds/000).
        """
        return self._failures.get(_slot_key(entity))

    def metric_window(self, key: str | int | None, name: str, *, layer: bool = False) -> tuple[float, ...]:
        """Return the observed values of metric `name` for an entity (or a layer), oldest first."""
        mkey: _MetricKey = ("layer", key) if layer else ("entity", key) if key else ("run", None)
        values = self._windows.get(mkey, {}).get(name)
        return tuple(values) if values else ()

    def latest_metrics(self, entity: str) -> dict[str, float]:
        """Return the latest observed value of each metric of an entity."""
        return {k: v[-1] for k, v in self._windows.get(("entity", entity), {}).items() if v}

    def decisions_this_cycle(self, action: Action) -> int:
        """Return how many `action` decisions were made since the last sealed step."""
        return self._cycle[action]

    def last_decision_step(self, action: Action, key: str | int | None = None) -> int | None:
        """Return the step of the latest `action` decision on `key` (entity, layer or None)."""
        return self._last_decision.get((action, key))

    # -- snapshots -----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Return the registry as plain data (JSON- and `torch.load(weights_only=True)`-safe)."""
        return {
            "window": self.window,
            "run_id": self.run_id,
            "seq": self.seq,
            "step": self.step,
            "run_state": self.run_state,
            "run_config": self.run_config,
            "run_seed": self.run_seed,
            "sealed_step": self.sealed_step,
            "verified_step": self.verified_step,
            "last_checkpoint": self.last_checkpoint,
            "checkpoints": dict(self.checkpoints),
            "entities": [_entity_to_plain(e) for e in self.entities.values()],
            "failures": [[*k, *v] for k, v in self._failures.items()],
            "windows": [
                [kind, key, name, list(values)]
                for (kind, key), named in self._windows.items()
                for name, values in named.items()
            ],
            "cycle": dict(self._cycle),
            "last_decision": [[a, k, s] for (a, k), s in self._last_decision.items()],
        }

    @classmethod
    def from_state(cls, specs: Mapping[str, Spec], state: Mapping[str, Any]) -> Registry:
        """Rebuild a registry from `to_state()` output; the specs must include every spec it uses."""
        r = cls(specs, window=state["window"])
        for name in (
            "run_id",
            "seq",
            "step",
            "run_state",
            "run_seed",
            "sealed_step",
            "verified_step",
            "last_checkpoint",
        ):
            setattr(r, name, state[name])
        r.run_config = dict(state["run_config"])
        r.checkpoints = dict(state.get("checkpoints", {}))  # absent from older snapshots
        for plain in state["entities"]:
            e = _entity_from_plain(plain)
            r.entities[e.entity] = e
            if e.state not in r._retired[e.spec]:
                r._live[e.entity] = None
            r._population[(e.spec, e.layer, e.state)] += 1
            if e.slot is not None and holds_slot(r.specs[e.spec], e.state):
                r._slots[(e.spec, e.layer, e.slot)] = e.entity
        r._failures = {(s, layer, slot): (n, at) for s, layer, slot, n, at in state["failures"]}
        for kind, key, name, values in state["windows"]:
            # A snapshot taken before windows followed the live set may hold stale ones.
            if not (kind == "entity" and _retired(r, key)) and not _retired(r, peer_of(name)):
                r._windows.setdefault((kind, key), {})[name] = deque(values, maxlen=r.window)
        r._cycle = Counter(state["cycle"])
        r._last_decision = {(a, k): s for a, k, s in state["last_decision"]}
        return r

    # -- value semantics -----------------------------------------------------------------------

    def copy(self) -> Registry:
        """Return an independent copy (entities are immutable and shared)."""
        clone = copy.copy(self)
        for name in (
            "entities",
            "_live",
            "_slots",
            "_failures",
            "_population",
            "_cycle",
            "_last_decision",
            "run_config",
            "checkpoints",
        ):
            setattr(clone, name, copy.copy(getattr(self, name)))
        clone._windows = {k: {n: deque(d, d.maxlen) for n, d in v.items()} for k, v in self._windows.items()}
        return clone

    def _facts(self) -> tuple[Any, ...]:
        windows = {k: {n: tuple(d) for n, d in v.items()} for k, v in self._windows.items()}
        return (
            sorted(self.specs),
            self.window,
            self.run_id,
            self.seq,
            self.step,
            self.run_state,
            self.run_config,
            self.run_seed,
            self.sealed_step,
            self.verified_step,
            self.last_checkpoint,
            self.checkpoints,
            self.entities,
            self._slots,
            self._failures,
            +self._population,
            windows,
            +self._cycle,
            self._last_decision,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Registry) and self._facts() == other._facts()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Registry(run_id={self.run_id!r}, seq={self.seq}, entities={len(self.entities)})"


def _entity_to_plain(e: EntityState) -> dict[str, Any]:
    plain = {f.name: getattr(e, f.name) for f in dataclasses.fields(e)}
    plain["history"] = [list(h) for h in e.history]
    plain["attrs"] = dict(e.attrs)
    plain["last_transition"] = copy.deepcopy(e.last_transition)
    return plain


def _entity_from_plain(plain: Mapping[str, Any]) -> EntityState:
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


def _slot_key(e: EntityState) -> _SlotKey:
    return (e.spec, e.layer, e.slot) if e.slot is not None else (e.spec, e.layer, f"entity:{e.entity}")


# -- the fold ------------------------------------------------------------------------------------


def fold(registry: Registry, event: EventBase) -> Registry:
    """Apply one appended event to the registry and return it."""
    return fold_record(registry, event.__dict__)


def fold_record(registry: Registry, record: Record) -> Registry:
    """Apply one event given as a field mapping (a record read back from the log)."""
    return fold_records(registry, (record,))


def fold_records(registry: Registry, records: Iterable[Record]) -> Registry:
    """Apply events given as field mappings, in order; one call folds a whole replay batch.

    A record that is refused raises with the registry at the record before it.
    """
    handlers, stateless = _HANDLERS, _STATELESS
    last, top = registry.seq, registry.step
    try:
        for record in records:
            seq, kind = record.get("seq"), record.get("kind")
            if seq != last + 1 or type(seq) is not int or kind is None:
                _refuse(last, seq, kind)
            step = record["step"]
            if kind not in stateless:
                handler = handlers.get(kind)
                if handler is None:
                    raise SchemaError(f"record seq {seq}: unknown kind {kind!r}")
                try:  # inlined: a call per record costs a tenth of a transition's fold
                    handler(registry, record)  # handlers read the record, not the clock
                except KeyError as e:  # handlers read every field before they change anything
                    raise SchemaError(f"record seq {seq} ({kind}) lacks the field {e}") from None
            last = seq
            if step > top:
                top = step
    finally:
        registry.seq, registry.step = last, top
    return registry


def _refuse(last: int, seq: object, kind: object) -> NoReturn:
    if kind is None or not isinstance(seq, int):
        raise SchemaError(f"record {seq!r} lacks its kind or an integer seq")
    raise SequenceGapError(f"event seq {seq} does not follow the registry's last seq {last}")


def _on_run_started(r: Registry, ev: Record) -> None:
    r.run_id = ev["run_id"]
    r.run_config = dict(ev["config"])
    r.run_seed = ev["seed"]
    if RUN_SPEC.name in r.specs:
        r.run_state = r.specs[RUN_SPEC.name].initial[0]


def _on_run_state_changed(r: Registry, ev: Record) -> None:
    if r.run_state is not None and ev["from_state"] != r.run_state:
        raise InconsistentEventError(
            f"seq {ev['seq']}: run moves from {ev['from_state']!r} but is in {r.run_state!r}"
        )
    r.run_state = ev["to_state"]


def _on_entity_registered(r: Registry, ev: Record) -> None:
    name, spec = ev["entity"], r.specs.get(ev["spec"])
    if name in r.entities or spec is None or not spec.has_state(ev["state"]):
        raise InconsistentEventError(
            f"seq {ev['seq']}: cannot register {name!r} as {ev['spec']}/{ev['state']}"
        )
    e = EntityState(
        entity=name,
        spec=ev["spec"],
        state=ev["state"],
        slot=ev["slot"],
        layer=ev["layer"],
        parent=ev["parent"],
        born_step=ev["step"],
        entered_step=ev["step"],
        attrs=dict(ev["attrs"]),
        entered_ts=ev.get("ts"),
    )
    r.entities[name] = e
    if e.state not in r._retired[e.spec]:
        r._live[name] = None
    r._population[(e.spec, e.layer, e.state)] += 1
    if e.slot is not None:
        r._slots[(e.spec, e.layer, e.slot)] = name


def _on_transition_applied(r: Registry, ev: Record) -> None:
    e = r.entities.get(ev["entity"])
    if e is None or e.state != ev["from_state"] or r.specs[e.spec].edge(e.state, ev["to_state"]) is None:
        raise InconsistentEventError(
            f"seq {ev['seq']}: {ev['entity']!r} cannot move {ev['from_state']}->{ev['to_state']}"
        )
    step, target = ev["step"], ev["to_state"]
    history = (*e.history, (step, e.state, target))
    # Positional, as in _on_transition_rejected: keywords cost a tenth of the fold here.
    moved = EntityState(
        e.entity,
        e.spec,
        target,
        e.slot,
        e.layer,
        e.parent,
        e.born_step,
        step,
        e.transitions + 1,
        e.rejections,
        history if len(history) <= HISTORY_LIMIT else history[-HISTORY_LIMIT:],
        e.attrs,
        _last_transition(ev),
        ev.get("ts"),
    )
    r.entities[e.entity] = moved
    r._population[(e.spec, e.layer, e.state)] -= 1
    r._population[(e.spec, e.layer, target)] += 1
    _track_slot(r, e, moved, step)
    retired = r._retired[e.spec]
    if target in retired:
        _retire(r, moved)
    elif e.state in retired:  # back in the live set: revive, recycle
        r._live[e.entity] = None


def _last_transition(ev: Record) -> dict[str, Any]:
    """The facts of an applied move an entity keeps; .get: records written before
    `triggered_by` and `metadata` existed lack them."""
    metadata = ev.get("metadata")
    return {
        "from_state": ev["from_state"],
        "to_state": ev["to_state"],
        "step": ev["step"],
        "reason": ev.get("reason", ""),
        "triggered_by": ev.get("triggered_by"),
        "metadata": dict(metadata) if metadata and isinstance(metadata, Mapping) else {},
    }


def _retire(r: Registry, e: EntityState) -> None:
    """Drop what only a live entity needs: its windows, the windows about it, its decision keys."""
    name = e.entity
    r._live.pop(name, None)
    r._windows.pop(("entity", name), None)
    for key, named in list(r._windows.items()):
        for metric in [m for m in named if peer_of(m) == name]:
            del named[metric]
        if not named:
            del r._windows[key]
    for action in _ACTIONS:
        r._last_decision.pop((action, name), None)
    if e.slot is None and r.specs[e.spec].state(e.state).terminal:
        r._failures.pop(_slot_key(e), None)  # keyed by the entity itself, which cannot fail again


def _retired(r: Registry, entity: str) -> bool:
    """Tell whether `entity` is registered and out of the live set (unknown names are not)."""
    e = r.entities.get(entity)
    return e is not None and e.state in r._retired[e.spec]


def _track_slot(r: Registry, before: EntityState, after: EntityState, step: int) -> None:
    embargoes = r._embargoes[after.spec]
    if after.state in embargoes and before.state not in embargoes:
        key = _slot_key(after)
        count, _ = r._failures.get(key, (0, 0))
        r._failures[key] = (count + 1, step)  # the backoff counts from entering the embargo
    elif after.state in r._successes[after.spec] and r._failures:
        r._failures.pop(_slot_key(after), None)
    if after.slot is not None:
        holder_key = (after.spec, after.layer, after.slot)
        if after.state not in r._retired[after.spec]:  # holds_slot, from the precomputed sets
            r._slots[holder_key] = after.entity
        elif r._slots.get(holder_key) == after.entity:
            del r._slots[holder_key]


def _on_transition_rejected(r: Registry, ev: Record) -> None:
    e = r.entities.get(ev["entity"])
    if e is None:
        raise InconsistentEventError(f"seq {ev['seq']}: rejection for unknown entity {ev['entity']!r}")
    # Built directly: dataclasses.replace costs more than the rest of the fold together.
    r.entities[e.entity] = EntityState(
        e.entity,
        e.spec,
        e.state,
        e.slot,
        e.layer,
        e.parent,
        e.born_step,
        e.entered_step,
        e.transitions,
        e.rejections + 1,
        e.history,
        e.attrs,
        e.last_transition,
        e.entered_ts,
    )


def _on_metrics_observed(r: Registry, ev: Record) -> None:
    entity, layer, metrics = ev["entity"], ev["layer"], ev["metrics"]
    key: _MetricKey = (
        ("entity", entity) if entity is not None else ("layer", layer) if layer is not None else ("run", None)
    )
    owner = r.entities.get(entity) if entity is not None else None  # inlined: the hot path
    if owner is not None and owner.state in r._retired[owner.spec]:
        return  # recorded in the log; the registry keeps windows of live entities only
    windows = r._windows.get(key)
    for name, value in metrics.items():
        window = None if windows is None else windows.get(name)
        if window is None:
            if "." in name and _retired(r, peer_of(name)):
                continue  # a per-peer window about an entity that can no longer act
            if windows is None:
                windows = r._windows[key] = {}
            window = windows[name] = deque(maxlen=r.window)
        window.append(value)


def _on_decision_made(r: Registry, ev: Record) -> None:
    action, step = ev["action"], ev["step"]
    r._cycle[action] += 1
    for key in {None, ev["layer"], ev["entity"], ev["parent"]}:
        if not (isinstance(key, str) and _retired(r, key)):
            r._last_decision[(action, key)] = step


def _on_step_sealed(r: Registry, ev: Record) -> None:
    r.sealed_step = ev["step"]
    r._cycle.clear()


def _on_actions_verified(r: Registry, ev: Record) -> None:
    r.verified_step = ev["step"]


def _on_checkpoint(r: Registry, ev: Record) -> None:
    r.last_checkpoint = {k: ev[k] for k in ("checkpoint_id", "path", "sha256", "upto_seq")}


_CHECKPOINT_PLACE = {"save": "active", "archive": "archive", "corrupt": "corrupt"}


def _on_checkpoint_recorded(r: Registry, ev: Record) -> None:
    action, checkpoint_id = ev["action"], ev["checkpoint_id"]
    if action == "delete":
        r.checkpoints.pop(checkpoint_id, None)
    elif action in _CHECKPOINT_PLACE:
        r.checkpoints[checkpoint_id] = _CHECKPOINT_PLACE[action]
    # a restore leaves the checkpoint where it is


_HANDLERS: dict[str, Callable[[Registry, Record], None]] = {
    "RunStarted": _on_run_started,
    "RunStateChanged": _on_run_state_changed,
    "EntityRegistered": _on_entity_registered,
    "GateChecked": lambda r, ev: None,  # gate statistics are a projection (projections.metrics)
    "GatesChecked": lambda r, ev: None,
    "TransitionApplied": _on_transition_applied,
    "TransitionRejected": _on_transition_rejected,
    "MetricsObserved": _on_metrics_observed,
    "DecisionMade": _on_decision_made,
    "StepSealed": _on_step_sealed,
    "ActionsVerified": _on_actions_verified,
    "DivergenceDetected": lambda r, ev: None,  # an incident for the audit trail; state is unchanged
    "CheckpointSaved": _on_checkpoint,
    "CheckpointRestored": _on_checkpoint,
    "CheckpointRecorded": _on_checkpoint_recorded,
    "RewardRecorded": lambda r, ev: None,  # training data for a policy; the run's state is unchanged
}
_STATELESS = frozenset({"GateChecked", "GatesChecked", "DivergenceDetected", "RewardRecorded"})
"""The kinds whose handler does nothing: the batched fold skips the call (half a replay's records)."""

"""The registry: the state of one run, and the one fold that builds it from events.

`fold(registry, event)` is the only way the registry changes. It is deterministic: it reads
nothing but the registry and the event (no clock, no randomness, no I/O), checks that the
event's seq is exactly one past the last, and checks the event against the registry before it
changes anything, so a refused event leaves the registry as it was. It updates the registry in
place and returns it; take `registry.copy()` first to keep an earlier state.

The fold reads events as field mappings, so the same code applies a validated event model and,
on the trusted bulk-replay path, a raw record read back from our own log; `fold_lines` applies
a page of a JSONL log's typed line structs with the same handlers, reading fields by attribute.
Its handlers, one per kind, are in `lifecycle_es._fold`; they change the registry's tables only
through its writing interface (`_add`, `_move`, `_reject`, `_observe`, `_decide`, `_seal`),
which keeps them consistent.

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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from lifecycle_es._entity import HISTORY_LIMIT, EntityState, SlotKey, holds_slot, peer_of, slot_key
from lifecycle_es._fold import fold, fold_lines, fold_record, fold_records, read_fields
from lifecycle_es._registry_plain import load_plain, registry_to_plain
from lifecycle_es.errors import UnknownEntityError
from lifecycle_es.events import Action
from lifecycle_es.spec import Spec, StateCategory

__all__ = [
    "HISTORY_LIMIT",
    "EntityState",
    "Registry",
    "fold",
    "fold_lines",
    "fold_record",
    "fold_records",
    "holds_slot",
    "peer_of",
    "read_fields",
]

_ACTIONS = tuple(Action)  # iterating the enum class itself is slow on the fold's path
_MetricKey = tuple[str, str | int | None]  # ("entity", id) | ("layer", n) | ("run", None)


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
        self._slots: dict[SlotKey, str] = {}
        self._failures: dict[SlotKey, tuple[int, int]] = {}
        self._population: Counter[tuple[str, int | None, str]] = Counter()
        self._windows: dict[_MetricKey, dict[str, deque[float]]] = {}
        """Metric windows of live entities, layers and the run; an owner has at least one."""
        self._cycle: Counter[str] = Counter()
        self._unsettled: dict[str, int] = {}
        """Refusals counted during a fold and not yet in their entities' records (see `_reject`);
        empty between folds."""
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
        return self._failures.get(slot_key(entity))

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
        return registry_to_plain(self)

    @classmethod
    def from_state(cls, specs: Mapping[str, Spec], state: Mapping[str, Any]) -> Registry:
        """Rebuild a registry from `to_state()` output; the specs must include every spec it uses."""
        registry = cls(specs, window=state["window"])
        load_plain(registry, state)
        return registry

    # -- the fold's writing interface: `lifecycle_es._fold`'s handlers change the tables only here

    def _add(self, e: EntityState) -> None:
        """Place a newly registered entity: its record, the live set, its population, its slot."""
        self.entities[e.entity] = e
        if e.state not in self._retired[e.spec]:
            self._live[e.entity] = None
        self._population[(e.spec, e.layer, e.state)] += 1
        if e.slot is not None:
            self._slots[(e.spec, e.layer, e.slot)] = e.entity

    def _move(self, before: EntityState, after: EntityState, step: int) -> None:
        """Put `after` in place of `before`, which moved state at `step`: populations, the slot,
        its embargo count, and the live set (leaving it drops the windows; revive, recycle)."""
        self.entities[after.entity] = after
        self._population[(before.spec, before.layer, before.state)] -= 1
        self._population[(after.spec, after.layer, after.state)] += 1
        self._track_slot(before, after, step)
        retired = self._retired[after.spec]
        if after.state in retired:
            self._retire(after)
        elif before.state in retired:  # back in the live set: revive, recycle
            self._live[after.entity] = None

    def _reject(self, entity: str) -> None:
        """Count a refused move of a registered entity. The count reaches the entity's record
        when it next moves or when the fold ends (`_settle`): rebuilding the immutable record
        for each refusal cost a third of a replay's fold (measured, 300k events)."""
        self._unsettled[entity] = self._unsettled.get(entity, 0) + 1

    def _settle(self) -> None:
        """Write the refusals counted by `_reject` into their entities' records."""
        for name, count in self._unsettled.items():
            self.entities[name] = dataclasses.replace(
                self.entities[name], rejections=self.entities[name].rejections + count
            )
        self._unsettled.clear()

    def _observe(self, entity: str | None, layer: int | None, metrics: Mapping[str, float]) -> None:
        """Append observed values to the windows of an entity, a layer or the run."""
        key: _MetricKey = (
            ("entity", entity)
            if entity is not None
            else ("layer", layer)
            if layer is not None
            else ("run", None)
        )
        owner = self.entities.get(entity) if entity is not None else None  # inlined: the hot path
        if owner is not None and owner.state in self._retired[owner.spec]:
            return  # recorded in the log; the registry keeps windows of live entities only
        windows = self._windows.get(key)
        for name, value in metrics.items():
            window = None if windows is None else windows.get(name)
            if window is None:
                if "." in name and self._is_out(peer_of(name)):
                    continue  # a per-peer window about an entity that can no longer act
                if windows is None:
                    windows = self._windows[key] = {}
                window = windows[name] = deque(maxlen=self.window)
            window.append(value)

    def _decide(self, action: str, step: int, keys: Iterable[str | int | None]) -> None:
        """Count an `action` decision this cycle and note its step for each key it concerns."""
        self._cycle[action] += 1
        for key in keys:
            if not (isinstance(key, str) and self._is_out(key)):
                self._last_decision[(action, key)] = step

    def _seal(self, step: int) -> None:
        """Note the sealed step; a new decision cycle begins."""
        self.sealed_step = step
        self._cycle.clear()

    def _is_out(self, entity: str) -> bool:
        """Tell whether `entity` is registered and out of the live set (unknown names are not)."""
        e = self.entities.get(entity)
        return e is not None and e.state in self._retired[e.spec]

    def _retire(self, e: EntityState) -> None:
        """Drop what only a live entity needs: its windows, the windows about it, its decision keys."""
        name = e.entity
        self._live.pop(name, None)
        self._windows.pop(("entity", name), None)
        for key, named in list(self._windows.items()):
            for metric in [m for m in named if peer_of(m) == name]:
                del named[metric]
            if not named:
                del self._windows[key]
        for action in _ACTIONS:
            self._last_decision.pop((action, name), None)
        if e.slot is None and self.specs[e.spec].state(e.state).terminal:
            self._failures.pop(slot_key(e), None)  # keyed by the entity itself, which cannot fail again

    def _track_slot(self, before: EntityState, after: EntityState, step: int) -> None:
        embargoes = self._embargoes[after.spec]
        if after.state in embargoes and before.state not in embargoes:
            key = slot_key(after)
            count, _ = self._failures.get(key, (0, 0))
            self._failures[key] = (count + 1, step)  # the backoff counts from entering the embargo
        elif after.state in self._successes[after.spec] and self._failures:
            self._failures.pop(slot_key(after), None)
        if after.slot is not None:
            holder_key = (after.spec, after.layer, after.slot)
            if after.state not in self._retired[after.spec]:  # holds_slot, from the precomputed sets
                self._slots[holder_key] = after.entity
            elif self._slots.get(holder_key) == after.entity:
                del self._slots[holder_key]

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
            "_unsettled",
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

"""Registry views: the registry as a projection, with queries by state, layer, category and name.

The projection folds records with the registry's own fold (`fold_records`), so it holds exactly
the registry a writer holds at the same seq; the queries only read it.

Named queries (seeds/004's "operational", "available for tasks", "in error", "in maintenance")
are state sets declared per spec, as data, in `QUERIES`. They live here and not on `Spec`
because they are a reading of a spec, not part of its transition table, and because DevCycle's
sets cut across categories: its `is_operational` leaves out STARTING (ACTIVE) and its
`is_in_maintenance` takes UPDATING (TRANSITIONAL) but not OFFLINE (MAINTENANCE). So the agent
spec's sets are DevCycle's, member by member; every other spec's are derived from its
categories by `derived_queries`. A projection may be given other or extra sets.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType

from lifecycle_es.agents import states as agent_states
from lifecycle_es.codec import TypedLines
from lifecycle_es.errors import SpecError, UsageError
from lifecycle_es.registry import EntityState, Registry, fold_lines, fold_records
from lifecycle_es.spec import Spec, StateCategory
from lifecycle_es.specs import BUILTIN_SPECS
from projections._projection import Projection, Record, Snapshot

__all__ = ["QUERIES", "Query", "RegistryProjection", "derived_queries"]


class Query(StrEnum):
    """The names of the queries of seeds/004, declared for every built-in spec."""

    OPERATIONAL = "operational"
    AVAILABLE = "available"
    IN_ERROR = "in_error"
    IN_MAINTENANCE = "in_maintenance"


QuerySets = Mapping[str, frozenset[str]]
"""Query name -> the names of the states that answer it, for one spec."""


def derived_queries(spec: Spec) -> QuerySets:
    """Return a spec's named query sets derived from its state categories.

    operational: ACTIVE. available: ACTIVE too, since only the agent spec has a busy state to
    take away. in_error: ERROR and FAILURE. in_maintenance: MAINTENANCE.
    """
    active = spec.states_in(StateCategory.ACTIVE)
    return MappingProxyType(
        {
            Query.OPERATIONAL: active,
            Query.AVAILABLE: active,
            Query.IN_ERROR: spec.states_in(StateCategory.ERROR, StateCategory.FAILURE),
            Query.IN_MAINTENANCE: spec.states_in(StateCategory.MAINTENANCE),
        }
    )


_AGENT_QUERIES: QuerySets = MappingProxyType(
    {
        # DevCycle's AgentLifecycleManager predicates (reference/seed-projects.md section 3.3),
        # the same sets the agent service answers with.
        Query.OPERATIONAL: agent_states.OPERATIONAL,
        Query.AVAILABLE: agent_states.AVAILABLE,
        Query.IN_ERROR: agent_states.IN_ERROR,
        Query.IN_MAINTENANCE: agent_states.IN_MAINTENANCE,
    }
)

QUERIES: Mapping[str, QuerySets] = MappingProxyType(
    {
        name: _AGENT_QUERIES if name == "agent" else derived_queries(spec)
        for name, spec in BUILTIN_SPECS.items()
    }
)
"""The named query sets of the built-in specs: spec name -> query name -> state names."""


class RegistryProjection(Projection):
    """The registry of a run as a projection, with the queries of a lifecycle dashboard.

    Every query returns `EntityState`s sorted by entity id. A filter left as None does not
    filter: `layer=None` means every layer, not "entities without a layer".
    """

    name = "registry"

    def __init__(
        self,
        specs: Mapping[str, Spec] | Iterable[Spec] | None = None,
        *,
        window: int = 50,
        queries: Mapping[str, QuerySets] | None = None,
    ) -> None:
        """Build an empty registry over `specs` (the built-in specs by default).

        `queries` adds or replaces named query sets per spec over `QUERIES`; a spec with none
        gets `derived_queries`. Every state named must belong to its spec.
        """
        super().__init__()
        specs = BUILTIN_SPECS if specs is None else specs
        spec_map = dict(specs) if isinstance(specs, Mapping) else {s.name: s for s in specs}
        self.registry = Registry(spec_map, window=window)
        self.queries = _resolve_queries(spec_map, queries or {})
        """Spec name -> query name -> state names, for every spec of the registry."""

    # -- the projection ------------------------------------------------------------------------

    def _apply_batch(self, records: Sequence[Record]) -> None:
        try:
            fold_records(self.registry, records)
        finally:
            # A refused record leaves the registry at the one before it; so is the projection.
            self.seq = self.registry.seq

    def apply_lines(self, lines: TypedLines) -> int:
        """Fold a page of typed lines without building its records (`fold_lines`)."""
        return self._apply_following(lines, self._fold_lines)

    def _fold_lines(self, lines: TypedLines) -> None:
        try:
            fold_lines(self.registry, lines)
        finally:
            self.seq = self.registry.seq

    def snapshot(self) -> Snapshot:
        """Return the registry as plain data (`Registry.to_state`) with the projection's seq."""
        return Snapshot(kind=self.name, seq=self.seq, state=copy.deepcopy(self.registry.to_state()))

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the registry with a snapshot's; the specs stay those of this projection."""
        if snapshot.kind != self.name or snapshot.state.get("seq") != snapshot.seq:
            raise UsageError(
                f"cannot restore a {snapshot.kind!r} snapshot at seq {snapshot.seq} into {self.name!r}"
            )
        self.registry = Registry.from_state(self.registry.specs, copy.deepcopy(snapshot.state))
        self.seq = snapshot.seq

    # -- queries -------------------------------------------------------------------------------

    def get(self, entity: str) -> EntityState:
        """Return one entity, or raise `UnknownEntityError`."""
        return self.registry.get(entity)

    def entities(
        self,
        spec: str | None = None,
        state: str | None = None,
        layer: int | None = None,
        category: StateCategory | None = None,
    ) -> list[EntityState]:
        """Return the entities matching every filter given."""
        if spec is not None:
            self._spec(spec)
        found = [
            e
            for e in self.registry
            if (spec is None or e.spec == spec)
            and (state is None or e.state == state)
            and (layer is None or e.layer == layer)
            and (category is None or e.state in self.registry.specs[e.spec].states_in(category))
        ]
        return sorted(found, key=_by_id)

    def in_state(self, spec: str, *states: str) -> list[EntityState]:
        """Return the entities of `spec` in any of `states`; an unknown state name raises."""
        found = self._spec(spec)
        for name in states:
            found.state(name)
        wanted = frozenset(states)
        return sorted((e for e in self.registry if e.spec == spec and e.state in wanted), key=_by_id)

    def by_layer(self, layer: int) -> list[EntityState]:
        """Return the entities of `layer`, of every spec."""
        return self.entities(layer=layer)

    def in_category(self, category: StateCategory, spec: str | None = None) -> list[EntityState]:
        """Return the entities whose state is in `category`, of one spec or of all."""
        return self.entities(spec=spec, category=StateCategory(category))

    def query(self, name: str, spec: str | None = None) -> list[EntityState]:
        """Return the entities answering the named query, of one spec or of all.

        An unknown query name raises `UsageError` naming the known ones.
        """
        known = sorted({q for sets in self.queries.values() for q in sets})
        if name not in known:
            raise UsageError(f"unknown query {name!r}; the known queries are: {', '.join(known)}")
        if spec is not None:
            self._spec(spec)
        return sorted(
            (
                e
                for e in self.registry
                if (spec is None or e.spec == spec) and e.state in self.queries[e.spec].get(name, ())
            ),
            key=_by_id,
        )

    def operational(self, spec: str | None = None) -> list[EntityState]:
        """Return the operational entities (DevCycle's `get_operational_agents`)."""
        return self.query(Query.OPERATIONAL, spec)

    def available(self, spec: str | None = None) -> list[EntityState]:
        """Return the entities available for work (DevCycle's `get_available_agents`)."""
        return self.query(Query.AVAILABLE, spec)

    def in_error(self, spec: str | None = None) -> list[EntityState]:
        """Return the entities in error (DevCycle's `get_agents_in_error`)."""
        return self.query(Query.IN_ERROR, spec)

    def in_maintenance(self, spec: str | None = None) -> list[EntityState]:
        """Return the entities in maintenance (DevCycle's `get_agents_in_maintenance`)."""
        return self.query(Query.IN_MAINTENANCE, spec)

    def time_in_state(self, entity: str, step: int | None = None) -> int:
        """Return the steps `entity` has spent in its current state as of `step` (default: now).

        "Now" is the registry's step, the latest step of any event folded.
        """
        return self.registry.get(entity).time_in_state(self.registry.step if step is None else step)

    def population(self, spec: str, layer: int | None = None) -> dict[str, int]:
        """Return how many entities of `spec` (in `layer`, or in all) are in each of its states.

        Every state of the spec is a key, in state-code order, zeros included.
        """
        found = self._spec(spec)
        counts = Counter(
            e.state for e in self.registry if e.spec == spec and (layer is None or e.layer == layer)
        )
        return {s.name: counts[s.name] for s in found.states}

    def _spec(self, name: str) -> Spec:
        try:
            return self.registry.specs[name]
        except KeyError:
            known = ", ".join(sorted(self.registry.specs))
            raise SpecError(f"unknown spec {name!r}; this registry knows: {known}") from None


def _by_id(e: EntityState) -> str:
    return e.entity


def _resolve_queries(specs: Mapping[str, Spec], extra: Mapping[str, QuerySets]) -> dict[str, QuerySets]:
    unknown = sorted(set(extra) - set(specs))
    if unknown:
        raise SpecError(f"queries name specs the registry does not have: {unknown}")
    resolved: dict[str, QuerySets] = {}
    for name, spec in specs.items():
        base = QUERIES[name] if name in QUERIES and spec is BUILTIN_SPECS.get(name) else derived_queries(spec)
        merged = {**base, **{q: frozenset(s) for q, s in extra.get(name, {}).items()}}
        for query, states in merged.items():
            for state in sorted(states):
                if not spec.has_state(state):
                    raise SpecError(f"query {query!r} of spec {name!r} names unknown state {state!r}")
        resolved[name] = MappingProxyType(merged)
    return resolved

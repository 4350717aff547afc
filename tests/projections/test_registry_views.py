"""The registry projection: queries after scripted runs, batch and idempotent apply, snapshots."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lifecycle_es import (
    InconsistentEventError,
    InvalidTransitionError,
    Lifecycle,
    SequenceGapError,
    SpecError,
    StateCategory,
    UnknownEntityError,
    UnknownStateError,
    UsageError,
)
from lifecycle_es.specs import AGENT_SPEC, BUILTIN_SPECS, KASMINA_SPEC, AgentState
from projections import RegistryProjection, Snapshot
from projections.registry_views import QUERIES, Query, derived_queries

A = AgentState
RoundTrip = Callable[[Snapshot], Snapshot]

# DevCycle's AgentLifecycleService flows, each a list of (target, step) after registration.
_DEPLOY = [(A.DEPLOYING, 1), (A.DEPLOYED, 2)]
_START = [*_DEPLOY, (A.STARTING, 3), (A.ONLINE, 5)]
AGENT_FLOWS: dict[str, list[tuple[AgentState, int]]] = {
    "agent-busy": [*_START, (A.BUSY, 8)],  # assign_task
    "agent-idle": [*_START, (A.BUSY, 6), (A.IDLE, 9)],  # complete_task
    "agent-online": [*_START],  # start_agent
    "agent-error": [*_START, (A.ERROR, 10)],  # handle_error
    "agent-maintenance": [*_START, (A.MAINTENANCE, 11)],  # put_in_maintenance
    "agent-suspended": [*_START, (A.SUSPENDED, 12)],
    "agent-updating": [*_DEPLOY, (A.UPDATING, 7)],
    "agent-timeout": [*_DEPLOY, (A.STARTING, 4), (A.TIMEOUT, 13)],
    "agent-failed": [(A.DEPLOYING, 1), (A.FAILED, 14)],
    "agent-starting": [*_DEPLOY, (A.STARTING, 15)],
    "agent-offline": [*_START, (A.STOPPING, 16), (A.OFFLINE, 17)],  # stop_agent
    "agent-registered": [],
}
LAST_STEP = 20


def _scripted_run() -> Lifecycle:
    """Twelve agents along DevCycle's flows, three Kasmina seeds and a pruned module slot.

    Everything registers at step 0; the transitions then run in step order, as a log requires.
    """
    lc = Lifecycle(run_id="views")
    lc.start()
    moves: list[tuple[int, str, str, dict[str, float]]] = []
    for layer, (agent, flow) in enumerate(AGENT_FLOWS.items()):
        lc.register(agent, "agent", layer=layer % 2)
        moves += [(step, agent, target, {}) for target, step in flow]
    for name, layer, slot in (("seed-0", 0, 0), ("seed-1", 0, 1), ("seed-2", 1, 0)):
        lc.register(name, "kasmina", layer=layer, slot=slot)
    lc.register("module-0", "module", layer=1, slot=1)
    moves += [
        (1, "seed-1", "GERMINATED", {}),
        (2, "seed-1", "TRAINING", {}),
        (3, "seed-2", "GERMINATED", {}),
        (4, "seed-2", "CANCELLED", {}),
        (1, "module-0", "INSTANTIATED", {"available_slots": 1}),
        (2, "module-0", "TRAINING", {}),
        (6, "module-0", "PRUNED", {}),
    ]
    for step, entity, target, metrics in sorted(moves, key=lambda m: m[0]):
        lc.transition(entity, target, step=step, metrics=metrics)
    with pytest.raises(InvalidTransitionError):  # too early and too poor: recorded, refused
        lc.transition("seed-1", "GRAFTING", step=18, metrics={"reconstruction_loss": 0.5})
    lc.seal(step=LAST_STEP)
    return lc


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    """The records of the scripted run, as read back from its log."""
    with _scripted_run() as lc:
        return lc.log.read()


@pytest.fixture
def views(records: list[dict[str, Any]]) -> RegistryProjection:
    """A registry projection that applied the whole scripted run in one batch."""
    projection = RegistryProjection()
    projection.apply(records)
    return projection


def ids(entities: list[Any]) -> list[str]:
    return [e.entity for e in entities]


# -- queries ---------------------------------------------------------------------------------------


def test_projection_holds_the_writers_registry() -> None:
    """Folding the log through the projection gives exactly the registry the writer built."""
    lc = _scripted_run()
    projection = RegistryProjection()
    assert projection.apply(lc.log.read()) == lc.registry.seq
    assert projection.registry == lc.registry
    assert projection.seq == lc.registry.seq


def test_devcycle_queries_on_agents(views: RegistryProjection) -> None:
    """The four seeds/004 queries return exactly DevCycle's agents for each predicate."""
    assert ids(views.operational("agent")) == ["agent-busy", "agent-idle", "agent-online"]
    assert ids(views.available("agent")) == ["agent-idle", "agent-online"]
    assert ids(views.in_error("agent")) == ["agent-error", "agent-failed", "agent-timeout"]
    assert ids(views.in_maintenance("agent")) == ["agent-maintenance", "agent-suspended", "agent-updating"]


def test_named_queries_across_specs(views: RegistryProjection) -> None:
    """Without a spec a named query spans every spec, each answered by its own state set."""
    assert ids(views.query("operational")) == ["agent-busy", "agent-idle", "agent-online", "seed-1"]
    assert ids(views.query(Query.IN_ERROR)) == [
        "agent-error",
        "agent-failed",
        "agent-timeout",
        "module-0",
        "seed-2",
    ]
    assert ids(views.in_maintenance("kasmina")) == []


def test_category_queries_follow_the_spec(views: RegistryProjection) -> None:
    """Category queries use the spec's categories, which differ from DevCycle's predicate sets."""
    active = ["agent-busy", "agent-idle", "agent-online", "agent-starting"]
    assert ids(views.in_category(StateCategory.ACTIVE, "agent")) == active
    assert ids(views.in_category(StateCategory.MAINTENANCE)) == [
        "agent-maintenance",
        "agent-offline",
        "agent-suspended",
    ]
    assert ids(views.entities(category=StateCategory.FAILURE)) == ["module-0", "seed-2"]
    assert ids(views.entities(spec="kasmina", category=StateCategory.INITIAL)) == ["seed-0"]


def test_state_and_layer_queries(views: RegistryProjection) -> None:
    """in_state, by_layer and combined filters return the right entities sorted by id."""
    assert ids(views.in_state("agent", A.BUSY, A.IDLE)) == ["agent-busy", "agent-idle"]
    assert ids(views.in_state("kasmina", "TRAINING")) == ["seed-1"]
    assert ids(views.entities(spec="agent", state="online")) == ["agent-online"]
    # Agents alternate layers in the flows' declaration order: even positions are layer 0.
    agents_layer_1 = sorted(list(AGENT_FLOWS)[1::2])
    assert ids(views.by_layer(1)) == sorted([*agents_layer_1, "module-0", "seed-2"])
    assert ids(views.entities(spec="kasmina", layer=0)) == ["seed-0", "seed-1"]
    assert len(views.entities()) == len(AGENT_FLOWS) + 4


def test_population_counts_every_state(views: RegistryProjection) -> None:
    """population lists every state of the spec in code order, zeros included, per layer or overall."""
    agents = views.population("agent")
    assert list(agents) == [s.name for s in AGENT_SPEC.states]
    assert sum(agents.values()) == len(AGENT_FLOWS)
    assert agents["online"] == 1 and agents["busy"] == 1 and agents["deleted"] == 0
    assert views.population("kasmina", layer=0) == {
        s.name: {"DORMANT": 1, "TRAINING": 1}.get(s.name, 0) for s in KASMINA_SPEC.states
    }
    assert views.population("kasmina", layer=1)["CANCELLED"] == 1


def test_time_in_state(views: RegistryProjection) -> None:
    """time_in_state counts from the entered step to the registry's step, or to a given step."""
    assert views.registry.step == LAST_STEP
    assert views.time_in_state("agent-busy") == LAST_STEP - 8
    assert views.time_in_state("agent-registered") == LAST_STEP
    assert views.time_in_state("seed-1") == LAST_STEP - 2  # the refused graft did not move it
    assert views.time_in_state("agent-offline", step=30) == 30 - 17
    with pytest.raises(UnknownEntityError):
        views.time_in_state("nobody")


def test_bad_query_arguments_raise(views: RegistryProjection) -> None:
    """Unknown query names, states and specs raise domain errors naming the bad value."""
    with pytest.raises(UsageError, match="'routing'"):
        views.query("routing")
    with pytest.raises(UnknownStateError, match="'sleeping'"):
        views.in_state("agent", "sleeping")
    with pytest.raises(SpecError, match="'robot'"):
        views.entities(spec="robot")
    with pytest.raises(SpecError, match="'robot'"):
        views.population("robot")


# -- query sets as data ------------------------------------------------------------------------------


def test_agent_query_sets_are_devcycles() -> None:
    """The agent's sets are DevCycle's predicates, member for member."""
    agent = QUERIES["agent"]
    assert agent[Query.OPERATIONAL] == {"online", "busy", "idle"}
    assert agent[Query.AVAILABLE] == {"online", "idle"}
    assert agent[Query.IN_ERROR] == {"error", "failed", "timeout"}
    assert agent[Query.IN_MAINTENANCE] == {"maintenance", "suspended", "updating"}


@pytest.mark.parametrize("name", sorted(set(BUILTIN_SPECS) - {"agent"}))
def test_other_specs_derive_query_sets_from_categories(name: str) -> None:
    """Every other built-in spec answers the four queries from its state categories."""
    spec = BUILTIN_SPECS[name]
    sets = QUERIES[name]
    assert set(sets) == set(Query)
    assert sets == derived_queries(spec)
    assert sets[Query.OPERATIONAL] == spec.states_in(StateCategory.ACTIVE)
    assert sets[Query.IN_ERROR] == spec.states_in(StateCategory.ERROR, StateCategory.FAILURE)
    assert sets[Query.IN_MAINTENANCE] == spec.states_in(StateCategory.MAINTENANCE)


def test_custom_query_sets(views: RegistryProjection, records: list[dict[str, Any]]) -> None:
    """A projection takes extra query sets per spec, and refuses one naming an unknown state."""
    routing = {"kasmina": {"routes": frozenset({"GRAFTING", "TRAINING", "FINE_TUNING"})}}
    custom = RegistryProjection(queries=routing)
    custom.apply(records)
    assert ids(custom.query("routes")) == ["seed-1"]
    assert ids(custom.operational("agent")) == ids(views.operational("agent"))
    with pytest.raises(SpecError, match="'ROUTING'"):
        RegistryProjection(queries={"kasmina": {"routes": frozenset({"ROUTING"})}})
    with pytest.raises(SpecError, match="robot"):
        RegistryProjection(queries={"robot": {"routes": frozenset()}})


# -- the projection protocol -------------------------------------------------------------------------


def test_batch_equals_one_by_one(views: RegistryProjection, records: list[dict[str, Any]]) -> None:
    """Applying the records one at a time gives the same registry as one batch."""
    single = RegistryProjection()
    for record in records:
        assert single.apply([record]) == 1
    assert single.registry == views.registry
    assert single.seq == views.seq == len(records)


def test_reapplying_changes_nothing(views: RegistryProjection, records: list[dict[str, Any]]) -> None:
    """A batch already applied is skipped, and an overlapping batch applies only its new records."""
    before = views.registry.copy()
    assert views.apply(records) == 0
    assert views.registry == before
    partial = RegistryProjection()
    partial.apply(records[:30])
    assert partial.apply(records[10:]) == len(records) - 30
    assert partial.registry == views.registry


def test_gap_raises_and_changes_nothing(records: list[dict[str, Any]]) -> None:
    """A batch that skips a seq raises SequenceGapError before the registry changes."""
    projection = RegistryProjection()
    projection.apply(records[:5])
    before = projection.registry.copy()
    with pytest.raises(SequenceGapError):
        projection.apply(records[6:])
    assert projection.registry == before
    assert projection.seq == 5


def test_refused_record_leaves_projection_at_last_good_seq(records: list[dict[str, Any]]) -> None:
    """A record the fold refuses mid-batch leaves seq and registry at the record before it."""
    projection = RegistryProjection()
    bad = {
        **records[3],
        "seq": 5,
        "kind": "TransitionApplied",
        "entity": "ghost",
        "from_state": "DORMANT",
        "to_state": "GERMINATED",
        "trigger": "germinate",
    }
    with pytest.raises(InconsistentEventError, match="ghost"):
        projection.apply([*records[:4], bad])
    assert projection.seq == projection.registry.seq == 4
    assert projection.apply(records) == len(records) - 4


def test_snapshot_restore_continue(
    records: list[dict[str, Any]], views: RegistryProjection, round_trip: RoundTrip
) -> None:
    """A snapshot read back from JSON or torch, restored and fed the rest, equals the full apply."""
    half = len(records) // 2
    first = RegistryProjection()
    first.apply(records[:half])
    snapshot = round_trip(first.snapshot())
    assert snapshot.seq == half
    resumed = RegistryProjection()
    resumed.restore(snapshot)
    assert resumed.registry == first.registry
    resumed.apply(records)  # the first half is skipped as already applied
    assert resumed.registry == views.registry
    assert resumed.seq == views.seq
    assert ids(resumed.available()) == ids(views.available())


def test_snapshot_is_detached(records: list[dict[str, Any]]) -> None:
    """Folding more after a snapshot, or editing the snapshot, leaves the other untouched."""
    projection = RegistryProjection()
    projection.apply(records[:5])
    snapshot = projection.snapshot()
    frozen = repr(snapshot.state)
    projection.apply(records)
    assert repr(snapshot.state) == frozen
    snapshot.state["run_config"]["edited"] = True
    assert "edited" not in projection.registry.run_config


def test_restore_refuses_another_kind() -> None:
    """Restoring a snapshot of another projection raises UsageError."""
    with pytest.raises(UsageError, match="'metrics'"):
        RegistryProjection().restore(Snapshot(kind="metrics", seq=0, state={"seq": 0}))

"""The five built-in specs match their sources, export the documented shapes, and validate."""

from __future__ import annotations

import json
import re

import pytest

from lifecycle_es import Spec, SpecError, StateCategory, StateDef, TransitionDef, UnknownStateError
from lifecycle_es.gates import MIN_TIME_GATE
from lifecycle_es.specs import (
    AGENT_SPEC,
    BUILTIN_SPECS,
    EXPERT_SPEC,
    KASMINA_SPEC,
    MODULE_SPEC,
    RUN_SPEC,
    AgentState,
    ExpertState,
    KasminaState,
    ModuleState,
    RunHook,
    RunState,
    SpecState,
    TaskState,
    get_spec,
)

ALL_SPECS = list(BUILTIN_SPECS.values())
ENUMS: dict[str, type[SpecState]] = {
    "kasmina": KasminaState,
    "module": ModuleState,
    "expert": ExpertState,
    "run": RunState,
    "agent": AgentState,
    "task": TaskState,
}
# The gate names the spec tables may use (the gate library of seeds/000 and Kasmina's validators).
KNOWN_GATES = {
    "slot_available", "budget_permits", "no_active_transitions", "not_embargoed", "hysteresis",
    "minimum_epochs_trained", "loss_improved", "no_regression",
    "consistent_improvement", "gradient_health",
    "positive_contribution", "contribution_above_cost", "unique_contribution",
    "kasmina.reconstruction", "kasmina.positive_evaluation", "kasmina.negative_evaluation",
    "kasmina.improvement",
}  # fmt: skip


def edges(spec: Spec) -> set[tuple[str, str]]:
    return {(t.source, t.target) for t in spec.transitions}


def names_and_codes(spec: Spec) -> list[tuple[str, int]]:
    return [(s.name, s.code) for s in spec.states]


# -- the registry of built-ins ------------------------------------------------------------


def test_builtin_specs_are_the_six_named_specs_in_list_order() -> None:
    """BUILTIN_SPECS holds kasmina, module, expert, run, agent and task, each under its own name."""
    assert list(BUILTIN_SPECS) == ["kasmina", "module", "expert", "run", "agent", "task"]
    assert [s.name for s in BUILTIN_SPECS.values()] == list(BUILTIN_SPECS)
    assert BUILTIN_SPECS["kasmina"] is KASMINA_SPEC and BUILTIN_SPECS["agent"] is AGENT_SPEC


def test_get_spec_returns_the_builtin_and_rejects_unknown_names_listing_the_known_ones() -> None:
    """get_spec finds a built-in by name and raises SpecError naming all six otherwise."""
    assert get_spec("run") is RUN_SPEC
    with pytest.raises(SpecError) as info:
        get_spec("nope")
    message = str(info.value)
    assert "'nope'" in message
    assert all(name in message for name in BUILTIN_SPECS)


def test_builtin_specs_cannot_be_replaced_through_the_mapping() -> None:
    """BUILTIN_SPECS is read-only, so no caller can swap a spec for everyone else."""
    with pytest.raises(TypeError):
        BUILTIN_SPECS["kasmina"] = RUN_SPEC  # type: ignore[index]


# -- state enums ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_state_enum_matches_the_spec_names_and_codes(spec: Spec) -> None:
    """Each spec's enum lists exactly its states, value = stored name, code = spec code."""
    enum = ENUMS[spec.name]
    assert [(m.value, m.code) for m in enum] == names_and_codes(spec)
    assert [s.code for s in spec.states] == list(range(len(spec.states)))
    for member in enum:
        assert enum.from_code(member.code) is member
        assert member == spec.state(member).name  # compares equal to the stored string


def test_from_code_rejects_codes_outside_the_enum() -> None:
    """A code with no state raises UnknownStateError rather than indexing from the end."""
    with pytest.raises(UnknownStateError):
        KasminaState.from_code(11)
    with pytest.raises(UnknownStateError):
        KasminaState.from_code(-1)


# -- kasmina --------------------------------------------------------------------------------

KASMINA_STATES = [
    ("DORMANT", 0), ("GERMINATED", 1), ("TRAINING", 2), ("GRAFTING", 3), ("STABILIZATION", 4),
    ("EVALUATING", 5), ("FINE_TUNING", 6), ("FOSSILIZED", 7), ("CULLED", 8), ("CANCELLED", 9),
    ("ROLLED_BACK", 10),
]  # fmt: skip
# esperlite RC1 StateTransition.VALID_TRANSITIONS (reference/seed-projects.md section 1.2).
KASMINA_EDGES = {
    ("DORMANT", "GERMINATED"),
    ("GERMINATED", "TRAINING"), ("GERMINATED", "CANCELLED"),
    ("TRAINING", "GRAFTING"), ("TRAINING", "CULLED"), ("TRAINING", "CANCELLED"),
    ("GRAFTING", "STABILIZATION"), ("GRAFTING", "ROLLED_BACK"),
    ("STABILIZATION", "EVALUATING"), ("STABILIZATION", "ROLLED_BACK"),
    ("EVALUATING", "FINE_TUNING"), ("EVALUATING", "CULLED"), ("EVALUATING", "ROLLED_BACK"),
    ("FINE_TUNING", "FOSSILIZED"), ("FINE_TUNING", "CULLED"), ("FINE_TUNING", "ROLLED_BACK"),
}  # fmt: skip


def test_kasmina_has_the_eleven_states_with_codes_zero_to_ten() -> None:
    """The kasmina states are ExtendedLifecycle's 11 names with its values 0..10."""
    assert names_and_codes(KASMINA_SPEC) == KASMINA_STATES
    assert KASMINA_SPEC.initial == ("DORMANT",)


def test_kasmina_has_exactly_the_sixteen_edges_of_valid_transitions() -> None:
    """The kasmina edges are StateTransition.VALID_TRANSITIONS: no more, no fewer."""
    assert len(KASMINA_SPEC.transitions) == 16
    assert edges(KASMINA_SPEC) == KASMINA_EDGES


def test_kasmina_minimum_epochs_in_state_and_the_rollback_exemption() -> None:
    """MIN_EPOCHS_IN_STATE is on the states, and only edges into ROLLED_BACK skip it."""
    minimums = {s.name: s.min_time_in_state for s in KASMINA_SPEC.states if s.min_time_in_state}
    assert minimums == {
        "TRAINING": 100, "GRAFTING": 50, "STABILIZATION": 20, "EVALUATING": 30, "FINE_TUNING": 50,
    }  # fmt: skip
    skipping = {(t.source, t.target) for t in KASMINA_SPEC.transitions if t.skip_min_time}
    assert skipping == {
        (s, "ROLLED_BACK") for s in ("GRAFTING", "STABILIZATION", "EVALUATING", "FINE_TUNING")
    }


def test_guards_put_the_minimum_time_gate_first_unless_the_edge_skips_it() -> None:
    """An edge out of a state with a minimum time is guarded by MIN_TIME_GATE, then its own
    gates; an edge that skips the minimum time, or leaves a state without one, by its own."""
    for t in KASMINA_SPEC.transitions:
        timed = KASMINA_SPEC.state(t.source).min_time_in_state > 0 and not t.skip_min_time
        assert KASMINA_SPEC.guards(t) == ((MIN_TIME_GATE, *t.gates) if timed else t.gates)
    rollback = KASMINA_SPEC.edge("GRAFTING", "ROLLED_BACK")
    assert rollback is not None and MIN_TIME_GATE not in KASMINA_SPEC.guards(rollback)


def test_kasmina_terminal_states_and_validators() -> None:
    """The four sinks are terminal, each metric validator guards its one edge, and CULLED and
    ROLLED_BACK embargo the seed's slot."""
    assert {s.name for s in KASMINA_SPEC.states if s.terminal} == {
        "FOSSILIZED",
        "CULLED",
        "CANCELLED",
        "ROLLED_BACK",
    }
    gated = {(t.source, t.target): t.gates for t in KASMINA_SPEC.transitions if t.gates}
    assert gated == {
        ("TRAINING", "GRAFTING"): ("kasmina.reconstruction",),
        ("EVALUATING", "FINE_TUNING"): ("kasmina.positive_evaluation",),
        ("EVALUATING", "CULLED"): ("kasmina.negative_evaluation",),
        ("FINE_TUNING", "FOSSILIZED"): ("kasmina.improvement",),
    }
    assert {s.name for s in KASMINA_SPEC.states if s.embargo} == {"CULLED", "ROLLED_BACK"}


def test_kasmina_triggers_name_the_action_from_each_state() -> None:
    """Each kasmina edge is fired by its action verb (germinate, graft, cull, rollback, ...)."""
    triggers = {(t.source, t.target): t.trigger for t in KASMINA_SPEC.transitions}
    assert triggers[("DORMANT", "GERMINATED")] == "germinate"
    assert triggers[("TRAINING", "GRAFTING")] == "graft"
    assert {triggers[e] for e in KASMINA_EDGES if e[1] == "CULLED"} == {"cull"}
    assert {triggers[e] for e in KASMINA_EDGES if e[1] == "ROLLED_BACK"} == {"rollback"}
    assert {triggers[e] for e in KASMINA_EDGES if e[1] == "CANCELLED"} == {"cancel"}
    assert KASMINA_SPEC.edge_for_trigger("FINE_TUNING", "fossilize") is not None


# -- module ---------------------------------------------------------------------------------

MODULE_EDGES = {
    ("DORMANT", "INSTANTIATED"): ("slot_available", "budget_permits", "not_embargoed"),
    ("INSTANTIATED", "TRAINING"): (),
    ("TRAINING", "BLENDING"): ("minimum_epochs_trained", "loss_improved", "gradient_health"),
    ("TRAINING", "PRUNED"): (),
    ("BLENDING", "HOLDING"): ("no_regression",),
    ("BLENDING", "PRUNED"): (),
    ("HOLDING", "INTEGRATED"): (
        "consistent_improvement", "positive_contribution", "contribution_above_cost"),
    ("HOLDING", "PRUNED"): (),
    ("PRUNED", "DORMANT"): (),
    ("PRUNED", "EMBARGOED"): (),
    ("EMBARGOED", "DORMANT"): ("not_embargoed",),
}  # fmt: skip


def test_module_states_edges_and_gates() -> None:
    """The module spec has seeds/000's 8 states in order and the edges and gates read from it."""
    assert [s.name for s in MODULE_SPEC.states] == [
        "DORMANT", "INSTANTIATED", "TRAINING", "BLENDING", "HOLDING", "INTEGRATED", "PRUNED",
        "EMBARGOED"]  # fmt: skip
    assert {(t.source, t.target): t.gates for t in MODULE_SPEC.transitions} == MODULE_EDGES
    assert MODULE_SPEC.initial == ("DORMANT",)


def test_module_recycles_slots_so_only_integrated_is_terminal() -> None:
    """PRUNED and EMBARGOED lead back to DORMANT and are not terminal; INTEGRATED is."""
    assert {s.name for s in MODULE_SPEC.states if s.terminal} == {"INTEGRATED"}
    assert MODULE_SPEC.edge("PRUNED", "DORMANT") is not None
    embargo_exit = MODULE_SPEC.edge("EMBARGOED", "DORMANT")
    assert embargo_exit is not None and embargo_exit.gates == ("not_embargoed",)
    assert [s.name for s in MODULE_SPEC.states if s.embargo] == ["EMBARGOED"]


# -- expert ---------------------------------------------------------------------------------

EXPERT_EDGES = {
    ("pending_spawn", "cooling"), ("cooling", "active"), ("active", "dormant"),
    ("dormant", "active"), ("dormant", "pending_prune"), ("pending_prune", "archived"),
    ("archived", "active"),
    # merge: the survivor cools, the absorbed expert is pruned
    ("active", "cooling"), ("active", "pending_prune"),
}  # fmt: skip


def test_expert_states_edges_and_initial_states() -> None:
    """The expert spec has the 6 states, the 7 drawn edges plus merge's 2, and starts in
    pending_spawn or (a model's initial experts) active."""
    assert [s.name for s in EXPERT_SPEC.states] == [
        "pending_spawn",
        "cooling",
        "active",
        "dormant",
        "pending_prune",
        "archived",
    ]
    assert edges(EXPERT_SPEC) == EXPERT_EDGES
    assert EXPERT_SPEC.initial == ("pending_spawn", "active")
    assert EXPERT_SPEC.gate_names == frozenset()
    assert not any(s.terminal for s in EXPERT_SPEC.states)


# -- run ------------------------------------------------------------------------------------

RUN_EDGES = {
    ("pending", "running"), ("running", "stopping"), ("stopping", "stopped"),
    ("stopped", "running"), ("running", "interrupted"), ("interrupted", "running"),
    ("pending", "terminated"), ("running", "terminated"), ("stopped", "terminated"),
    ("interrupted", "terminated"),
}  # fmt: skip


def test_run_states_and_edges() -> None:
    """The run spec has seeds/003's 6 states in order and the edges of its transitions list."""
    assert [s.name for s in RUN_SPEC.states] == [
        "pending",
        "running",
        "stopping",
        "stopped",
        "interrupted",
        "terminated",
    ]
    assert edges(RUN_SPEC) == RUN_EDGES
    assert RUN_SPEC.initial == ("pending",)
    assert {s.name for s in RUN_SPEC.states if s.terminal} == {"terminated"}


def test_run_hooks_fire_on_stop_interruption_termination_and_start() -> None:
    """pre_stop fires before stopping and interrupted, pre_terminate before terminated,
    post_start after running."""
    assert RUN_SPEC.hook_points("pre", RunState.STOPPING) == (RunHook.PRE_STOP,)
    assert RUN_SPEC.hook_points("pre", RunState.INTERRUPTED) == (RunHook.PRE_STOP,)
    assert RUN_SPEC.hook_points("pre", RunState.TERMINATED) == (RunHook.PRE_TERMINATE,)
    assert RUN_SPEC.hook_points("post", RunState.RUNNING) == (RunHook.POST_START,)
    assert RUN_SPEC.hook_points("pre", RunState.RUNNING) == ()
    assert RUN_SPEC.hook_points("post", RunState.STOPPED) == ()


# -- agent ----------------------------------------------------------------------------------

AGENT_STATES = [
    "registered", "deploying", "deployed", "starting", "online", "busy", "idle", "stopping",
    "updating", "scaling", "error", "failed", "timeout", "maintenance", "suspended", "offline",
    "terminated", "deleted",
]  # fmt: skip
# DevCycle AgentLifecycleManager.VALID_TRANSITIONS (reference/seed-projects.md section 3.2).
AGENT_ROWS = {
    "registered": {"deploying", "deleted"},
    "deploying": {"deployed", "failed", "error"},
    "deployed": {"starting", "updating", "deleted"},
    "starting": {"online", "failed", "error", "timeout"},
    "online": {"busy", "idle", "stopping", "updating", "maintenance", "suspended", "offline", "error"},
    "busy": {"idle", "online", "stopping", "maintenance", "suspended", "offline", "error"},
    "idle": {"busy", "online", "stopping", "updating", "maintenance", "suspended", "offline", "error"},
    "stopping": {"offline", "terminated", "error"},
    "updating": {"online", "failed", "error"},
    "scaling": {"online", "busy", "idle", "error"},
    "error": {"online", "offline", "maintenance", "failed"},
    "failed": {"starting", "deploying", "deleted"},
    "timeout": {"offline", "error", "starting"},
    "maintenance": {"online", "offline", "suspended"},
    "suspended": {"online", "maintenance", "offline"},
    "offline": {"starting", "maintenance", "terminated", "deleted"},
    "terminated": {"deleted"},
    "deleted": set(),
}
AGENT_EDGES = {(src, dst) for src, targets in AGENT_ROWS.items() for dst in targets}


def test_agent_has_the_eighteen_states_and_sixty_six_edges() -> None:
    """The agent spec is DevCycle's 18 states in declaration order and its 66 edges exactly."""
    assert names_and_codes(AGENT_SPEC) == [(n, i) for i, n in enumerate(AGENT_STATES)]
    assert len(AGENT_EDGES) == 66
    assert len(AGENT_SPEC.transitions) == 66
    assert edges(AGENT_SPEC) == AGENT_EDGES
    assert all(t.trigger == f"to_{t.target}" for t in AGENT_SPEC.transitions)


def test_agent_categories_follow_the_source_groups_and_scaling_is_initial() -> None:
    """Agent categories are DevCycle's comment groups; SCALING (no way in) is an initial state."""
    assert AGENT_SPEC.states_in(StateCategory.ERROR) == {"error", "failed", "timeout"}
    assert AGENT_SPEC.states_in(StateCategory.ACTIVE) == {"starting", "online", "busy", "idle"}
    assert AGENT_SPEC.states_in(StateCategory.MAINTENANCE) == {"maintenance", "suspended", "offline"}
    assert AGENT_SPEC.states_in(StateCategory.SUCCESS) == {"terminated", "deleted"}
    assert {s.name for s in AGENT_SPEC.states if s.terminal} == {"deleted"}
    assert AGENT_SPEC.initial == ("registered", "scaling")


# -- properties every built-in spec has -----------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_to_json_has_exactly_the_documented_shape_and_order(spec: Spec) -> None:
    """to_json is {name, initial, states, transitions} with the documented keys, states in code
    order, transitions by (from code, to code), and survives a JSON round trip."""
    doc = spec.to_json()
    assert set(doc) == {"name", "initial", "states", "transitions"}
    assert doc["name"] == spec.name
    assert doc["initial"] == list(spec.initial)
    for entry in doc["states"]:
        assert set(entry) == {"name", "code", "category", "terminal", "min_time_in_state"}
        assert entry["category"] in {c.value for c in StateCategory}
    for entry in doc["transitions"]:
        assert set(entry) == {"from", "to", "trigger", "gates"}
        assert isinstance(entry["gates"], list)
    codes = [s["code"] for s in doc["states"]]
    assert codes == sorted(codes)
    by_name = {s["name"]: s["code"] for s in doc["states"]}
    keys = [(by_name[t["from"]], by_name[t["to"]]) for t in doc["transitions"]]
    assert keys == sorted(keys) and len(keys) == len(spec.transitions)
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_to_mermaid_draws_every_edge_and_initial_state(spec: Spec) -> None:
    """The Mermaid diagram has one arrow per edge, labelled with its trigger, and the starts."""
    diagram = spec.to_mermaid()
    assert diagram.startswith("stateDiagram-v2\n")
    for t in spec.transitions:
        assert f"    {t.source} --> {t.target}: {t.trigger}" in diagram
    for name in spec.initial:
        assert f"    [*] --> {name}\n" in diagram


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_a_state_is_terminal_exactly_when_it_has_no_exit(spec: Spec) -> None:
    """Terminal states have no exits and every non-terminal state has at least one."""
    for s in spec.states:
        assert s.terminal == (spec.exits(s.name) == ()), s.name


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_edges_are_described_use_snake_case_triggers_and_known_gates(spec: Spec) -> None:
    """Every edge says why it exists, its trigger is snake_case, and its gates are library names."""
    for t in spec.transitions:
        assert t.description, (t.source, t.target)
        assert re.fullmatch(r"[a-z][a-z0-9_]*", t.trigger), t.trigger
    assert spec.gate_names <= KNOWN_GATES
    assert all(s.description for s in spec.states)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_min_time_is_only_skipped_where_a_minimum_exists(spec: Spec) -> None:
    """skip_min_time is set only on edges leaving a state that has a minimum time."""
    for t in spec.transitions:
        if t.skip_min_time:
            assert spec.state(t.source).min_time_in_state > 0, (t.source, t.target)


# -- the validator, on small hand-built specs ----------------------------------------------


def _state(name: str, code: int, *, terminal: bool = False) -> StateDef:
    return StateDef(name=name, code=code, category=StateCategory.ACTIVE, terminal=terminal)


def _edge(source: str, target: str, trigger: str = "go") -> TransitionDef:
    return TransitionDef(source=source, target=target, trigger=trigger)


A, B, C = _state("A", 0), _state("B", 1), _state("C", 2)


def test_validator_accepts_the_minimal_well_formed_spec() -> None:
    """The baseline the rejection cases perturb is itself valid, so each rejection is meaningful."""
    spec = Spec(name="ok", states=(A, B), transitions=(_edge("A", "B"),), initial=("A",))
    assert edges(spec) == {("A", "B")}


@pytest.mark.parametrize(
    ("states", "transitions", "message"),
    [
        pytest.param(
            (A, B), (_edge("A", "B"), _edge("A", "B", "again")), "duplicate edge", id="duplicate-edge"
        ),
        pytest.param((A, B), (_edge("A", "B"), _edge("B", "Z")), "unknown state", id="unknown-state"),
        pytest.param((A, B, C), (_edge("A", "B"),), "unreachable", id="unreachable-state"),
        pytest.param(
            (A, _state("B", 1, terminal=True), C),
            (_edge("A", "B"), _edge("B", "C")),
            "terminal",
            id="exit-from-terminal",
        ),
        pytest.param(
            (A, B, C), (_edge("A", "B", "go"), _edge("A", "C", "go")), "ambiguous", id="ambiguous-trigger"
        ),
        pytest.param((A, _state("B", 0)), (_edge("A", "B"),), "duplicate", id="duplicate-code"),
    ],
)
def test_validator_rejects_malformed_specs(
    states: tuple[StateDef, ...], transitions: tuple[TransitionDef, ...], message: str
) -> None:
    """A malformed table raises SpecError at construction, with a message naming the fault."""
    with pytest.raises(SpecError, match=message):
        Spec(name="bad", states=states, transitions=transitions, initial=("A",))

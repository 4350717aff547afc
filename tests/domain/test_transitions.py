"""Every built-in spec allows exactly its listed edges; Kasmina's minimum epochs and validators hold.

The edge tests run with gates that always pass (only the real minimum-time gate remains), so
they test the tables; the Kasmina tests run with the real `default_gates()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lifecycle_es import (
    BUILTIN_SPECS,
    EntityState,
    GateCategory,
    GateMode,
    InvalidTransitionError,
    Lifecycle,
    LifecycleConfig,
)
from lifecycle_es.gates import MIN_TIME_GATE, GateLibrary
from lifecycle_es.specs import KasminaState

K = KasminaState
Place = Callable[..., EntityState]
"""The `place` fixture: put an entity in any state of its spec by walking real transitions."""

EDGES = [
    pytest.param(spec.name, t.source, t.target, id=f"{spec.name}:{t.source}->{t.target}")
    for spec in BUILTIN_SPECS.values()
    for t in spec.transitions
]
NON_EDGES = [
    pytest.param(spec.name, a.name, b.name, id=f"{spec.name}:{a.name}-/->{b.name}")
    for spec in BUILTIN_SPECS.values()
    for a in spec.states
    for b in spec.states
    if spec.edge(a.name, b.name) is None
]

# Metrics that pass the real gates on the way to each Kasmina state.
KASMINA_WALK = {
    K.GRAFTING: {"reconstruction_loss": 0.0},
    K.FINE_TUNING: {"performance_delta": 0.1, "stability_score": 0.9},
}


def records_after(lc: Lifecycle, seq: int) -> list[dict[str, Any]]:
    return lc.log.read(after=seq)


# -- the tables --------------------------------------------------------------------------------


def test_the_pair_lists_cover_every_ordered_pair_of_states() -> None:
    """Allowed and refused pairs together are every ordered pair, self-pairs included."""
    total = sum(len(s.states) ** 2 for s in BUILTIN_SPECS.values())
    assert len(EDGES) + len(NON_EDGES) == total
    assert len(EDGES) == 16 + 11 + 9 + 10 + 66 + 6  # kasmina, module, expert, run, agent, task


@pytest.mark.parametrize(("spec", "source", "target"), EDGES)
def test_every_listed_edge_is_allowed_when_its_gates_pass(
    spec: str, source: str, target: str, passing_gates: GateLibrary, place: Place
) -> None:
    """A listed edge moves the entity, by target and by trigger, and appends TransitionApplied."""
    lc = Lifecycle(gates=passing_gates)
    edge = lc.registry.specs[spec].edge(source, target)
    assert edge is not None
    ways: list[tuple[str, dict[str, Any]]] = [
        ("by-to", {"to": target}),
        ("by-trigger", {"trigger": edge.trigger}),
    ]
    for entity, how in ways:
        placed = place(lc, entity, spec, source)
        before = lc.log.last_seq()
        lc.advance(lc.registry.step + 1_000)
        moved = lc.transition(entity, **how)
        assert (moved.state, moved.entered_step, moved.transitions) == (
            target,
            lc.step,
            placed.transitions + 1,
        )
        assert moved.history[-1] == (lc.step, source, target)
        records = records_after(lc, before)
        assert [r["kind"] for r in records[:-1]] == ["GateChecked"] * (len(records) - 1)
        assert all(r["passed"] for r in records[:-1])
        applied = records[-1]
        assert applied["kind"] == "TransitionApplied"
        assert (applied["from_state"], applied["to_state"], applied["trigger"]) == (
            source,
            target,
            edge.trigger,
        )


@pytest.mark.parametrize(("spec", "source", "target"), NON_EDGES)
def test_every_other_pair_is_rejected_and_recorded(
    spec: str, source: str, target: str, passing_gates: GateLibrary, place: Place
) -> None:
    """A pair without an edge raises InvalidTransitionError after appending TransitionRejected."""
    lc = Lifecycle(gates=passing_gates)
    before_entity = place(lc, "e", spec, source)
    before_seq = lc.log.last_seq()
    lc.advance(lc.registry.step + 1_000)
    with pytest.raises(InvalidTransitionError, match=f"{source} -> {target}") as caught:
        lc.transition("e", to=target)
    assert caught.value.reasons == (f"Invalid transition: {source} -> {target}",)
    [rejected] = records_after(lc, before_seq)
    assert rejected["kind"] == "TransitionRejected"
    assert (rejected["entity"], rejected["from_state"], rejected["to_state"]) == ("e", source, target)
    assert rejected["reasons"] == [f"Invalid transition: {source} -> {target}"]
    after = lc.registry.get("e")
    assert (after.state, after.entered_step, after.transitions, after.history) == (
        before_entity.state,
        before_entity.entered_step,
        before_entity.transitions,
        before_entity.history,
    )
    assert after.rejections == before_entity.rejections + 1


# -- Kasmina: minimum epochs in state -----------------------------------------------------------

MINIMUMS = [
    (K.TRAINING, 100, K.CULLED),
    (K.GRAFTING, 50, K.STABILIZATION),
    (K.STABILIZATION, 20, K.EVALUATING),
    (K.EVALUATING, 30, K.CULLED),
    (K.FINE_TUNING, 50, K.CULLED),
]


def test_the_minimums_are_esperlites() -> None:
    """The spec's minimum times are TRAINING 100, GRAFTING 50, STABILIZATION 20, EVALUATING 30,
    FINE_TUNING 50, and zero elsewhere."""
    spec = BUILTIN_SPECS["kasmina"]
    expected = {state.value: minimum for state, minimum, _ in MINIMUMS}
    assert {s.name: s.min_time_in_state for s in spec.states} == {
        s.name: expected.get(s.name, 0) for s in spec.states
    }


@pytest.mark.parametrize(("state", "minimum", "target"), MINIMUMS, ids=lambda v: str(v))
def test_kasmina_refuses_one_step_before_the_minimum_and_allows_it_at_the_minimum(
    state: KasminaState,
    minimum: int,
    target: KasminaState,
    passing_gates: GateLibrary,
    place: Place,
) -> None:
    """At minimum-1 steps in state the min-time gate refuses; at the minimum it passes."""
    lc = Lifecycle(gates=passing_gates)
    entered = place(lc, "k", "kasmina", state).entered_step
    before = lc.log.last_seq()
    with pytest.raises(InvalidTransitionError) as caught:
        lc.transition("k", to=target, step=entered + minimum - 1)
    expected = f"Insufficient time in {state}: {minimum - 1} < {minimum} epochs"
    assert caught.value.reasons == (f"{MIN_TIME_GATE}: {expected}",)
    gate, *_, rejected = lc.log.read(after=before)
    assert (gate["gate"], gate["passed"], gate["category"]) == (MIN_TIME_GATE, False, "structural")
    assert gate["observed"] == {"time_in_state": minimum - 1}
    assert gate["thresholds"] == {"min_steps": minimum}
    assert rejected["kind"] == "TransitionRejected"
    assert lc.transition("k", to=target, step=entered + minimum).state == target


@pytest.mark.parametrize("source", [K.GRAFTING, K.STABILIZATION, K.EVALUATING, K.FINE_TUNING])
def test_moves_into_rolled_back_skip_the_minimum(
    source: KasminaState, passing_gates: GateLibrary, place: Place
) -> None:
    """Every edge into ROLLED_BACK is allowed 5 steps after entering, with no min-time check."""
    lc = Lifecycle(gates=passing_gates)
    entered = place(lc, "k", "kasmina", source).entered_step
    before = lc.log.last_seq()
    assert lc.transition("k", to=K.ROLLED_BACK, step=entered + 5).state == K.ROLLED_BACK
    assert [r["kind"] for r in lc.log.read(after=before)] == ["TransitionApplied"]


@pytest.mark.parametrize(
    ("source", "target"), [(K.TRAINING, K.CANCELLED), (K.TRAINING, K.CULLED), (K.FINE_TUNING, K.CULLED)]
)
def test_moves_into_culled_and_cancelled_do_not_skip_the_minimum(
    source: KasminaState, target: KasminaState, passing_gates: GateLibrary, place: Place
) -> None:
    """Unlike ROLLED_BACK, CULLED and CANCELLED wait out the minimum epochs in state."""
    lc = Lifecycle(gates=passing_gates)
    entered = place(lc, "k", "kasmina", source).entered_step
    with pytest.raises(InvalidTransitionError, match="Insufficient time"):
        lc.transition("k", to=target, step=entered + 5)
    assert lc.registry.get("k").state == source


# -- Kasmina: the four validators with the real gates -------------------------------------------


def kasmina_at(state: KasminaState, place: Place, **config: Any) -> tuple[Lifecycle, int]:
    """A lifecycle with the real gates and seed 'k' in `state`; returns it and a step past the
    state's minimum."""
    lc = Lifecycle(config=LifecycleConfig(**config))
    entered = place(lc, "k", "kasmina", state, metrics=KASMINA_WALK).entered_step
    return lc, entered + 1_000


def last_gate_check(lc: Lifecycle, gate: str) -> dict[str, Any]:
    return [r for r in lc.log.read() if r["kind"] == "GateChecked" and r["gate"] == gate][-1]


@pytest.mark.parametrize(
    ("loss", "passes"), [(0.0, True), (0.0099, True), (0.01, True), (0.0100001, False), (0.5, False)]
)
def test_reconstruction_gate_passes_at_or_below_its_threshold(
    loss: float, passes: bool, place: Place
) -> None:
    """TRAINING -> GRAFTING needs reconstruction_loss <= 0.01, recorded with its threshold."""
    lc, step = kasmina_at(K.TRAINING, place)
    if passes:
        assert (
            lc.transition("k", to=K.GRAFTING, step=step, metrics={"reconstruction_loss": loss}).state
            == K.GRAFTING
        )
    else:
        with pytest.raises(InvalidTransitionError, match="reconstruction loss"):
            lc.transition("k", to=K.GRAFTING, step=step, metrics={"reconstruction_loss": loss})
        assert lc.registry.get("k").state == K.TRAINING
    check = last_gate_check(lc, "kasmina.reconstruction")
    assert (check["passed"], check["category"], check["mode"]) == (passes, "performance", "strict")
    assert check["observed"] == {"reconstruction_loss": loss}
    assert check["thresholds"] == {"reconstruction_threshold": 0.01}


def test_reconstruction_gate_fails_when_the_loss_was_never_observed(place: Place) -> None:
    """Without a reconstruction_loss metric the graft is refused, with nothing observed."""
    lc, step = kasmina_at(K.TRAINING, place)
    with pytest.raises(InvalidTransitionError, match=r"reconstruction loss inf > 0\.01"):
        lc.transition("k", to=K.GRAFTING, step=step)
    check = last_gate_check(lc, "kasmina.reconstruction")
    assert (check["passed"], check["observed"]) == (False, {})


def test_gates_read_the_latest_observed_metrics(place: Place) -> None:
    """A metric recorded with observe() feeds the gate when the request passes none."""
    lc, step = kasmina_at(K.TRAINING, place)
    lc.observe({"reconstruction_loss": 0.005}, entity="k", step=step)
    assert lc.transition("k", to=K.GRAFTING, step=step).state == K.GRAFTING
    assert last_gate_check(lc, "kasmina.reconstruction")["observed"] == {"reconstruction_loss": 0.005}


@pytest.mark.parametrize(
    ("delta", "stability", "passes"),
    [
        (0.1, 0.8, True),
        (0.001, 1.0, True),
        (0.1, 0.7999, False),
        (0.0, 0.9, False),
        (-0.1, 0.9, False),
    ],
)
def test_positive_evaluation_needs_a_gain_and_stability_of_at_least_0_8(
    delta: float, stability: float, passes: bool, place: Place
) -> None:
    """EVALUATING -> FINE_TUNING needs performance_delta > 0 and stability_score >= 0.8."""
    lc, step = kasmina_at(K.EVALUATING, place)
    metrics = {"performance_delta": delta, "stability_score": stability}
    if passes:
        assert lc.transition("k", to=K.FINE_TUNING, step=step, metrics=metrics).state == K.FINE_TUNING
    else:
        with pytest.raises(InvalidTransitionError, match="evaluation not positive"):
            lc.transition("k", to=K.FINE_TUNING, step=step, metrics=metrics)
        assert lc.registry.get("k").state == K.EVALUATING
    check = last_gate_check(lc, "kasmina.positive_evaluation")
    assert check["passed"] is passes
    assert check["observed"] == metrics
    assert check["thresholds"] == {"min_stability": 0.8}


CULL_REASON = "kasmina.negative_evaluation: Evaluation metrics do not warrant culling"


@pytest.mark.parametrize(
    ("metrics", "culls"),
    [
        ({"performance_delta": -0.06}, True),
        ({"performance_delta": -0.0500001}, True),
        ({"error_rate": 0.11}, True),
        ({"error_count": 6}, True),
        ({"performance_delta": -0.05}, False),
        ({"error_rate": 0.1}, False),
        ({"error_count": 5}, False),
        ({"performance_delta": -0.05, "error_rate": 0.1, "error_count": 5}, False),
        ({}, False),
    ],
    ids=str,
)
def test_negative_evaluation_culls_on_any_one_signal_past_its_boundary(
    metrics: dict[str, float], culls: bool, place: Place
) -> None:
    """EVALUATING -> CULLED needs delta < -0.05 or error_rate > 0.1 or error_count > 5."""
    lc, step = kasmina_at(K.EVALUATING, place)
    if culls:
        assert lc.transition("k", to=K.CULLED, step=step, metrics=metrics).state == K.CULLED
    else:
        with pytest.raises(InvalidTransitionError) as caught:
            lc.transition("k", to=K.CULLED, step=step, metrics=metrics)
        assert caught.value.reasons == (CULL_REASON,)
        assert lc.log.read(after=lc.log.last_seq() - 1)[0]["reasons"] == [CULL_REASON]
        assert lc.registry.get("k").state == K.EVALUATING
    check = last_gate_check(lc, "kasmina.negative_evaluation")
    observed = {"performance_delta": 0.0, "error_rate": 0.0, "error_count": 0.0, **metrics}
    assert (check["passed"], check["observed"]) == (culls, observed)
    assert check["thresholds"] == {"max_delta": -0.05, "max_error_rate": 0.1, "max_errors": 5}


@pytest.mark.parametrize(
    ("total", "stability", "passes"),
    [
        (0.01, 0.95, True),
        (0.5, 1.0, True),
        (0.0099, 0.99, False),
        (0.05, 0.9499, False),
        (0.0, 0.0, False),
    ],
)
def test_improvement_needs_1_percent_and_stability_of_at_least_0_95(
    total: float, stability: float, passes: bool, place: Place
) -> None:
    """FINE_TUNING -> FOSSILIZED needs total_improvement >= 0.01 and final_stability >= 0.95."""
    lc, step = kasmina_at(K.FINE_TUNING, place)
    metrics = {"total_improvement": total, "final_stability": stability}
    if passes:
        assert lc.transition("k", to=K.FOSSILIZED, step=step, metrics=metrics).state == K.FOSSILIZED
    else:
        with pytest.raises(InvalidTransitionError, match="too low"):
            lc.transition("k", to=K.FOSSILIZED, step=step, metrics=metrics)
        assert lc.registry.get("k").state == K.FINE_TUNING
    check = last_gate_check(lc, "kasmina.improvement")
    assert (check["passed"], check["category"]) == (passes, "stability")
    assert check["observed"] == metrics
    assert check["thresholds"] == {"min_improvement": 0.01, "min_stability": 0.95}


def test_a_rejection_records_every_failed_gate_with_its_reason(place: Place) -> None:
    """With the minimum unmet and the loss too high, both gates' reasons are recorded."""
    lc = Lifecycle()
    entered = place(lc, "k", "kasmina", K.TRAINING, metrics=KASMINA_WALK).entered_step
    before = lc.log.last_seq()
    with pytest.raises(InvalidTransitionError) as caught:
        lc.transition("k", to=K.GRAFTING, step=entered + 10, metrics={"reconstruction_loss": 1.0})
    assert len(caught.value.reasons) == 2
    checks = lc.log.read(after=before)
    assert [(r["kind"], r.get("gate"), r.get("passed")) for r in checks] == [
        ("GateChecked", MIN_TIME_GATE, False),
        ("GateChecked", "kasmina.reconstruction", False),
        ("TransitionRejected", None, None),
    ]
    assert checks[-1]["reasons"] == list(caught.value.reasons)


# -- gate modes ----------------------------------------------------------------------------------


def test_permissive_mode_records_a_failing_performance_gate_but_applies_the_transition(
    place: Place,
) -> None:
    """In permissive mode a failed performance gate is GateChecked(passed=False, blocking=False)."""
    lc, step = kasmina_at(K.TRAINING, place, mode=GateMode.PERMISSIVE)
    moved = lc.transition("k", to=K.GRAFTING, step=step, metrics={"reconstruction_loss": 0.5})
    assert moved.state == K.GRAFTING
    check = last_gate_check(lc, "kasmina.reconstruction")
    assert (check["passed"], check["blocking"], check["mode"]) == (False, False, "permissive")
    assert lc.log.read(after=lc.log.last_seq() - 1)[0]["kind"] == "TransitionApplied"


def test_permissive_mode_still_blocks_on_a_failing_structural_gate(place: Place) -> None:
    """In permissive mode the structural min-time gate still refuses the transition."""
    lc, _ = kasmina_at(K.TRAINING, place, mode=GateMode.PERMISSIVE)
    entered = lc.registry.get("k").entered_step
    with pytest.raises(InvalidTransitionError, match="Insufficient time in TRAINING") as caught:
        lc.transition("k", to=K.GRAFTING, step=entered + 99, metrics={"reconstruction_loss": 0.5})
    assert caught.value.reasons == (f"{MIN_TIME_GATE}: Insufficient time in TRAINING: 99 < 100 epochs",)
    check = last_gate_check(lc, MIN_TIME_GATE)
    assert (check["passed"], check["blocking"], check["category"]) == (False, True, "structural")
    perf = last_gate_check(lc, "kasmina.reconstruction")
    assert (perf["passed"], perf["blocking"]) == (False, False)
    assert lc.registry.get("k").state == K.TRAINING


def test_permissive_mode_blocks_on_the_module_specs_structural_growth_gate(place: Place) -> None:
    """A module cannot grow into a slot when slot_available fails, in permissive mode too."""
    lc = Lifecycle(config=LifecycleConfig(mode=GateMode.PERMISSIVE))
    lc.register("m", "module")
    with pytest.raises(InvalidTransitionError, match="slot_available"):
        lc.transition("m", to="INSTANTIATED", metrics={"available_slots": 0})
    check = last_gate_check(lc, "slot_available")
    assert check["category"] == GateCategory.STRUCTURAL
    assert (check["passed"], check["blocking"]) == (False, True)
    assert lc.registry.get("m").state == "DORMANT"

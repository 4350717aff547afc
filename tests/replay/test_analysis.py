"""Analysis tables: population over steps, decisions, time in state and gate pass rates."""

from __future__ import annotations

import pytest

from bus import MemoryLog
from lifecycle_es import Action, DecisionMade, InvalidTransitionError, Lifecycle
from replay import (
    decisions,
    gate_pass_rates,
    population_over_steps,
    replay,
    run_metrics,
    state_intervals,
    time_in_state,
)


@pytest.fixture
def run() -> Lifecycle:
    """Two experts in one layer: one goes dormant and is pruned; one Kasmina seed is refused once."""
    lc = Lifecycle(MemoryLog("analysis"))
    lc.start()
    lc.register("x", "expert", state="active", layer=0, slot=0, step=1)
    lc.register("y", "expert", state="active", layer=0, slot=1, step=1)
    lc.register("s", "kasmina", layer=1, step=1)
    lc.transition("s", "GERMINATED", step=2)
    lc.transition("x", "dormant", step=3)
    lc.transition("s", "TRAINING", step=3)
    with pytest.raises(InvalidTransitionError):
        lc.transition("s", "GRAFTING", step=4, metrics={"reconstruction_loss": 0.5})
    lc.append(
        [
            DecisionMade(
                run_id="analysis",
                step=5,
                action=Action.PRUNE,
                entity="x",
                layer=0,
                reason="dormant for 10 checkpoints",
                apply_at_step=6,
                seed=7,
            )
        ]
    )
    lc.seal(5)
    return lc


def test_population_over_steps_samples_each_step_that_changed(run: Lifecycle) -> None:
    """A row per (spec, layer, state) is emitted at every step whose populations changed."""
    rows = population_over_steps(run.log)
    by_step: dict[int, set[tuple[str, int | None, str, int]]] = {}
    for r in rows:
        by_step.setdefault(r["step"], set()).add((r["spec"], r["layer"], r["state"], r["count"]))
    assert by_step[1] == {("expert", 0, "active", 2), ("kasmina", 1, "DORMANT", 1)}
    assert by_step[2] == {("expert", 0, "active", 2), ("kasmina", 1, "GERMINATED", 1)}
    assert by_step[3] == {
        ("expert", 0, "active", 1),
        ("expert", 0, "dormant", 1),
        ("kasmina", 1, "TRAINING", 1),
    }
    assert set(by_step) == {1, 2, 3}  # steps 4 and 5 changed no population


def test_decisions_lists_every_decision_with_its_context(run: Lifecycle) -> None:
    """The decisions table holds each DecisionMade in log order with its fields."""
    [row] = decisions(run.log)
    assert row["action"] == "PRUNE" and row["entity"] == "x" and row["layer"] == 0
    assert (row["apply_at_step"], row["seed"], row["step"]) == (6, 7, 5)
    assert row["reason"] == "dormant for 10 checkpoints"


def test_time_in_state_and_gate_pass_rates_come_from_the_replay(run: Lifecycle) -> None:
    """The replay's metrics give the rows: the refused graft shows as a failed gate."""
    result = replay(run.log)
    gates = {r["gate"]: r for r in gate_pass_rates(result)}
    assert gates["kasmina.reconstruction"]["passed"] == 0
    assert gates["kasmina.reconstruction"]["checked"] == 1
    spent = {(r["spec"], r["state"]): r["steps"] for r in time_in_state(result)}
    # s: DORMANT 1..2, GERMINATED 2..3, TRAINING 3..5 (the seal at step 5 ends the clock)
    assert spent[("kasmina", "DORMANT")] == 1
    assert spent[("kasmina", "GERMINATED")] == 1
    assert spent[("kasmina", "TRAINING")] == 2


def test_state_intervals_are_each_stay_in_a_state(run: Lifecycle) -> None:
    """A row per stay, from the step an entity entered a state to the step it left (None: still there)."""
    rows = [(r["entity"], r["state"], r["start"], r["end"]) for r in state_intervals(run.log)]
    assert rows == [
        ("x", "active", 1, 3),
        ("y", "active", 1, None),
        ("s", "DORMANT", 1, 2),
        ("s", "GERMINATED", 2, 3),
        ("x", "dormant", 3, None),
        ("s", "TRAINING", 3, None),
    ]
    assert {(r["entity"], r["spec"], r["layer"]) for r in state_intervals(run.log)} == {
        ("x", "expert", 0),
        ("y", "expert", 0),
        ("s", "kasmina", 1),
    }


def test_run_metrics_are_the_metrics_of_neither_an_entity_nor_a_layer(run: Lifecycle) -> None:
    """The run's own metrics come out one row per value; entity and layer metrics stay out."""
    run.observe({"loss": 0.5, "lr": 0.01}, step=6)
    run.observe({"share": 0.3}, entity="y", step=6)
    run.observe({"entropy": 1.2}, layer=0, step=6)
    run.observe({"loss": 0.25}, step=7)
    rows = [(r["step"], r["name"], r["value"]) for r in run_metrics(run.log)]
    assert rows == [(6, "loss", 0.5), (6, "lr", 0.01), (7, "loss", 0.25)]

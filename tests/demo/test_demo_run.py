"""The demo trains deterministically, applies every lifecycle action, and its log replays to the live state.

What the coordinator decides in an emergent run depends on float results that differ between
CPUs, so tests on the emergent runs (`masked`, `resized`) assert only what holds for any
decisions; every action is applied in the scheduled runs, whose decider reads no float.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from _trained import EVERY, SCHEDULED_STEPS, SHORT_STEPS, Trained, train

from lifecycle_es import Registry
from lifecycle_es.controllers import ExpertCoordinator
from replay import Replay, replay
from replay.demo import PHASES, DemoOptions, DemoRun, demo_config

VOLATILE = ("event_id", "ts", "causation")
"""Fields that differ between two identical runs: fresh ids and wall times."""
ACTIONS = {"SPAWN", "PRUNE", "SPLIT", "MERGE"}
GROWS = {"SPAWN": 1, "SPLIT": 1, "PRUNE": -1, "MERGE": -1, "REVIVE": 1}
"""How many routing experts an action adds to its layer."""
REASONS = {
    "SPAWN": {"sustained_starvation"},
    "PRUNE": {"confirmed_dead", "failed_split", "basin_gone"},
    "SPLIT": {"sustained_overload"},
    "MERGE": {"converged_basins"},
    "REVIVE": {"basin_returned"},
}


def _stable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def _actions(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["action"] for r in records if r["kind"] == "DecisionMade")


def _replayed(trained: Trained) -> Replay:
    import bus

    with bus.open(trained.url, trained.demo.lifecycle.run_id, create=False) as log:  # type: ignore[union-attr]
        return replay(log)


def test_two_runs_with_one_seed_write_the_same_log_and_train_the_same_model(
    masked: Trained, masked_again: Trained
) -> None:
    """Same seed and run id: the logs match record for record (ids and wall times aside), and so do
    the surgery digests of parameters and optimizer state."""
    assert len(masked.records) == len(masked_again.records) > 1000
    assert _stable(masked.records) == _stable(masked_again.records)
    first, second = masked.demo.lifecycle, masked_again.demo.lifecycle
    assert first is not None and second is not None
    assert first.surgery.digest(event_ids=False) == second.surgery.digest(event_ids=False)
    assert masked.demo.timeline.phase_losses == masked_again.demo.timeline.phase_losses


def test_one_seed_under_two_run_ids_gives_the_same_run(tmp_path: Path) -> None:
    """Decision seeds come from the run's seed, not its id: `demo --seed S` twice (each under
    its own timestamped run id) writes the same records, decisions included, and trains the same weights."""
    runs = [
        train(tmp_path / name, DemoOptions(steps=SCHEDULED_STEPS, seed=3), run_id=name, scheduled=True)
        for name in ("demo-a", "demo-b")
    ]
    strip = [[{k: v for k, v in r.items() if k != "run_id"} for r in _stable(t.records)] for t in runs]
    assert strip[0] == strip[1]
    assert set(_actions(runs[0].records)) == ACTIONS
    digests = {t.demo.lifecycle.surgery.digest(event_ids=False) for t in runs}  # type: ignore[union-attr]
    assert len(digests) == 1


def test_another_seed_gives_another_run(tmp_path: Path) -> None:
    """Seeds 0 and 1 give different metrics, decisions and weights within a short run."""
    runs = [train(tmp_path / str(seed), DemoOptions(steps=200, seed=seed)) for seed in (0, 1)]
    assert _stable(runs[0].records) != _stable(runs[1].records)
    digests = {r.demo.lifecycle.surgery.digest(event_ids=False) for r in runs}  # type: ignore[union-attr]
    assert len(digests) == 2


@pytest.mark.parametrize("fixture", ["scheduled_masked", "scheduled_resized"])
def test_a_scheduled_run_applies_every_action_at_its_boundary(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """Spawn, split, prune and merge are each decided before the end and change the routing experts
    at their boundary, one more or one fewer; under resize the layer holds exactly its live rows."""
    trained: Trained = request.getfixturevalue(fixture)
    made = [r for r in trained.records if r["kind"] == "DecisionMade"]
    assert {r["action"] for r in made if r["step"] < SCHEDULED_STEPS} == ACTIONS
    assert {r["step"] for r in made} == set(range(EVERY, SCHEDULED_STEPS + 1, EVERY))
    routing = dict(trained.demo.timeline.experts)
    interval = demo_config(trained.options).lifecycle_eval_interval
    for decision in made:
        step, layer = decision["step"], decision["layer"]
        assert routing[step][layer] == routing[step - interval][layer] + GROWS[decision["action"]], decision
    live = trained.demo.lifecycle
    assert live is not None
    rows = trained.demo.model.layers()[0].capacity
    if trained.options.strategy == "resize":
        assert rows == len(live.surgery.routing_rows(0)) == trained.demo.experts()[0]
    else:
        assert rows == trained.options.max_experts


@pytest.mark.parametrize("fixture", ["masked", "resized"])
def test_every_decision_of_an_emergent_run_is_its_actions_answer_to_its_signal(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """Whatever the coordinator decided here, spawns answer starvation, prunes confirmed idleness,
    splits overload and merges converged basins, each at an evaluation step for the next one."""
    trained: Trained = request.getfixturevalue(fixture)
    interval = demo_config(trained.options).lifecycle_eval_interval
    for record in trained.records:
        if record["kind"] == "DecisionMade":
            assert record["reason"] in REASONS[record["action"]], record
            assert record["step"] % interval == 0 and record["apply_at_step"] == record["step"] + 1


def test_every_checkpoint_is_sealed_and_applied_at_its_boundary(masked: Trained) -> None:
    """Each evaluation step ends with StepSealed, and surgery has folded the whole log."""
    interval = demo_config(masked.options).lifecycle_eval_interval
    sealed = [r["step"] for r in masked.records if r["kind"] == "StepSealed"]
    assert sealed == [0, *range(interval, SHORT_STEPS + 1, interval)]
    live = masked.demo.lifecycle
    assert live is not None and live.surgery.seq == live.tensors.seq == masked.records[-1]["seq"]


@pytest.mark.parametrize("fixture", ["masked", "resized", "scheduled_masked", "scheduled_resized"])
def test_replaying_the_log_rebuilds_the_live_registry_and_state_tensors(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """`replay()` of the demo's log gives the registry and state tensors the live run held."""
    trained: Trained = request.getfixturevalue(fixture)
    live = trained.demo.lifecycle
    assert live is not None
    rebuilt = _replayed(trained)
    assert rebuilt.reached_end
    assert rebuilt.registry.registry == live.lc.registry
    assert rebuilt.tensors is not None
    for name in ("state", "history", "metrics", "state_keys"):
        assert torch.equal(getattr(rebuilt.tensors, name), getattr(live.tensors, name)), name
    assert rebuilt.tensors.as_rows() == live.tensors.as_rows()


def test_a_coordinator_rebuilt_from_the_log_makes_the_same_next_decision(masked: Trained) -> None:
    """Policy state is folded from the log: a fresh coordinator over the replayed registry decides alike."""
    live = masked.demo.lifecycle
    assert live is not None
    rebuilt: Registry = _replayed(masked).registry.registry
    fresh = ExpertCoordinator(demo_config(masked.options), capacity=live.coordinator.capacity)
    step = SHORT_STEPS + live.interval
    ours = live.coordinator.decide(live.lc.registry, run_id=live.run_id, step=step)
    theirs = fresh.decide(rebuilt, run_id=live.run_id, step=step)
    assert _stable([e.__dict__ for e in ours]) == _stable([e.__dict__ for e in theirs])


@pytest.mark.parametrize("fixture", ["masked", "scheduled_masked"])
def test_the_model_routes_exactly_the_experts_the_registry_says_route(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """The layer's device mask equals the registry's experts in cooling, active or dormant."""
    trained: Trained = request.getfixturevalue(fixture)
    live = trained.demo.lifecycle
    assert live is not None
    layer = trained.demo.model.layers()[0]
    routed = {live.surgery.routing_experts(0)[row] for row in torch.nonzero(layer.active).flatten().tolist()}
    expected = {
        e.entity for e in live.lc.registry if e.layer == 0 and e.state in ("cooling", "active", "dormant")
    }
    assert routed == expected
    assert sum(trained.demo.experts().values()) == len(expected)


def test_the_baseline_trains_the_same_model_on_the_same_tokens_without_a_log() -> None:
    """With the lifecycle off the run keeps its initial experts and writes nothing."""
    demo = DemoRun(DemoOptions(steps=100, lifecycle=False))
    demo.run()
    assert demo.lifecycle is None and demo.experts() == {0: 4}
    assert len(demo.timeline.phase_losses) == len(PHASES)

"""The demo trains deterministically, takes every lifecycle action, and its log replays to the live state."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from _trained import SHORT_STEPS, Trained, train

from lifecycle_es import Registry
from lifecycle_es.controllers import ExpertCoordinator
from replay._replay import Replay, replay
from replay.demo import DemoOptions, DemoRun, demo_config
from replay.demo._task import PHASES

VOLATILE = ("event_id", "ts", "causation")
"""Fields that differ between two identical runs: fresh ids and wall times."""
ACTIONS = {"SPAWN", "PRUNE", "SPLIT", "MERGE"}


def _stable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def _actions(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["action"] for r in records if r["kind"] == "DecisionMade")


def _replayed(trained: Trained) -> Replay:
    import bus

    with bus.open(trained.url, trained.demo.lifecycle.run_id, create=False) as log:  # type: ignore[union-attr]
        return replay(log)


def test_two_runs_with_one_seed_write_the_same_log_and_train_the_same_model(
        masked: Trained, masked_again: Trained) -> None:
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
    its own timestamped run id) writes the same records and trains the same weights."""
    runs = [train(tmp_path / name, DemoOptions(steps=200, seed=3), run_id=name)
            for name in ("demo-a", "demo-b")]
    strip = [[{k: v for k, v in r.items() if k != "run_id"} for r in _stable(t.records)]
             for t in runs]
    assert strip[0] == strip[1]
    assert any(r["kind"] == "DecisionMade" for r in runs[0].records)
    digests = {t.demo.lifecycle.surgery.digest(event_ids=False) for t in runs}  # type: ignore[union-attr]
    assert len(digests) == 1


def test_another_seed_gives_another_run(tmp_path: Path) -> None:
    """Seeds 0 and 1 give different metrics, decisions and weights within a short run."""
    runs = [train(tmp_path / str(seed), DemoOptions(steps=200, seed=seed)) for seed in (0, 1)]
    assert _stable(runs[0].records) != _stable(runs[1].records)
    digests = {r.demo.lifecycle.surgery.digest(event_ids=False) for r in runs}  # type: ignore[union-attr]
    assert len(digests) == 2


@pytest.mark.parametrize("fixture", ["masked", "resized"])
def test_the_shortened_demo_takes_every_action(fixture: str, request: pytest.FixtureRequest) -> None:
    """In 2000 steps the lifecycle spawns, prunes, splits and merges, under both surgery strategies."""
    trained: Trained = request.getfixturevalue(fixture)
    assert set(_actions(trained.records)) >= ACTIONS, _actions(trained.records)


def test_decisions_come_from_the_signals_the_phases_create(masked: Trained) -> None:
    """Spawns answer starvation, prunes confirmed idleness, splits overload, merges converged basins."""
    reasons = {r["action"]: r["reason"] for r in masked.records if r["kind"] == "DecisionMade"}
    assert reasons == {"SPAWN": "sustained_starvation", "PRUNE": "confirmed_dead",
                       "SPLIT": "sustained_overload", "MERGE": "converged_basins"}
    steps = {a: [r["step"] for r in masked.records if r.get("action") == a] for a in ACTIONS}
    arrival, departure = (int(p.start * SHORT_STEPS) for p in PHASES[1:3])
    assert any(arrival < s <= departure for s in steps["SPAWN"])  # new types: experts spawned
    assert any(s > departure for s in steps["PRUNE"])  # types gone: their experts pruned


def test_every_checkpoint_is_sealed_and_applied_at_its_boundary(masked: Trained) -> None:
    """Each evaluation step ends with StepSealed, and surgery has folded the whole log."""
    interval = demo_config(masked.options).lifecycle_eval_interval
    sealed = [r["step"] for r in masked.records if r["kind"] == "StepSealed"]
    assert sealed == [0, *range(interval, SHORT_STEPS + 1, interval)]
    live = masked.demo.lifecycle
    assert live is not None and live.surgery.seq == live.tensors.seq == masked.records[-1]["seq"]


@pytest.mark.parametrize("fixture", ["masked", "resized"])
def test_replaying_the_log_rebuilds_the_live_registry_and_state_tensors(
        fixture: str, request: pytest.FixtureRequest) -> None:
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


def test_the_model_routes_exactly_the_experts_the_registry_says_route(masked: Trained) -> None:
    """The layer's device mask equals the registry's experts in cooling, active or dormant."""
    live = masked.demo.lifecycle
    assert live is not None
    layer = masked.demo.model.layers()[0]
    routed = {live.surgery.routing_experts(0)[row] for row in torch.nonzero(layer.active).flatten().tolist()}
    expected = {e.entity for e in live.lc.registry
                if e.layer == 0 and e.state in ("cooling", "active", "dormant")}
    assert routed == expected
    assert sum(masked.demo.experts().values()) == len(expected)


def test_the_baseline_trains_the_same_model_on_the_same_tokens_without_a_log() -> None:
    """With the lifecycle off the run keeps its initial experts and writes nothing."""
    demo = DemoRun(DemoOptions(steps=100, lifecycle=False))
    demo.run()
    assert demo.lifecycle is None and demo.experts() == {0: 4}
    assert len(demo.timeline.phase_losses) == len(PHASES)

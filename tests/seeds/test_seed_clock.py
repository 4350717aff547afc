"""Time in state moves with the training clock, seed columns come from events, replay equals live."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from lifecycle_es import Lifecycle, UsageError
from projections import Snapshot
from projections.seeds import SeedMode
from projections.state_tensors import (
    BLUEPRINT,
    EPOCHS_IN_STATE,
    ERROR_COUNT,
    EVALUATION_SCORE,
    GRAFTING_STRATEGY,
    StateTensors,
)
from tests.seeds._rig import PLAN, SPECS, STEPS, Rig, passing_gates, register_seeds, replay, run_plan


def test_advance_moves_every_rows_time_in_state_with_the_training_clock() -> None:
    """advance(step) adds the clock's gain to every row, agrees with the registry, and never goes back."""
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    lc.advance(3)
    lc.transition("s1", "GERMINATED")
    tensors = StateTensors(SPECS)
    tensors.apply(lc.log.read())
    tensors.advance(11)
    assert tensors.clock == 11
    want = [lc.registry.get(e).time_in_state(11) for e in tensors.entities()]
    assert tensors.state[:3, EPOCHS_IN_STATE].tolist() == want == [11, 8, 11]
    tensors.advance(7)
    assert tensors.state[:3, EPOCHS_IN_STATE].tolist() == want
    with pytest.raises(UsageError, match="step must be an int"):
        tensors.advance(12.0)  # type: ignore[arg-type]


MOVES = {2: "GERMINATED", 4: "TRAINING", 8: "GRAFTING"}


def test_a_linear_alpha_ramp_moves_every_step_between_events() -> None:
    """With no event after GRAFTING (step 8), s0's alpha still grows by 1/8 a step; its weights stay put."""
    rig, seen = Rig(), []
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    rig.surgery.apply(lc.log.read())
    for step in range(18):
        rig.train_step(step)
        seen.append(rig.layer.alpha[0].item())
        lc.advance(step)
        if step in MOVES:
            lc.transition("s0", MOVES[step])
        rig.surgery.apply(lc.log.read(rig.surgery.seq))
        if step == 8:  # a grafting blueprint is frozen: Adam's momentum must not move it either
            frozen = {n: w[0].detach().clone() for n, w in rig.layer.slot_parameters("residual_mlp").items()}
    assert seen[9:] == pytest.approx([min(1.0, (s - 8) / 8) for s in range(9, 18)])
    assert rig.layer.modes[0].item() == SeedMode.GRAFT
    assert all(torch.equal(w[0], frozen[n]) for n, w in rig.layer.slot_parameters("residual_mlp").items())


def test_germination_metadata_and_metrics_write_the_seed_columns() -> None:
    """Germination metadata sets blueprint and strategy; error_count and evaluation_score set theirs."""
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    lc.transition("s2", "GERMINATED")
    lc.observe({"error_count": 2, "evaluation_score": 0.75}, entity="s2")
    records = lc.log.read()
    germinated = next(r for r in records if r["kind"] == "TransitionApplied")
    germinated["metadata"] = {"blueprint": 1, "grafting_strategy": 3}  # as issue 13 point 7 records it
    tensors = StateTensors(SPECS)
    tensors.apply(records)
    row = tensors.state[tensors.row("s2")].tolist()
    assert (row[BLUEPRINT], row[GRAFTING_STRATEGY]) == (1, 3)
    assert (row[ERROR_COUNT], row[EVALUATION_SCORE]) == (2, 750)
    s1 = tensors.state[tensors.row("s1")].tolist()
    assert (s1[BLUEPRINT], s1[GRAFTING_STRATEGY]) == (1, 2)  # from its registration's attrs


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_a_replay_of_the_log_gives_the_live_runs_tensors_alpha_and_weights(strategy: str) -> None:
    """Folding the live log into a fresh model step by step ends with equal tensors, alpha and digest."""
    live = Rig(strategy=strategy)  # type: ignore[arg-type]
    lc = run_plan(live)
    again = Rig(strategy=strategy)  # type: ignore[arg-type]
    replay(again, lc.log.read())
    for name in ("state", "history", "metrics"):
        assert torch.equal(getattr(live.tensors, name), getattr(again.tensors, name)), name
    assert torch.equal(live.schedule.alpha, again.schedule.alpha)
    assert torch.equal(live.layer.alpha, again.layer.alpha) and torch.equal(
        live.layer.modes, again.layer.modes
    )
    assert live.surgery.digest() == again.surgery.digest()
    assert live.schedule.alpha.tolist()[:2] == [1.0, pytest.approx(1.0)]  # both ramps completed


def _through_torch(snapshot: Snapshot) -> Snapshot:
    buffer = io.BytesIO()
    torch.save({"kind": snapshot.kind, "seq": snapshot.seq, "state": snapshot.state}, buffer)
    buffer.seek(0)
    return Snapshot(**torch.load(buffer, weights_only=True))


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_a_rig_resumed_from_snapshots_goes_on_like_the_live_one(strategy: str) -> None:
    """Snapshots at step 12 (tensors, schedule, surgery), model and optimizer resume to the live digest."""
    live = Rig(strategy=strategy)  # type: ignore[arg-type]
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    live.surgery.apply(lc.log.read())
    resumed: Rig | None = None
    for step in range(STEPS):
        for rig in (live, resumed):
            if rig is not None:
                rig.train_step(step)
        lc.advance(step)
        for entity, to in PLAN.get(step, ()):
            lc.transition(entity, to)
        for rig in (live, resumed):
            if rig is not None:
                rig.surgery.apply(lc.log.read(rig.surgery.seq))
        if step == 12:
            resumed = Rig(strategy=strategy)  # type: ignore[arg-type]
            for name in ("tensors", "schedule", "surgery"):
                getattr(resumed, name).restore(_through_torch(getattr(live, name).snapshot()))
            resumed.layer.load_state_dict(live.layer.state_dict())
            # A copy, as a checkpoint file gives: Adam adopts the tensors it is handed.
            resumed.optimizer.load_state_dict(copy.deepcopy(live.optimizer.state_dict()))
            assert resumed.surgery.digest() == live.surgery.digest()
    assert resumed is not None and resumed.surgery.digest() == live.surgery.digest()
    assert torch.equal(resumed.layer.modes, live.layer.modes)
    assert torch.equal(resumed.schedule.alpha, live.schedule.alpha)

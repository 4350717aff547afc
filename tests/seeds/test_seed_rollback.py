"""A seed's blueprint is checkpointed before risky transitions and restored bit for bit on rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifecycle_es import Lifecycle, UsageError
from projections.seeds import RollbackPoints
from projections.training import CheckpointManager
from projections.training.checkpoint_manager import RetentionConfig
from tests.seeds._rig import PLAN, STEPS, Rig, passing_gates, register_seeds


def _rows(rig: Rig, chunk: int) -> dict[str, torch.Tensor]:
    """The low_rank rows serving `chunk`: weights and Adam moments, copied."""
    row = rig.layer.row_chunks["low_rank"].index(chunk)
    out = {}
    for name, param in rig.layer.slot_parameters("low_rank").items():
        out[name] = param[row].detach().clone()
        for key, moment in rig.optimizer.state[param].items():
            if moment.shape == param.shape:
                out[f"{name}/{key}"] = moment[row].clone()
    return out


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_rollback_restores_the_blueprint_saved_before_grafting(strategy: str, tmp_path: Path) -> None:
    """s1's rows drift after it enters GRAFTING; ROLLED_BACK puts those weights and moments back exactly."""
    manager = CheckpointManager(tmp_path, retention=RetentionConfig(per_seed=1), durable=False)
    rig = Rig(strategy=strategy, rollback=RollbackPoints(manager))  # type: ignore[arg-type]
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    rig.surgery.apply(lc.log.read())
    saved: dict[str, torch.Tensor] = {}
    for step in range(STEPS):
        rig.train_step(step)
        lc.advance(step)
        if step == 8:
            saved = _rows(rig, chunk=1)  # what s1 looks like as it enters GRAFTING
        if step == 15:
            drifted = _rows(rig, chunk=1)
            assert any(not torch.equal(saved[k], drifted[k]) for k in saved)
        for entity, to in PLAN.get(step, ()):
            lc.transition(entity, to)
        rig.surgery.apply(lc.log.read(rig.surgery.seq))
        if step == 16:
            restored = _rows(rig, chunk=1)
            assert saved.keys() == restored.keys() and len(saved) == 6  # a, b and two moments each
            assert all(torch.equal(saved[k], restored[k]) for k in saved)
    assert lc.registry.get("s1").state == "ROLLED_BACK"
    assert "s0" not in rig.rollback.points  # type: ignore[union-attr]  # fossilized: discarded
    assert [c.state for c in manager.list_checkpoints(layer=0, seed=1)] == ["GRAFTING"]


def test_a_seed_without_a_rollback_point_is_left_as_it_is() -> None:
    """roll_back of a seed with no point saved (or no RollbackPoints at all) changes nothing and says so."""
    rig = Rig()
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    rig.surgery.apply(lc.log.read())
    before = rig.surgery.digest()
    assert rig.surgery.roll_back("s0") is False
    assert rig.surgery.digest() == before
    with pytest.raises(UsageError, match="'nobody' is not a seed"):
        rig.surgery.roll_back("nobody")
    with pytest.raises(UsageError, match="takes a CheckpointManager"):
        RollbackPoints("ckpts")  # type: ignore[arg-type]

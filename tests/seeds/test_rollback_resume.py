"""Rollback points survive a resume: the surgery's snapshot keeps them, so a later failure restores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifecycle_es import Lifecycle, UsageError
from projections import Projection
from projections.seeds import RollbackPoints
from projections.training import CheckpointManager
from projections.training.checkpoint_manager import RetentionConfig
from replay.demo.seeds import checkpoint
from tests.seeds._rig import PLAN, STEPS, Rig, passing_gates, register_seeds

STOP = 12
"""The step after which the run stops: s1 has been GRAFTING since step 8 and rolls back at 16."""


def _rig(strategy: str, root: Path) -> Rig:
    """A rig whose rollback points are kept under `root` (a fresh manager, as a new process has)."""
    manager = CheckpointManager(root, retention=RetentionConfig(per_seed=1), durable=False)
    return Rig(strategy=strategy, rollback=RollbackPoints(manager))  # type: ignore[arg-type]


def _step(rig: Rig, lc: Lifecycle, step: int) -> None:
    """Train step `step`, then take and fold its scripted transitions."""
    rig.train_step(step)
    lc.advance(step)
    for entity, to in PLAN.get(step, ()):
        lc.transition(entity, to)
    rig.surgery.apply(lc.log.read(rig.surgery.seq))


def _s1_rows(rig: Rig) -> dict[str, torch.Tensor]:
    """s1's low_rank weights (chunk 1), copied."""
    row = rig.layer.row_chunks["low_rank"].index(1)
    return {k: p[row].detach().clone() for k, p in rig.layer.slot_parameters("low_rank").items()}


def _projections(rig: Rig) -> tuple[Projection, ...]:
    return (rig.tensors, rig.schedule, rig.surgery)


def _points(rig: Rig) -> dict[str, str]:
    assert rig.rollback is not None
    return rig.rollback.points


def _started(rig: Rig) -> Lifecycle:
    """A lifecycle with the plan's seeds registered and folded into `rig`."""
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    rig.surgery.apply(lc.log.read())
    return lc


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_a_run_resumed_while_grafting_rolls_back_as_if_never_stopped(strategy: str, tmp_path: Path) -> None:
    """Stopped while s1 grafts, a resumed run's ROLLED_BACK restores the bits an unstopped run does."""
    never = _rig(strategy, tmp_path / "never")
    lc = _started(never)
    rolled_back: dict[str, torch.Tensor] = {}
    for step in range(STEPS):
        _step(never, lc, step)
        rolled_back = _s1_rows(never) if step == 16 else rolled_back

    stopped = _rig(strategy, tmp_path / "points")
    lc = _started(stopped)
    for step in range(STOP + 1):
        _step(stopped, lc, step)
    assert set(_points(stopped)) == {"s0", "s1"}  # both grafting
    stops = CheckpointManager(tmp_path / "stop", durable=False)
    checkpoint.save(
        stops, rank=0, step=STOP, model=stopped.layer, optimizer=stopped.optimizer,
        projections=_projections(stopped), extra={},
    )  # fmt: skip

    resumed = _rig(strategy, tmp_path / "points")  # a new process: new objects over the same files
    restored = checkpoint.restore(
        stops, rank=0, model=resumed.layer, optimizer=resumed.optimizer, projections=_projections(resumed)
    )
    assert restored is not None and _points(resumed) == _points(stopped)
    for step in range(STOP + 1, STEPS):
        _step(resumed, lc, step)
        if step == 16:
            rows = _s1_rows(resumed)
            assert all(torch.equal(rolled_back[k], rows[k]) for k in rolled_back)
    assert lc.registry.get("s1").state == "ROLLED_BACK"
    assert resumed.surgery.digest(event_ids=False) == never.surgery.digest(event_ids=False)


def test_a_snapshot_with_points_is_refused_by_a_surgery_without_rollback(tmp_path: Path) -> None:
    """A snapshot holding rollback points restored into a surgery without RollbackPoints is a UsageError."""
    rig = _rig("masked", tmp_path)
    lc = _started(rig)
    for step in range(10):
        _step(rig, lc, step)
    snapshot = rig.surgery.snapshot()
    assert snapshot.state["rollback_points"] == _points(rig) and _points(rig)
    with pytest.raises(UsageError, match="holds rollback points"):
        Rig().surgery.restore(snapshot)

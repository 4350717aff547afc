"""The seeds demo's stop checkpoint: everything a `--resume` needs to continue a run bit for bit.

At the evaluation boundary where a preemption notice stops the run, every rank saves its own
checkpoint through a `CheckpointManager` (layer 0, seed = the rank: a rank's rollback points
are files of its own, so their ids differ between ranks): the model, the optimizer, the
snapshots of the state tensors, the alpha schedule and the seed surgery, and the run's own
bookkeeping (`SeedsRun.extra_state`). A resumed rank loads its newest intact one, restores the
projections first (the surgery reshapes resized blueprints for the weights to fit), then the
model and the optimizer, and folds the log from the checkpoint's seq on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lifecycle_es.errors import CheckpointUnreadableError
from projections._projection import Projection, Snapshot
from projections.training.checkpoint_manager import CheckpointManager

__all__ = ["FORMAT", "STATE", "Restored", "restore", "save"]

FORMAT = 1
"""The layout version written into every seeds-demo checkpoint."""
STATE = "seeds-demo"
"""The `state` its checkpoints are saved under in their manager."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restored checkpoint gives back besides the state it loaded."""

    step: int
    """The evaluation step the run stopped at: training continues at `step + 1`."""
    checkpoint_id: str
    extra: dict[str, Any]
    """`SeedsRun.extra_state()` as it was saved."""


def save(
    manager: CheckpointManager,
    *,
    rank: int,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    projections: tuple[Projection, ...],
    extra: Mapping[str, Any],
) -> str:
    """Write rank `rank`'s checkpoint of the state after step `step`'s boundary; return its id."""
    state = optimizer.state_dict()
    state_data = {
        "format": FORMAT,
        "step": step,
        "model": dict(model.state_dict()),
        # the manager takes str keys only; `restore` turns them back into parameter indices
        "optimizer": {**state, "state": {str(k): v for k, v in state["state"].items()}},
        "snapshots": {s.kind: {"seq": s.seq, "state": s.state} for s in (p.snapshot() for p in projections)},
        "extra": dict(extra),
    }
    info = manager.save(state_data, layer=0, seed=rank, step=step, state=STATE, priority="high")
    return info.id


def restore(
    manager: CheckpointManager,
    *,
    rank: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    projections: tuple[Projection, ...],
) -> Restored | None:
    """Load rank `rank`'s newest intact checkpoint into the projections, model and optimizer.

    Restores the projections in the order given (state tensors and schedule before the
    surgery); None when the rank has no checkpoint.
    """
    recovery = manager.load_latest(layer=0, seed=rank, state=STATE)
    if recovery is None:
        return None
    info, data = recovery.checkpoint.info, recovery.checkpoint.state_data
    if data.get("format") != FORMAT or not isinstance(data.get("snapshots"), dict):
        raise CheckpointUnreadableError(f"{info.path} is not a seeds-demo checkpoint of format {FORMAT}")
    for projection in projections:
        saved = data["snapshots"].get(projection.name)
        if saved is None:
            raise CheckpointUnreadableError(f"{info.path} holds no snapshot of {projection.name!r}")
        projection.restore(Snapshot(kind=projection.name, seq=saved["seq"], state=saved["state"]))
    model.load_state_dict(data["model"])
    state = data["optimizer"]
    optimizer.load_state_dict({**state, "state": {int(k): v for k, v in state["state"].items()}})
    return Restored(step=int(data["step"]), checkpoint_id=info.id, extra=dict(data["extra"]))

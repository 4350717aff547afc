"""Rollback points: a seed's blueprint weights and moments, saved before each risky transition.

Seed surgery saves a seed's rows (weights and the optimizer's moments of those rows) through
the run's `CheckpointManager` when the seed enters a risky state (grafting, fine-tuning: see
`modes.RISKY`), restores them when it is rolled back, and forgets them once the seed succeeds.
Rollback points are saved at `low` priority, one per (layer, slot) kept by the manager's
retention, so a newer point replaces the older one on disk: `CheckpointManager` has no public
delete, and a forgotten point is removed by the next save of its slot.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lifecycle_es.errors import UsageError
from projections.training.checkpoint_manager import CheckpointManager

__all__ = ["RollbackPoints"]


class RollbackPoints:
    """The latest rollback point of each seed, kept by a `CheckpointManager`."""

    def __init__(self, manager: CheckpointManager) -> None:
        if not isinstance(manager, CheckpointManager):
            raise UsageError(f"RollbackPoints takes a CheckpointManager, got {type(manager).__name__}")
        self.manager = manager
        self.points: dict[str, str] = {}
        """Seed entity to the id of its latest rollback point."""

    def save(
        self, entity: str, rows: Mapping[str, torch.Tensor], *, layer: int, slot: int, step: int, state: str
    ) -> str:
        """Save a seed's rows before it enters `state`; return the checkpoint id."""
        info = self.manager.save(
            {"entity": entity, "rows": {k: v.detach().to("cpu", copy=True) for k, v in rows.items()}},
            layer=layer,
            seed=slot,
            step=step,
            state=state,
            priority="low",
        )
        self.points[entity] = info.id
        return info.id

    def load(self, entity: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor] | None:
        """Return the rows of a seed's latest rollback point on `device`, or None if it has none."""
        checkpoint = self.points.get(entity)
        if checkpoint is None:
            return None
        loaded = self.manager.load(checkpoint, map_location=device)
        rows: dict[str, torch.Tensor] = loaded.state_data["rows"]
        return rows

    def discard(self, entity: str) -> None:
        """Forget a seed's rollback point (its slot's next save removes the file)."""
        self.points.pop(entity, None)

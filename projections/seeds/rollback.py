"""Rollback points: a seed's blueprint weights and moments, saved before each risky transition.

Seed surgery saves a seed's rows (weights and the optimizer's moments of those rows) through
the run's `CheckpointManager` when the seed enters a risky state (grafting, fine-tuning: see
`modes.RISKY`). From then until the seed succeeds or fails it is in its risky period, and the
point is used as seeds/000's `CheckpointRollback` uses it around `verify_integration()`:

- success (`modes.SUCCESS`: fossilized, integrated) discards the point;
- leaving the period any other way (ROLLED_BACK, or a failure state such as CULLED or PRUNED)
  restores it bit for bit and then discards it;
- a failed verification inside the period restores it and keeps it, since the seed stays where
  it is and may be verified again from the weights it had before the risky transition.

A failed verification is a rejected transition of a seed in its risky period whose blocking
failed gates are all verification gates, gates that measure the seed (performance, stability or
contribution: `kasmina.improvement`, `no_regression`, ...), with no structural gate failing.
A structural gate is a prerequisite of the attempt, not a judgment of the seed: a refusal by the
minimum time in state (or embargo, budget, hysteresis) says "not yet", and restoring on it
would throw away the fine-tuning of a seed that simply asked early. A non-blocking failure (a
permissive gate mode) lets the transition through, so it is no rejection at all. The verdict is
read from the `GateChecked` records the lifecycle writes just before its `TransitionRejected`,
so a live run and a replay of its log restore at the same record on every rank.

Rollback points are saved at `low` priority, one per (layer, slot) kept by the manager's
retention, so a newer point replaces the older one on disk: `CheckpointManager` has no public
delete, and a forgotten point is removed by the next save of its slot.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lifecycle_es.errors import UsageError
from lifecycle_es.events import GateCategory
from projections._projection import Record
from projections.training.checkpoint_manager import CheckpointManager

__all__ = ["RollbackPoints", "Verdicts"]


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


class Verdicts:
    """The failed gates of each seed's latest transition attempt, to tell a failed verification.

    Fold a seed's `GateChecked`, `TransitionApplied` and `TransitionRejected` records in log
    order; `rejected` answers whether that rejection was a failed verification.
    """

    def __init__(self) -> None:
        self._failed: dict[str, tuple[str, str, set[GateCategory]]] = {}
        """Entity to (from, to, categories of the blocking gates that failed) of its attempt."""

    def gate(self, r: Record) -> None:
        """Note one checked gate; a check of another move starts a new attempt."""
        entity, move = r["entity"], (r["from_state"], r["to_state"])
        attempt = self._failed.get(entity)
        if attempt is None or attempt[:2] != move:
            attempt = self._failed[entity] = (*move, set())
        if not r["passed"] and r.get("blocking", True):
            attempt[2].add(GateCategory(r["category"]))

    def applied(self, entity: str) -> None:
        """Forget an attempt that went through."""
        self._failed.pop(entity, None)

    def rejected(self, r: Record) -> bool:
        """Forget the attempt a rejection ends; True if verification gates alone refused it."""
        attempt = self._failed.pop(r["entity"], None)
        if attempt is None or attempt[:2] != (r["from_state"], r["to_state"]):
            return False
        failed = attempt[2]
        return bool(failed) and GateCategory.STRUCTURAL not in failed

"""A failed split: a clone child whose basin never left its parent's is undone, with its evidence.

A split (or a cloned spawn) is meant to divide its parent's basin. When the pair's basin overlap
stays above `split_divergence_overlap` for the `split_divergence_window` checkpoints after the
child's cooling, the child is pruned as a failed split (reason `failed_split`, the parent named,
the overlap recorded) rather than merged back later and split again; the parent then waits a
whole `split_cooldown_per_expert` before another split (`split.failed_split_cooldown`).
"""

from __future__ import annotations

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.events import Action, GateCategory
from lifecycle_es.policies import streak
from lifecycle_es.registry import EntityState
from lifecycle_es.specs.expert import ExpertState, FailedSplitMetrics

__all__ = ["undo_split"]


def undo_split(
    cfg: ExpertCoordinatorConfig,
    batch: Batch,
    parent: EntityState,
    child: EntityState,
    overlap: tuple[float, ...],
    share: float,
) -> None:
    """Record the undo's checks; when the overlap held for the whole window, prune the child."""
    window = cfg.split_divergence_window
    assert child.layer is not None
    held = streak(overlap, lambda o: o > cfg.split_divergence_overlap)
    gates = [
        Check(
            "split.divergence",
            GateCategory.STABILITY,
            len(overlap) >= window and held >= window,
            f"{parent.entity} and {child.entity}: basin overlap > {cfg.split_divergence_overlap:g} "
            f"for {checks.count(held, 'checkpoint')} in a row after cooling, window {window}",
            {"overlap": overlap[-1], "checkpoints_overlapping": held},
            {"split_divergence_overlap": cfg.split_divergence_overlap, "split_divergence_window": window},
        ),
        checks.floor(batch.registry, cfg, "split.undo_population_floor", child.layer),
    ]
    if not batch.checks(child.entity, child.state, ExpertState.PENDING_PRUNE, gates):
        return
    batch.decide(
        Action.PRUNE,
        layer=child.layer,
        entity=child.entity,
        target=child.entity,
        parent=parent.entity,
        reason="failed_split",
        metrics=FailedSplitMetrics(overlap=overlap[-1], checkpoints_overlapping=held, share=share),
    )
    batch.move(child.entity, ExpertState.PENDING_PRUNE, f"failed split of {parent.entity} undone")

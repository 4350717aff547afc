"""Walks the seed-controller tests share: a module moved through the real gates of seeds/000."""

from __future__ import annotations

from lifecycle_es import Lifecycle
from lifecycle_es.specs import ModuleState

M = ModuleState

BLEND_READY = {"epochs_trained": 5, "loss_at_instantiation": 2, "current_loss": 1, "module_grad_norm": 1}
"""Metrics that pass the TRAINING -> BLENDING gates (trained, improved, healthy gradients)."""


def walk_to_blending(lc: Lifecycle, entity: str) -> None:
    """Move a DORMANT module through INSTANTIATED and TRAINING into BLENDING."""
    lc.transition(entity, M.INSTANTIATED, metrics={"available_slots": 1})
    lc.transition(entity, M.TRAINING)
    lc.transition(entity, M.BLENDING, metrics=BLEND_READY)

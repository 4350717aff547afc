"""Contribution: what each routing expert adds, measured by masking it on an evaluation batch.

Routing share says how much an expert is used, not whether it is needed: a load-balancing loss
spreads tokens evenly whatever each expert does with them. An expert's contribution is the rise
of the evaluation loss when the router may not pick it (seeds/000's contribution gates); the
expert coordinator prunes only experts whose contribution is low (`prune_contribution_threshold`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from projections.moe.surgery import ModelSurgery

__all__ = ["masked_contribution"]


@torch.no_grad()
def masked_contribution(surgery: ModelSurgery, layer: int, loss: Callable[[], float]) -> dict[str, float]:
    """Return, per routing expert of `layer`, `loss()` with it masked minus `loss()` with none masked.

    `loss` evaluates the model on a fixed evaluation batch (the same batch on every rank, so every
    rank gets the same values). The layer's routing mask is restored afterwards, even on error.
    """
    mask = surgery.routing_mask(layer)
    target = surgery.layer(layer)
    base = loss()
    found = {}
    try:
        for row, entity in surgery.routing_experts(layer).items():
            without = mask.clone()
            without[row] = False
            target.set_active(without.to(mask.device))
            found[entity] = loss() - base
    finally:
        target.set_active(mask)
    return found

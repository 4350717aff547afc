"""Need measured on an evaluation batch: each expert's contribution, each parked expert's affinity.

Routing share says how much an expert is used, not whether it is needed: a load-balancing loss
spreads tokens evenly whatever each expert does with them. An expert's contribution is the rise
of the evaluation loss when the router may not pick it (seeds/000's contribution gates); the
expert coordinator prunes only experts whose contribution is low (`prune_contribution_threshold`).

A parked expert's affinity is the fraction of a layer's evaluation inputs its router row would
score above every routing expert's: inputs like its basin are back when it is high, and the
coordinator revives it (`revive_affinity_threshold`). Recorded as the layer metric
`revival:<expert id>` (`revival_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lifecycle_es.controllers import REVIVAL
from lifecycle_es.errors import UsageError
from projections.moe.surgery import ModelSurgery

__all__ = ["masked_contribution", "revival_affinity", "revival_metrics"]


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


@torch.no_grad()
def revival_affinity(surgery: ModelSurgery, layer: int, inputs: torch.Tensor) -> dict[str, float]:
    """Return, per parked expert of `layer`, the fraction of `inputs` [tokens, d_model] that its
    router row would score above every routing expert's row.

    For layers whose router scores slot i as `inputs @ row_i` (one router parameter of shape
    [capacity, d_model], as `MoELayer`'s); other routers are refused with a `UsageError`.
    """
    router = surgery.layer(layer).router_parameters()
    if len(router) != 1:
        raise UsageError(f"layer {layer}: revival affinity needs one router parameter, got {sorted(router)}")
    ((name, weight),) = router.items()
    if weight.dim() != 2 or int(weight.shape[1]) != int(inputs.shape[-1]):
        raise UsageError(
            f"layer {layer}: router {name} of shape {tuple(weight.shape)} does not score the inputs"
        )
    rows = list(surgery.routing_experts(layer))
    best = (inputs @ weight[rows].t()).amax(dim=-1) if rows else None
    found = {}
    for entity, parked in sorted(surgery.parking.parked.items()):
        if parked.layer != layer:
            continue
        score = inputs @ parked.weights[name].to(inputs.device, weight.dtype)
        wins = torch.ones_like(score, dtype=torch.bool) if best is None else score > best
        found[entity] = float(wins.float().mean())
    return found


def revival_metrics(surgery: ModelSurgery, layer: int, inputs: torch.Tensor) -> dict[str, float]:
    """Return `revival_affinity` as the layer metrics the coordinator reads (`revival:<id>`)."""
    return {REVIVAL + entity: value for entity, value in revival_affinity(surgery, layer, inputs).items()}

"""A split's push direction from the inputs routed to its parent: the main direction that separates them.

A split pushes the router rows of parent and child apart along a direction orthogonal to the
parent's row (`SlotEditor.push_apart`), so each takes one side of a hyperplane through the
parent's basin. A seeded random direction cuts the basin anywhere; the top principal component
of the inputs the parent is routed (those whose best routing row is the parent's) cuts it
where those inputs spread most, which is where two kinds of input sharing it lie apart.

The direction is computed once, on the leader, from its evaluation inputs, and recorded in the
SPLIT decision (`direction`), so replay and follower ranks read it and never recompute floats;
without inputs, or with fewer than two routed to the parent, the decision records none and
surgery falls back to the seeded direction.
"""

from __future__ import annotations

import torch

from projections.moe.surgery import ModelSurgery

__all__ = ["principal_direction", "split_direction"]

MIN_ROUTED = 2
"""Inputs the parent must be routed for a direction to exist (one input has no spread)."""


@torch.no_grad()
def principal_direction(routed: torch.Tensor, row: torch.Tensor) -> list[float] | None:
    """Return the unit top principal component of `routed` [tokens, d] orthogonal to `row` [d].

    None with fewer than `MIN_ROUTED` inputs or when nothing of their spread is orthogonal to
    `row`. The sign is fixed (largest entry positive) so equal inputs give equal bytes.
    """
    if routed.dim() != 2 or int(routed.shape[0]) < MIN_ROUTED:
        return None
    x = routed.double()
    unit = row.double().flatten() / row.double().norm().clamp_min(1e-12)
    x = x - x.mean(dim=0)
    x = x - (x @ unit)[:, None] * unit  # only spread the push can act on
    _, singular, vh = torch.linalg.svd(x, full_matrices=False)
    if float(singular[0]) <= 1e-9 * max(float(x.abs().max()), 1.0):
        return None
    top = vh[0] / vh[0].norm()
    if float(top[int(top.abs().argmax())]) < 0:
        top = -top
    return [float(v) for v in top]


def split_direction(
    surgery: ModelSurgery, layer: int, parent: str, inputs: torch.Tensor
) -> list[float] | None:
    """Return the push direction of a split of `parent` in `layer`, from evaluation `inputs` [tokens, d].

    The inputs routed to the parent are those its router row scores above every other routing
    row's (for routers scoring `inputs @ row`, as `revival_affinity` reads them); None when the
    layer's router is not one [capacity, d] parameter or no direction exists.
    """
    router = surgery.layer(layer).router_parameters()
    if len(router) != 1:
        return None
    (weight,) = router.values()
    routing = surgery.routing_experts(layer)
    rows = list(routing)
    if weight.dim() != 2 or int(weight.shape[1]) != int(inputs.shape[-1]) or parent not in routing.values():
        return None
    own = rows[list(routing.values()).index(parent)]
    best = (inputs @ weight[rows].detach().t().to(inputs.dtype)).argmax(dim=-1)
    routed = inputs[torch.tensor(rows, device=best.device)[best] == own]
    return principal_direction(routed, weight[own].detach())

"""A two-slot layer whose expert was split or cloned, and a basin whose two halves need opposite outputs."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import JsonValue

from lifecycle_es import Action, DecisionMade, Lifecycle
from lifecycle_es.controllers import expert_id
from lifecycle_es.controllers._basin_math import basin_overlap
from projections.moe import ModelSurgery, MoELayer

D_MODEL, D_HIDDEN, TOKENS, RUN = 8, 16, 64, "split"
PARENT, CHILD = expert_id(0, 0), expert_id(0, 1)


def split_layer(
    action: Action, metrics: Mapping[str, JsonValue], config: Mapping[str, JsonValue] | None = None
) -> tuple[MoELayer, torch.optim.Optimizer]:
    """A two-slot top-2 layer whose expert PARENT made CHILD by `action` (SPLIT or SPAWN) with `metrics`."""
    layer = MoELayer(D_MODEL, D_HIDDEN, 2, top_k=2, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    lc = Lifecycle(run_id=RUN)
    surgery = ModelSurgery({0: layer}, optimizer)
    lc.register(PARENT, "expert", state="active", layer=0, slot=0)
    lc.register(CHILD, "expert", layer=0, slot=1, parent=PARENT)
    decision = DecisionMade(
        run_id=RUN,
        action=action,
        layer=0,
        entity=PARENT if action == Action.SPLIT else CHILD,
        parent=PARENT,
        children=[CHILD],
        metrics_at_decision=dict(metrics),
        config_snapshot=dict(config or {}),
        seed=7,
    )
    lc.append([decision])
    lc.transition(CHILD, "cooling")
    surgery.apply(lc.log.read())
    return layer, optimizer


def halves(direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two halves of one basin on either side of `direction`, needing opposite outputs: x, y, types."""
    g = torch.Generator().manual_seed(1)
    side = torch.tensor([1.0, -1.0]).repeat_interleave(TOKENS // 2)
    x = 3 * side[:, None] * direction + 0.3 * torch.randn(TOKENS, D_MODEL, generator=g)
    target = side[:, None] * torch.ones(D_MODEL)
    return x, target, (side < 0).long()


def overlap_after_training(
    layer: MoELayer, opt: torch.optim.Optimizer, direction: torch.Tensor, steps: int
) -> float:
    """Train the layer `steps` steps on `halves(direction)`; return the basin overlap of its two slots."""
    x, target, types = halves(direction)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(layer(x), target).backward()
        opt.step()
    with torch.no_grad():
        gates = torch.softmax(x @ layer.router_weight.t(), dim=-1)  # top-2 of 2 slots: every slot
    per_type = torch.stack([gates[types == t].sum(0) for t in (0, 1)])  # [type, slot]
    basins = per_type / per_type.sum(0)
    return basin_overlap(basins[:, 0].tolist(), basins[:, 1].tolist())

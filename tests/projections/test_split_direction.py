"""A split pushed along the main direction of its parent's routed inputs divides their basin best."""

from __future__ import annotations

import pytest
import torch

from lifecycle_es import Action, DecisionMade, Lifecycle
from lifecycle_es.controllers import expert_id
from lifecycle_es.controllers._basin_math import basin_overlap
from projections.moe import ModelSurgery, MoELayer
from projections.moe.split_direction import principal_direction, split_direction

D_MODEL, D_HIDDEN, TOKENS, RUN = 8, 16, 64, "direction"
PARENT, CHILD = expert_id(0, 0), expert_id(0, 1)
SEPARATING = torch.nn.functional.normalize(torch.arange(1.0, D_MODEL + 1.0), dim=0)
"""The direction along which the parent's two kinds of input lie apart."""

pytestmark = pytest.mark.usefixtures("one_thread")


def _halves() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two halves of one basin on either side of SEPARATING, needing opposite outputs: x, y, types."""
    g = torch.Generator().manual_seed(1)
    side = torch.tensor([1.0, -1.0]).repeat_interleave(TOKENS // 2)
    x = 3 * side[:, None] * SEPARATING + 0.3 * torch.randn(TOKENS, D_MODEL, generator=g)
    return x, side[:, None] * torch.ones(D_MODEL), (side < 0).long()


def _overlap_after_split(directed: bool, steps: int = 30) -> float:
    """Split the parent (push 0.5, along its inputs' direction or a seeded one), train; return the overlap."""
    x, target, types = _halves()
    layer = MoELayer(D_MODEL, D_HIDDEN, 2, top_k=2, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    lc, surgery = Lifecycle(run_id=RUN), ModelSurgery({0: layer}, opt)
    lc.register(PARENT, "expert", state="active", layer=0, slot=0)
    surgery.apply(lc.log.read())
    metrics: dict[str, object] = {"share": 1.0, "overload_duration": 2, "slot": 1, "push": 0.5}
    if directed:
        metrics["direction"] = split_direction(surgery, 0, PARENT, x)
    lc.register(CHILD, "expert", layer=0, slot=1, parent=PARENT)
    lc.append(
        [
            DecisionMade(
                run_id=RUN,
                action=Action.SPLIT,
                layer=0,
                entity=PARENT,
                parent=PARENT,
                children=[CHILD],
                metrics_at_decision=metrics,
                seed=7,
            )
        ]
    )
    lc.transition(CHILD, "cooling")
    surgery.apply(lc.log.read())
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(layer(x), target).backward()
        opt.step()
    with torch.no_grad():
        gates = torch.softmax(x @ layer.router_weight.t(), dim=-1)  # top-2 of 2 slots: every slot
    per_type = torch.stack([gates[types == t].sum(0) for t in (0, 1)])  # [type, slot]
    basins = per_type / per_type.sum(0)
    return basin_overlap(basins[:, 0].tolist(), basins[:, 1].tolist())


def test_the_direction_is_the_main_spread_of_the_routed_inputs_orthogonal_to_the_row() -> None:
    """principal_direction finds the separating direction, orthogonal to the parent row, as a unit vector."""
    x, _, _ = _halves()
    row = torch.zeros(D_MODEL).index_fill_(0, torch.tensor([0]), 1.0)
    found = torch.tensor(principal_direction(x, row), dtype=torch.float64)
    expected = SEPARATING.double().clone()
    expected[0] = 0.0
    assert float(found.norm()) == pytest.approx(1.0)
    assert abs(float(found[0])) < 1e-9
    assert abs(float(found @ expected)) / float(expected.norm()) > 0.95


def test_a_directed_split_leaves_less_overlap_than_a_seeded_one() -> None:
    """On a basin whose two halves need opposite outputs, the pair's overlap after training is lower when
    the push follows the routed inputs' main direction than a seeded direction."""
    directed, seeded = _overlap_after_split(True), _overlap_after_split(False)
    assert directed < seeded


def test_without_inputs_routed_to_the_parent_there_is_no_direction() -> None:
    """Fewer than two routed inputs give no direction: the split falls back to the seeded push."""
    assert principal_direction(torch.ones(1, D_MODEL), torch.ones(D_MODEL)) is None

"""A cloned spawn divides its source's basin as a split does: surgery applies its recorded push."""

from __future__ import annotations

import pytest
import torch

from lifecycle_es import Action, DecisionMade, Lifecycle
from lifecycle_es.controllers import expert_id
from projections.moe import ModelSurgery, MoELayer

D_MODEL, D_HIDDEN, RUN = 8, 16, "spawn-push"
SOURCE, CHILD = expert_id(0, 0), expert_id(0, 1)

pytestmark = pytest.mark.usefixtures("one_thread")


def _spawned(push: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the router row of the source before, and the router rows after a cloned spawn."""
    layer = MoELayer(D_MODEL, D_HIDDEN, 2, top_k=2, generator=torch.Generator().manual_seed(0))
    before = layer.router_weight.detach()[0].clone()
    lc = Lifecycle(run_id=RUN)
    surgery = ModelSurgery({0: layer}, torch.optim.Adam(layer.parameters(), lr=1e-2))
    lc.register(SOURCE, "expert", state="active", layer=0, slot=0)
    lc.register(CHILD, "expert", layer=0, slot=1, parent=SOURCE)
    metrics: dict[str, float] = {"slot": 1.0} if push is None else {"slot": 1.0, "push": push}
    spawn = DecisionMade(
        run_id=RUN,
        action=Action.SPAWN,
        layer=0,
        entity=CHILD,
        parent=SOURCE,
        children=[CHILD],
        metrics_at_decision=metrics,
        config_snapshot={"spawn_init_strategy": "clone_and_perturb", "split_perturbation_scale": 0.0},
        seed=7,
    )
    lc.append([spawn])
    lc.transition(CHILD, "cooling")
    surgery.apply(lc.log.read())
    return before, layer.router_weight.detach()[:2].clone()


def test_a_cloned_spawn_with_a_push_moves_both_router_rows_apart_orthogonally() -> None:
    """Source and child rows end 2 * push * |row| apart, symmetric about the old row and orthogonal to it."""
    before, (source, child) = _spawned(0.5)
    delta = (source - child) / 2
    assert torch.allclose((source + child) / 2, before, atol=1e-6)
    assert float(delta.norm()) == pytest.approx(0.5 * float(before.norm()), rel=1e-5)
    assert abs(float(delta @ before)) < 1e-4 * float(before.norm()) ** 2


def test_a_cloned_spawn_without_a_push_is_a_plain_clone() -> None:
    """A spawn recording no push (as before the push existed) copies the source's row unmoved."""
    before, (source, child) = _spawned(None)
    assert torch.equal(source, before) and torch.equal(child, before)

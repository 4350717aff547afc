"""A cloned spawn divides its source's basin as a split does: surgery applies its recorded push."""

from __future__ import annotations

import pytest
import torch

from lifecycle_es import Action
from projections.moe import MoELayer
from tests.projections._split_task import D_HIDDEN, D_MODEL, split_layer

CLONE = {"spawn_init_strategy": "clone_and_perturb", "split_perturbation_scale": 0.0}

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(push: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the source's router row before, and the source's and child's after a cloned spawn."""
    before = MoELayer(D_MODEL, D_HIDDEN, 2, top_k=2, generator=torch.Generator().manual_seed(0))
    metrics = {"slot": 1} if push is None else {"slot": 1, "push": push}
    layer, _ = split_layer(Action.SPAWN, metrics, CLONE)
    rows = layer.router_weight.detach()
    return before.router_weight.detach()[0], rows[0], rows[1]


def test_a_cloned_spawn_with_a_push_moves_both_router_rows_apart_orthogonally() -> None:
    """Source and child rows end 2 * push * |row| apart, symmetric about the old row and orthogonal to it."""
    before, source, child = _rows(0.5)
    delta = (source - child) / 2
    assert torch.allclose((source + child) / 2, before, atol=1e-6)
    assert float(delta.norm()) == pytest.approx(0.5 * float(before.norm()), rel=1e-5)
    assert abs(float(delta @ before)) < 1e-4 * float(before.norm()) ** 2


def test_a_cloned_spawn_without_a_push_is_a_plain_clone() -> None:
    """A spawn recording no push (as before the push existed) copies the source's row unmoved."""
    before, source, child = _rows(None)
    assert torch.equal(source, before) and torch.equal(child, before)

"""A split pushed along the main direction of its parent's routed inputs divides their basin best."""

from __future__ import annotations

import pytest
import torch

from lifecycle_es import Action, Lifecycle
from projections.moe import ModelSurgery, MoELayer
from projections.moe.split_direction import principal_direction, split_direction
from tests.projections._split_task import (
    D_HIDDEN,
    D_MODEL,
    PARENT,
    RUN,
    halves,
    overlap_after_training,
    split_layer,
)

SEPARATING = torch.nn.functional.normalize(torch.arange(1.0, D_MODEL + 1.0), dim=0)
"""The direction along which the parent's two kinds of input lie apart."""
SPLIT = {"share": 1.0, "overload_duration": 2, "slot": 1, "push": 0.5}

pytestmark = pytest.mark.usefixtures("one_thread")


def _direction() -> list[float]:
    """The direction a split of PARENT records when PARENT alone routes the halves' inputs."""
    layer = MoELayer(D_MODEL, D_HIDDEN, 2, top_k=2, generator=torch.Generator().manual_seed(0))
    lc, surgery = Lifecycle(run_id=RUN), ModelSurgery({0: layer}, torch.optim.Adam(layer.parameters()))
    lc.register(PARENT, "expert", state="active", layer=0, slot=0)
    surgery.apply(lc.log.read())
    found = split_direction(surgery, 0, PARENT, halves(SEPARATING)[0])
    assert found is not None
    return found


def test_the_direction_is_the_main_spread_of_the_routed_inputs_orthogonal_to_the_row() -> None:
    """principal_direction finds the separating direction, orthogonal to the parent row, as a unit vector."""
    row = torch.zeros(D_MODEL).index_fill_(0, torch.tensor([0]), 1.0)
    found = torch.tensor(principal_direction(halves(SEPARATING)[0], row), dtype=torch.float64)
    expected = SEPARATING.double().clone()
    expected[0] = 0.0
    assert float(found.norm()) == pytest.approx(1.0)
    assert abs(float(found[0])) < 1e-9
    assert abs(float(found @ expected)) / float(expected.norm()) > 0.95


def test_a_directed_split_leaves_less_overlap_than_a_seeded_one() -> None:
    """On a basin whose two halves need opposite outputs, the pair's overlap after training is lower when
    the push follows the routed inputs' main direction than a seeded direction."""
    directed_split = split_layer(Action.SPLIT, {**SPLIT, "direction": _direction()})
    directed = overlap_after_training(*directed_split, SEPARATING, 30)
    seeded = overlap_after_training(*split_layer(Action.SPLIT, SPLIT), SEPARATING, 30)
    assert directed < seeded


def test_without_inputs_routed_to_the_parent_there_is_no_direction() -> None:
    """Fewer than two routed inputs give no direction: the split falls back to the seeded push."""
    assert principal_direction(torch.ones(1, D_MODEL), torch.ones(D_MODEL)) is None

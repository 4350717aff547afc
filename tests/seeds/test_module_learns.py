"""A `module` seed's blueprint learns the task in every state whose output counts (seeds/000)."""

from __future__ import annotations

import pytest
import torch

from lifecycle_es import Lifecycle
from lifecycle_es.specs import KasminaState, ModuleState
from projections.seeds import SeedMode
from projections.seeds.modes import learns
from tests.seeds._rig import IN, Rig, passing_gates

M, K = ModuleState, KasminaState
_WALK: dict[str, list[str]] = {
    "module": ["INSTANTIATED", "TRAINING", "BLENDING", "HOLDING", "INTEGRATED"],
    "kasmina": ["GERMINATED", "TRAINING", "GRAFTING", "STABILIZATION", "EVALUATING"],
}


def _seed_in(spec: str, state: str) -> Rig:
    """A rig whose only seed (slot 0, residual MLP) was walked into `state`, 3 steps in each state."""
    rig = Rig()
    lc = Lifecycle(gates=passing_gates())
    lc.register("s", spec, layer=0, slot=0, attrs={"blueprint": "residual_mlp"})
    rig.surgery.apply(lc.log.read())
    walk = _WALK[spec][: _WALK[spec].index(state) + 1]
    for step, to in zip(range(3, 100, 3), walk, strict=False):
        rig.train_step(step)  # ticks too: 3 steps in each state, so a blending seed's alpha moves off 0
        lc.advance(step)
        lc.transition("s", to, step=step)
        rig.surgery.apply(lc.log.read(rig.surgery.seq))
    rig.surgery.tick(3 * len(walk) + 3)
    return rig


def _task_gradient(rig: Rig) -> torch.Tensor:
    """The gradient a task loss on the layer's output gives the blueprint's first weight, per row."""
    x = torch.linspace(-1.0, 1.0, 5 * IN).reshape(5, IN)
    rig.optimizer.zero_grad(set_to_none=True)
    rig.layer(x).square().sum().backward()
    w1 = rig.layer.slot_parameters("residual_mlp")["w1"]
    return torch.zeros_like(w1) if w1.grad is None else w1.grad  # None: no row took a gradient


@pytest.mark.parametrize("state", [M.BLENDING.value, M.HOLDING.value, M.INTEGRATED.value])
def test_a_module_blueprint_gets_the_task_gradient_once_its_output_counts(state: str) -> None:
    """A module in BLENDING, HOLDING or INTEGRATED gets a task-loss gradient on its row and no other row."""
    rig = _seed_in("module", state)
    assert rig.layer.modes[0].item() != SeedMode.HOST and rig.layer.alpha[0].item() > 0
    assert rig.layer.learning.tolist() == [True, False, False, False]
    grad = _task_gradient(rig)
    assert grad[0].abs().sum() > 0 and not grad[1:].any()


@pytest.mark.parametrize("state", [K.GRAFTING.value, K.STABILIZATION.value, K.EVALUATING.value])
def test_a_kasmina_blueprint_stays_frozen_from_grafting_to_evaluating(state: str) -> None:
    """A kasmina seed grafting, stabilizing or evaluating gets no task gradient on its weights (unchanged)."""
    rig = _seed_in("kasmina", state)
    assert rig.layer.alpha[0].item() > 0 and not rig.layer.learning.any()
    assert not _task_gradient(rig).any()


def test_a_blending_module_moves_its_weights_with_the_host() -> None:
    """A training step moves a BLENDING module's blueprint row (its moments were kept, not zeroed)."""
    rig = _seed_in("module", M.BLENDING.value)
    w1 = rig.layer.slot_parameters("residual_mlp")["w1"]
    moments = rig.optimizer.state[w1]
    assert moments and moments["exp_avg_sq"][0].abs().sum() > 0
    before = w1[0].detach().clone()
    rig.train_step(20)
    assert not torch.equal(w1[0].detach(), before)


def test_learning_flags_survive_a_set_modes_without_them() -> None:
    """set_modes without flags keeps the last flags (an ablation that sets modes back leaves them alone)."""
    rig = _seed_in("module", M.BLENDING.value)
    layer = rig.layer
    modes, kinds = layer.modes.tolist(), layer.kinds.tolist()
    layer.set_modes([SeedMode.HOST] * layer.chunks, kinds)
    assert not layer.any_active and not layer.any_learning
    layer.set_modes(modes, kinds)
    assert layer.learning.tolist() == [True, False, False, False] and layer.any_learning
    assert _task_gradient(rig)[0].abs().sum() > 0


def test_the_learning_table_follows_seeds_000() -> None:
    """A module learns in TRAINING, BLENDING, HOLDING, INTEGRATED; kasmina in TRAINING, FINE_TUNING."""
    assert [s.value for s in M if learns("module", s.value)] == _WALK["module"][1:]
    assert [s.value for s in K if learns("kasmina", s.value)] == ["TRAINING", "FINE_TUNING"]

"""Splits that diverge: the router push divides a basin, a pair that never diverges is undone."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest
import torch

from lifecycle_es import Action, DecisionMade, EntityState, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import ExpertCoordinator, ExpertCoordinatorConfig, expert_id
from lifecycle_es.controllers._checks import lineage
from projections.moe import ModelSurgery, MoELayer
from tests.domain._coordinator_run import SPLIT_CONFIG
from tests.projections._split_task import overlap_after_training, split_layer

D_MODEL, D_HIDDEN, TOKENS = 8, 16, 64
RUN, EVERY = "split", 10
CONFIG = SPLIT_CONFIG


pytestmark = pytest.mark.usefixtures("one_thread")


def _split_layer(push: float) -> tuple[MoELayer, torch.optim.Optimizer]:
    """A two-slot top-2 layer whose expert L0_E0 was split into L0_E1 with router push `push`."""
    return split_layer(Action.SPLIT, {"share": 0.5, "overload_duration": 2, "slot": 1, "push": push})


def test_a_pushed_split_divides_a_basin_whose_halves_need_different_functions() -> None:
    """With the router push, parent and child each take one half; a plain clone keeps sharing both."""
    pushed, pushed_opt = _split_layer(0.5)
    rows = pushed.router_weight.detach()
    direction = (rows[0] - rows[1]) / (rows[0] - rows[1]).norm()
    assert abs(float(direction @ rows[0])) < 0.5 * float(rows[0].norm())  # mostly across the parent row
    clone, clone_opt = _split_layer(0.0)
    at_birth = [
        overlap_after_training(m, o, direction, 0) for m, o in ((pushed, pushed_opt), (clone, clone_opt))
    ]
    assert at_birth[0] < CONFIG.split_divergence_overlap < at_birth[1]
    trained = [
        overlap_after_training(m, o, direction, 30) for m, o in ((pushed, pushed_opt), (clone, clone_opt))
    ]
    assert trained[0] < at_birth[0] and trained[0] < trained[1] - 0.2  # training widens the gap


def test_the_push_is_the_same_bytes_on_every_build() -> None:
    """Two builds of the same split make bit-identical router rows (seeded CPU draws)."""
    a, _ = _split_layer(0.5)
    b, _ = _split_layer(0.5)
    assert torch.equal(a.router_weight, b.router_weight)


class _Run:
    """A lifecycle with its coordinator and surgery over a four-slot layer, driven by checkpoints."""

    def __init__(self, config: ExpertCoordinatorConfig = CONFIG) -> None:
        self.lc = Lifecycle(run_id=RUN, config=LifecycleConfig(metric_window=config.basin_window_size))
        self.lc.start()
        self.coordinator = ExpertCoordinator(config, {0: 4})
        self.coordinator.register_initial(self.lc, 0, 2)
        self.layer = MoELayer(D_MODEL, D_HIDDEN, 4, generator=torch.Generator().manual_seed(0))
        self.optimizer = torch.optim.Adam(self.layer.parameters(), lr=1e-2)
        self.surgery = ModelSurgery({0: self.layer}, self.optimizer)
        self.step = 0
        self.decided: list[DecisionMade] = []

    def checkpoint(self, shares: Mapping[str, float], types: Mapping[str, int]) -> None:
        """Observe each routing expert with its share, all its tokens of type `types[e]`; decide."""
        self.step += EVERY
        routing = [e.entity for e in self.lc.registry.live() if e.state in ("cooling", "active", "dormant")]
        experts = {
            e: {
                "share": shares.get(e, 0.0),
                **{f"token_type.{k}": float(types.get(e, 9) == k) for k in range(2)},
            }
            for e in routing
        }
        layers = {0: {"entropy": 0.5, "n_eff": 1.6, "top2_share": 1.0, "dead_count": 0.0, "n_active": 2.0}}
        self.lc.append(
            self.coordinator.observations(run_id=RUN, step=self.step, experts=experts, layers=layers)
        )
        events = self.coordinator.decide(self.lc.registry, run_id=RUN, step=self.step)
        self.lc.append(events)
        self.lc.seal(self.step)
        self.surgery.apply(self.lc.log.read(after=self.surgery.seq))
        self.decided += [e for e in events if isinstance(e, DecisionMade)]


E0, E1, E2 = (expert_id(0, i) for i in range(3))


def _split_then(run: _Run, child_type: int, checkpoints: int, child_share: float = 0.3) -> None:
    """Overload E0 until it splits into E2, then observe E2 serving `child_type` (E0 serves type 0)
    with `child_share` of the tokens, E0 the rest of its former 0.6."""
    while not run.decided:
        run.checkpoint({E0: 0.6, E1: 0.4}, {E0: 0, E1: 1})
    assert [(d.action, d.children) for d in run.decided] == [(Action.SPLIT, [E2])]
    for _ in range(checkpoints):
        run.checkpoint({E0: 0.6 - child_share, E1: 0.4, E2: child_share}, {E0: 0, E1: 1, E2: child_type})


def test_a_split_that_never_diverges_is_undone_as_a_failed_split() -> None:
    """A child that takes almost none of its parent's load for the window is pruned as `failed_split`."""
    run = _Run()
    _split_then(run, 0, CONFIG.cooling_period + CONFIG.split_divergence_window + 1, child_share=0.02)
    undo = [d for d in run.decided if d.action == Action.PRUNE]
    assert [(d.entity, d.parent, d.reason) for d in undo] == [(E2, E0, "failed_split")]
    assert undo[0].metrics_at_decision["checkpoints_overlapping"] == CONFIG.split_divergence_window
    assert not any(d.action == Action.MERGE for d in run.decided)
    assert run.surgery.routing_experts(0) == {0: E0, 1: E1}
    assert run.layer.active.tolist() == [True, True, False, False]


def test_a_split_that_diverges_is_kept() -> None:
    """A child that takes a basin of its own within the window stays active."""
    run = _Run()
    _split_then(run, child_type=1, checkpoints=CONFIG.cooling_period + CONFIG.split_divergence_window + 1)
    assert [d.action for d in run.decided] == [Action.SPLIT]
    assert run.lc.registry.get(E2).state == "active"


def test_the_parent_of_a_failed_split_is_not_split_again_within_the_cooldown() -> None:
    """After an undo the parent stays whole for split_cooldown_per_expert steps, however overloaded."""
    run = _Run(dataclasses.replace(CONFIG, split_cooldown_per_expert=100))
    _split_then(run, 0, CONFIG.cooling_period + CONFIG.split_divergence_window + 1, child_share=0.02)
    undone_at = run.step
    while run.step < undone_at + 80:
        run.checkpoint({E0: 0.6, E1: 0.4}, {E0: 0, E1: 1})
    assert [d.action for d in run.decided] == [Action.SPLIT, Action.PRUNE]


def test_replaying_a_failed_split_rebuilds_the_live_registry() -> None:
    """A registry folded from the log of a run with a split and its undo equals the live one."""
    run = _Run()
    _split_then(run, 0, CONFIG.cooling_period + CONFIG.split_divergence_window + 1, child_share=0.02)
    rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
    assert rebuilt.registry == run.lc.registry


def test_twins_split_from_one_parent_are_not_merged_within_the_split_cooldown() -> None:
    """Two children of one parent count as a split's twins: no merge until the younger is old enough."""

    def child(n: int, born: int) -> EntityState:
        return EntityState(expert_id(0, n), "expert", "active", n, 0, E0, born, born)

    young, old, grace = child(2, 100), child(3, 40), CONFIG.split_cooldown_per_expert
    held = lineage(100 + grace - 1, CONFIG, old, young)
    assert (held.passed, held.observed) == (False, {"steps_since_birth": grace - 1})
    assert lineage(100 + grace, CONFIG, old, young).passed

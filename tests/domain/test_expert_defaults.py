"""The coordinator's one default config: need-gated breadth starvation, init grace, and its wiring."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from torch import nn

from bus import MemoryLog
from lifecycle_es import Action, DecisionMade
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id
from lifecycle_es.errors import ConfigError, UsageError
from projections.moe import MoELayer
from projections.moe.type_loss import TYPE_LOSS_GAP, TypeLossTracker, need_metrics
from projections.training import ExpertLifecycle
from tests.domain._coordinator_run import EVERY, CoordinatorRun

RUN = "defaults"
DEFAULTS = ExpertCoordinatorConfig(max_experts_per_layer=8)
GAP = "user." + TYPE_LOSS_GAP


class Run(CoordinatorRun):
    """The coordinator under the defaults over one layer of 8 slots and 4 evenly loaded experts."""

    def __init__(self) -> None:
        super().__init__(DEFAULTS, run_id=RUN)

    def decided(
        self, *, breadth: float, user: Mapping[str, float] | None, shares: Mapping[str, float] | None = None
    ) -> list[DecisionMade]:
        """One checkpoint of routing `shares` (else even) at `breadth` with `user` metrics: its decisions."""
        events = self.checkpoint(shares, user=user, layer_extra={"basin_breadth": breadth})
        return [e for e in events if isinstance(e, DecisionMade)]

    def spawns(self, checkpoints: int, *, breadth: float, user: Mapping[str, float] | None) -> list[int]:
        """Run `checkpoints` checkpoints alike; return the steps at which a spawn was decided."""
        return [
            d.step
            for _ in range(checkpoints)
            for d in self.decided(breadth=breadth, user=user)
            if d.action == Action.SPAWN
        ]


def test_broad_basins_under_even_routing_do_not_spawn_while_every_type_is_fit_alike() -> None:
    """A balancing loss's even routing over broad basins spawns nothing while the type loss gap is small."""
    patience = DEFAULTS.spawn_patience
    assert Run().spawns(2 * patience, breadth=3.0, user={TYPE_LOSS_GAP: 0.2}) == []


def test_broad_basins_and_a_large_type_loss_gap_spawn_after_the_patience() -> None:
    """Broad basins with one type costing well above the mean starve the layer: a spawn at spawn_patience."""
    patience = DEFAULTS.spawn_patience
    assert Run().spawns(patience, breadth=3.0, user={TYPE_LOSS_GAP: 1.0}) == [patience * EVERY]


def test_narrow_basins_do_not_spawn_whatever_the_gap() -> None:
    """Experts that each serve one kind of token (breadth 1) are not starved, however large the gap."""
    assert Run().spawns(2 * DEFAULTS.spawn_patience, breadth=1.0, user={TYPE_LOSS_GAP: 3.0}) == []


def test_without_losses_the_breadth_test_decides_alone() -> None:
    """A loop that records no losses (no gap observed) is starved by broad basins alone."""
    patience = DEFAULTS.spawn_patience
    assert Run().spawns(patience, breadth=3.0, user=None) == [patience * EVERY]


def test_an_initial_expert_that_collapsed_is_not_pruned_within_the_init_grace() -> None:
    """An initial expert routed nothing from the start is pruned only after prune_init_grace checkpoints."""
    run, idle = Run(), expert_id(0, 3)
    shares = {expert_id(0, i): 1 / 3 for i in range(3)} | {idle: 0.0}
    pruned = [
        d.step
        for _ in range(DEFAULTS.prune_init_grace + 2)
        for d in run.decided(breadth=1.0, user=None, shares=shares)
        if d.action == Action.PRUNE
    ]
    assert pruned == [DEFAULTS.prune_init_grace * EVERY]


def test_the_defaults_are_need_aware_and_seeds_002_keeps_the_old_ones() -> None:
    """The defaults gate breadth starvation on the type loss gap, with init grace; seeds_002() has neither."""
    cfg, old = ExpertCoordinatorConfig(), ExpertCoordinatorConfig.seeds_002()
    assert (cfg.starvation_need_metric, cfg.starvation_breadth_threshold) == (TYPE_LOSS_GAP, 1.6)
    assert cfg.starvation_entropy_threshold is None and cfg.prune_init_grace > 0
    assert (old.starvation_need_metric, old.starvation_breadth_threshold, old.prune_init_grace) == (
        None,
        None,
        0,
    )
    assert old.starvation_entropy_threshold == 0.95


def test_the_type_loss_gap_is_the_worst_types_mean_loss_over_the_mean_minus_one() -> None:
    """Types of mean loss 1 and 3 give a gap of 3 / 2 - 1 = 0.5; a type with too few tokens is left out."""
    assert need_metrics([8.0, 24.0, 100.0], [8.0, 8.0, 1.0]) == {TYPE_LOSS_GAP: 0.5}
    assert need_metrics([8.0, 0.0], [8.0, 0.0]) == {}  # one type: no gap
    tracker = TypeLossTracker(num_types=2)
    tracker.record(torch.tensor([0] * 8 + [1] * 8), torch.tensor([1.0] * 8 + [3.0] * 8))
    assert tracker.collect() == {TYPE_LOSS_GAP: 0.5}
    assert tracker.collect() == {}  # the interval started over


def test_losses_not_one_per_token_are_refused() -> None:
    """record() with a loss tensor shaped unlike the token types raises a UsageError."""
    with pytest.raises(UsageError, match="one value per token"):
        TypeLossTracker(num_types=2).record(torch.zeros(4, dtype=torch.long), torch.zeros(4, 1))


def _model(slots: int) -> nn.Module:
    return nn.Sequential(MoELayer(8, 8, slots, top_k=2, generator=torch.Generator().manual_seed(0)))


def test_the_expert_lifecycle_records_the_type_loss_gap_from_recorded_losses() -> None:
    """record(types, losses) makes each evaluation record user.type_loss_gap on the layer."""
    model = _model(8)
    lifecycle = ExpertLifecycle(model, torch.optim.Adam(model.parameters()), MemoryLog(RUN), num_types=2)
    lifecycle.start(seed=0)
    types = torch.tensor([0] * 8 + [1] * 8)
    model(torch.randn(16, 8, generator=torch.Generator().manual_seed(1)))
    lifecycle.record(types, torch.tensor([1.0] * 8 + [3.0] * 8))
    lifecycle.evaluate(10)
    layer = [r for r in lifecycle.log.read() if r["kind"] == "MetricsObserved" and r["entity"] is None]
    assert layer[-1]["metrics"][GAP] == 0.5


def test_a_masked_layer_with_fewer_slots_than_the_cap_is_refused_at_wiring() -> None:
    """An explicit max_experts_per_layer above a masked layer's slots is a ConfigError naming the layer."""
    model = _model(4)
    with pytest.raises(ConfigError, match=r"exceeds the slots of masked layer\(s\) \{0: 4\}"):
        ExpertLifecycle(
            model, torch.optim.Adam(model.parameters()), MemoryLog(RUN), num_types=2, config=DEFAULTS
        )


def test_without_a_config_the_cap_is_lowered_to_the_slots_and_recorded() -> None:
    """config=None on a masked 4-slot layer caps growth at 4, and RunStarted records that cap."""
    model = _model(4)
    lifecycle = ExpertLifecycle(model, torch.optim.Adam(model.parameters()), MemoryLog(RUN), num_types=2)
    lifecycle.start(seed=0)
    started = next(r for r in lifecycle.log.read() if r["kind"] == "RunStarted")
    assert lifecycle.config.max_experts_per_layer == 4
    assert started["config"]["lifecycle"]["max_experts_per_layer"] == 4

"""Need-aware signals: a user metric starves a layer, contribution and an init grace hold prunes back."""

from __future__ import annotations

import dataclasses

import torch

from lifecycle_es import Action, Lifecycle, LifecycleConfig, MetricsObserved
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id
from lifecycle_es.events import EventBase
from projections.moe import ModelSurgery, MoELayer, masked_contribution
from tests.domain._coordinator_run import EVERY, CoordinatorRun, decisions, gate_checks

RUN, N = "need", 3
CONFIG = ExpertCoordinatorConfig.seeds_002(
    spawn_patience=N,
    prune_patience=N,
    cooling_period=1,
    spawn_cooldown_steps=0,
    basin_window_size=20,
    prune_init_grace=0,
    starvation_need_metric="worst_class_loss",
    starvation_need_threshold=0.5,
)
"""The need test on: starved while the worst class's loss is at least 0.5."""
E0, E1, E2, E3 = (expert_id(0, i) for i in range(4))


def Run(config: ExpertCoordinatorConfig = CONFIG) -> CoordinatorRun:
    """A lifecycle with its coordinator over one layer of 8 slots and 4 experts, driven by checkpoints."""
    return CoordinatorRun(config, run_id=RUN)


def _gate(events: list[EventBase], name: str) -> tuple[bool, dict[str, float]]:
    found = [(o.passed, o.observed) for _, o in gate_checks(events, name)]
    assert len(found) == 1, f"{name}: {len(found)} checks"
    return found[0]


def test_even_routing_does_not_starve_a_layer_whose_need_metric_is_met() -> None:
    """Under a balancing loss (even shares, normalized entropy 1) a low worst-class loss never spawns."""
    run = Run()
    spawned = [
        d
        for _ in range(2 * N)
        for d in decisions(run.checkpoint(user={"worst_class_loss": 0.1}), Action.SPAWN)
    ]
    assert spawned == []


def test_a_need_metric_above_its_threshold_starves_the_layer_whatever_the_spread() -> None:
    """A worst-class loss above the threshold for spawn_patience checkpoints spawns, with it as evidence."""
    run = Run()
    for _ in range(N - 1):
        assert not decisions(run.checkpoint(user={"worst_class_loss": 0.8}), Action.SPAWN)
    events = run.checkpoint(user={"worst_class_loss": 0.8})
    assert len(decisions(events, Action.SPAWN)) == 1
    passed, observed = _gate(events, "spawn.starvation_patience")
    assert passed and observed["user.worst_class_loss"] == 0.8


def test_a_checkpoint_without_the_need_metric_falls_back_to_the_spread_test() -> None:
    """With a need metric named but not observed, the spread test decides: even routing spawns."""
    run = Run()
    spawned = [d for _ in range(N) for d in decisions(run.checkpoint(), Action.SPAWN)]
    assert len(spawned) == 1 and spawned[0].step == N * EVERY


def test_user_metrics_are_recorded_on_every_layer_observation() -> None:
    """observations(user=) records each user metric as user.<name> on the layer's MetricsObserved."""
    run = Run()
    run.checkpoint(user={"worst_class_loss": 0.25})
    layer_events = [
        r
        for r in run.lc.log.read()
        if r["kind"] == MetricsObserved.model_fields["kind"].default and r["entity"] is None
    ]
    assert layer_events[-1]["metrics"]["user.worst_class_loss"] == 0.25


def test_a_dormant_expert_that_still_contributes_is_not_pruned() -> None:
    """Low share alone does not prune: a contribution above the threshold holds the prune back."""
    run = Run()
    for _ in range(N + 1):
        events = run.checkpoint({E3: 0.0}, extra={E3: {"contribution": 0.2}})
    assert not decisions(events, Action.PRUNE)
    assert _gate(events, "prune.low_contribution") == (False, {"contribution": 0.2})
    events = run.checkpoint({E3: 0.0}, extra={E3: {"contribution": 0.0}})
    assert [d.entity for d in decisions(events, Action.PRUNE)] == [E3]


def test_an_expert_collapsed_at_initialisation_gets_a_grace_period() -> None:
    """An initial expert dormant from the start is pruned only after prune_init_grace checkpoints."""
    grace = 2 * N
    run = Run(dataclasses.replace(CONFIG, prune_init_grace=grace))
    pruned_at = None
    for k in range(1, 3 * N):
        if decisions(run.checkpoint({E3: 0.0}), Action.PRUNE):
            pruned_at = k
            break
    assert pruned_at == grace


def test_replaying_need_decisions_rebuilds_the_live_registry() -> None:
    """A registry folded from the log of a run with need-driven spawns and prunes equals the live one."""
    run = Run()
    for _ in range(N + 2):
        run.checkpoint({E3: 0.0}, user={"worst_class_loss": 0.9})
    rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
    assert rebuilt.registry == run.lc.registry


def test_masking_an_expert_that_carries_the_function_raises_the_loss() -> None:
    """masked_contribution reports the loss rise of masking each expert and restores the mask."""
    torch.manual_seed(0)
    layer = MoELayer(4, 8, 2, top_k=1, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    lc = Lifecycle(run_id=RUN)
    surgery = ModelSurgery({0: layer}, optimizer)
    for i in range(2):
        lc.register(expert_id(0, i), "expert", state="active", layer=0, slot=i)
    surgery.apply(lc.log.read())
    with torch.no_grad():
        layer.router_weight.copy_(torch.tensor([[10.0, 0, 0, 0], [-10.0, 0, 0, 0]]))  # all to E0
        layer.w2[1].zero_()
        layer.b2[1].zero_()
    x = torch.ones(16, 4)
    target = layer(x).detach()
    contribution = masked_contribution(
        surgery, 0, lambda: float(torch.nn.functional.mse_loss(layer(x), target))
    )
    assert contribution[expert_id(0, 1)] == 0.0 < contribution[expert_id(0, 0)]
    assert layer.active.tolist() == [True, True]

"""Bounded state: a long run's registry keeps windows of live entities and live peers only, and
a replay of the log gives the same registry as the live one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lifecycle_es import (
    BUILTIN_SPECS,
    Action,
    DecisionMade,
    Lifecycle,
    LifecycleConfig,
    Registry,
    fold_record,
)
from lifecycle_es.controllers import ExpertCoordinator, ExpertCoordinatorConfig, expert_id, parse_expert_id
from lifecycle_es.registry import peer_of
from projections import RegistryProjection

LAYER = 0
LIVE = 6
"""Active experts the churn keeps in the layer between a spawn and a prune."""
WINDOW = 8
LAYER_METRICS = {"entropy": 1.0, "n_eff": 2.7, "top2_share": 0.5, "dead_count": 0.0, "n_active": 6.0}


def _lifecycle() -> tuple[Lifecycle, ExpertCoordinator]:
    lc = Lifecycle(run_id="bounded", config=LifecycleConfig(metric_window=WINDOW))
    lc.start(seed=3)
    coordinator = ExpertCoordinator(
        ExpertCoordinatorConfig.seeds_002(
            basin_window_size=WINDOW,
            spawn_patience=2,
            prune_patience=2,
            split_patience=2,
            merge_patience=2,
            cooling_period=2,
        ),
        capacity={LAYER: LIVE + 2},
    )
    coordinator.register_initial(lc, LAYER, LIVE)
    return lc, coordinator


def _observe(
    lc: Lifecycle, coordinator: ExpertCoordinator, step: int, experts: list[str], *, gone: str | None = None
) -> None:
    """Record each expert's share and its co-activation and cosine with every other one.

    `gone`, an expert that can no longer act, is named as a peer too, as a stale readout would.
    """
    readout = {}
    for i, entity in enumerate(experts):
        peers = [e for e in experts if e != entity] + ([gone] if gone else [])
        readout[entity] = {
            "share": 1.0 / len(experts),
            **{f"coact.{p}": 0.1 * i for p in peers},
            **{f"cosine.{p}": 0.01 * i for p in peers},
        }
    lc.append(
        coordinator.observations(run_id=lc.run_id, step=step, experts=readout, layers={LAYER: LAYER_METRICS})
    )


def churn(lc: Lifecycle, coordinator: ExpertCoordinator, generations: int) -> Iterator[int]:
    """Spawn one expert and prune the oldest each generation, observing every live one between.

    Yields each generation's number once its step is sealed. The spawned expert walks
    pending_spawn -> cooling -> active; the pruned one gets a `DecisionMade` and walks
    active -> dormant -> pending_prune -> archived, the moves the coordinator makes.
    """
    live = [expert_id(LAYER, i) for i in range(LIVE)]
    step, archived = 0, None
    for n in range(generations):
        step += 10
        free = next(s for s in range(LIVE + 2) if lc.registry.slot_holder("expert", LAYER, s) is None)
        child = expert_id(LAYER, LIVE + n)
        lc.register(child, "expert", layer=LAYER, slot=free, step=step)
        lc.transition(child, "cooling", step=step)
        _observe(lc, coordinator, step, [*live, child], gone=archived)
        lc.transition(child, "active", step=step)
        victim, live = live[0], [*live[1:], child]
        lc.append(
            [
                DecisionMade(
                    run_id=lc.run_id,
                    step=step,
                    action=Action.PRUNE,
                    entity=victim,
                    layer=LAYER,
                    parent=live[0],
                )
            ]
        )
        for target in ("dormant", "pending_prune", "archived"):
            lc.transition(victim, target, step=step)
        archived = victim
        lc.seal(step)
        yield n


def _window_owners_and_peers(registry: Registry) -> tuple[set[str], set[str], int]:
    """Return the entities owning windows, the peers named by window names, and how many windows."""
    windows = registry.to_state()["windows"]
    owners = {key for kind, key, _, _ in windows if kind == "entity"}
    peers = {peer_of(name) for _, _, name, _ in windows if peer_of(name)}
    return owners, peers, len(windows)


def test_a_long_churn_keeps_windows_only_for_live_experts_and_live_peers() -> None:
    """After 2000 spawns and prunes the windows name only live experts, and their count stops growing."""
    lc, coordinator = _lifecycle()
    sizes = []
    for n in churn(lc, coordinator, 2000):
        if n % 500 == 499:
            registry = lc.registry
            live = {e.entity for e in registry if registry.is_live(e.entity)}
            assert {e.entity for e in registry.live()} == live
            owners, peers, count = _window_owners_and_peers(registry)
            assert len(live) == LIVE
            assert owners == live
            assert peers == live - {min(live, key=parse_expert_id)}  # pair metrics stay on the first
            sizes.append(count)
            state = registry.to_state()
            assert {k for _, k, _ in state["last_decision"] if isinstance(k, str)} <= live
            assert len(state["failures"]) <= LIVE + 2  # one per slot
    assert len(set(sizes)) == 1, f"window counts grew over the run: {sizes}"
    archived = [e for e in lc.registry if e.state == "archived"]
    assert len(archived) == 2000
    assert all(lc.registry.latest_metrics(e.entity) == {} for e in archived)
    assert max(len(e.history) for e in archived) == 5  # a small record per archived expert


def test_a_replay_of_a_run_with_archived_experts_equals_the_live_registry() -> None:
    """Folding the log, a restored snapshot, a projection and a restarted writer equal the live registry."""
    lc, coordinator = _lifecycle()
    for _ in churn(lc, coordinator, 60):
        pass
    assert sum(e.state == "archived" for e in lc.registry) == 60
    records = lc.log.read()
    replayed = Registry(BUILTIN_SPECS, window=WINDOW)
    for record in records:
        fold_record(replayed, record)
    projection = RegistryProjection(window=WINDOW)
    projection.apply(records)
    restarted = Lifecycle(lc.log, config=LifecycleConfig(metric_window=WINDOW))
    restored = Registry.from_state(BUILTIN_SPECS, lc.registry.to_state())
    assert replayed == projection.registry == restarted.registry == restored == lc.registry
    assert replayed.to_state() == lc.registry.to_state()


@pytest.mark.parametrize("cut", [100, 400, 777])
def test_a_replay_from_any_cut_of_the_log_equals_the_live_registry_there(cut: int) -> None:
    """Snapshot at a seq, then fold the rest: the same registry as folding everything."""
    lc, coordinator = _lifecycle()
    for _ in churn(lc, coordinator, 40):
        pass
    records = lc.log.read()
    head = Registry(BUILTIN_SPECS, window=WINDOW)
    for record in records[:cut]:
        fold_record(head, record)
    resumed = Registry.from_state(BUILTIN_SPECS, head.to_state())
    for record in records[cut:]:
        fold_record(resumed, record)
    assert resumed == lc.registry

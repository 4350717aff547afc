"""The expert coordinator: spawn, prune, split and merge with patience, cooldowns, budgets and floors.

Every test drives a real `Lifecycle` on a `MemoryLog` checkpoint by checkpoint: basin metrics
go through `observations()`, `decide()` answers from the folded registry, and its events are
appended and the cycle sealed, exactly as a training loop does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pydoc
from collections.abc import Mapping
from typing import Any

import pytest

from lifecycle_es import (
    CODEC,
    Action,
    ConfigError,
    DecisionMade,
    EntityRegistered,
    GatesChecked,
    InvalidMetricError,
    Lifecycle,
    LifecycleConfig,
    TransitionApplied,
    UsageError,
)
from lifecycle_es.controllers import ExpertCoordinator, ExpertCoordinatorConfig, expert_id
from lifecycle_es.controllers._basin_math import (
    basin_overlap,
    decision_seed,
    js_divergence,
    topology_debt,
)
from lifecycle_es.events import EventBase, gate_results
from lifecycle_es.specs import (
    DEFAULT_INIT_STRATEGY,
    DEFAULT_PERTURBATION,
    INIT_STRATEGIES,
    ROUTING_STATES,
    ExpertState,
    MergeMetrics,
    PruneMetrics,
    SpawnMetrics,
    SplitMetrics,
    SurgerySettings,
)

RUN = "coordinator"
EVERY = 10
"""Training steps between two evaluation checkpoints."""
N = 3
"""The patience of every action in BASE."""
BASE = ExpertCoordinatorConfig.seeds_002(
    spawn_patience=N,
    prune_patience=N,
    split_patience=N,
    merge_patience=N,
    cooling_period=2,
    spawn_cooldown_steps=100,
    split_cooldown_per_expert=100,
    basin_window_size=20,
    starvation_entropy_threshold=None,
    prune_init_grace=0,
)
"""Short patience; starvation only from an explicit `topk_saturation`, so balanced layers stay put."""

Shares = Mapping[str, float]


def E(n: int, layer: int = 0) -> str:
    return expert_id(layer, n)


class Run:
    """A lifecycle with its coordinator, driven one evaluation checkpoint at a time."""

    def __init__(
        self,
        config: ExpertCoordinatorConfig = BASE,
        capacity: Mapping[int, int] | None = None,
        initial: Mapping[int, int] | None = None,
    ) -> None:
        self.config = config
        self.lc = Lifecycle(run_id=RUN, config=LifecycleConfig(metric_window=config.basin_window_size))
        self.lc.start()
        self.coordinator = ExpertCoordinator(config, capacity or {0: 8})
        for layer, count in (initial or {0: 4}).items():
            self.coordinator.register_initial(self.lc, layer, count)
        self.lc.seal(0)
        self.step = 0

    def state(self, entity: str) -> str:
        return self.lc.registry.get(entity).state

    def observe(
        self,
        shares: Shares | None = None,
        *,
        default: float = 0.25,
        experts: Mapping[str, Mapping[str, float]] | None = None,
        layers: Mapping[int, Mapping[str, float]] | None = None,
    ) -> None:
        """Record the next checkpoint: every routing expert, with its share from `shares` or `default`.

        Each expert's tokens are all of its own type (its slot), and no two experts' weights are
        alike, unless `experts` overrides their metrics; layer metrics follow from the shares.
        """
        self.step += EVERY
        registry = self.lc.registry
        routing = [e for e in registry if e.state in ("cooling", "active", "dormant")]
        metrics: dict[str, dict[str, float]] = {}
        for e in routing:
            capacity = self.coordinator.capacity[e.layer or 0]
            m = {"share": (shares or {}).get(e.entity, default)}
            m.update({f"token_type.{k}": float(k == e.slot) for k in range(capacity)})
            m.update({f"cosine.{o.entity}": 0.0 for o in routing if o.layer == e.layer and o is not e})
            m.update((experts or {}).get(e.entity, {}))
            metrics[e.entity] = m
        layer_metrics = {}
        for layer in self.coordinator.capacity:
            found = [m["share"] for name, m in metrics.items() if registry.get(name).layer == layer]
            layer_metrics[layer] = {**v2_layer_metrics(found), **(layers or {}).get(layer, {})}
        self.lc.append(
            self.coordinator.observations(run_id=RUN, step=self.step, experts=metrics, layers=layer_metrics)
        )

    def decide(self) -> list[EventBase]:
        """Ask the coordinator, append its events, seal the cycle; return the events."""
        events = self.coordinator.decide(self.lc.registry, run_id=RUN, step=self.step)
        self.lc.append(events)
        self.lc.seal(self.step)
        return events

    def checkpoint(self, shares: Shares | None = None, **observed: Any) -> list[EventBase]:
        self.observe(shares, **observed)
        return self.decide()


def v2_layer_metrics(shares: list[float]) -> dict[str, float]:
    """Layer metrics as ChronoMoE v2 computes them from shares, with no top-k saturation."""
    entropy = -math.fsum(s * math.log(s) for s in shares if s > 1e-10)
    top = sorted(shares, reverse=True)
    return {
        "entropy": entropy,
        "n_eff": math.exp(entropy),
        "top2_share": sum(top[:2]) if len(top) >= 2 else 1.0,
        "dead_count": float(sum(s == 0 for s in shares)),
        "n_active": float(sum(s > 0 for s in shares)),
        "topk_saturation": 0.0,
    }


def decisions(events: list[EventBase], action: Action | None = None) -> list[DecisionMade]:
    return [e for e in events if isinstance(e, DecisionMade) and action in (None, e.action)]


@dataclasses.dataclass(frozen=True)
class Checked:
    """One recorded gate check, flattened out of the `GatesChecked` that holds it."""

    entity: str
    from_state: str
    to_state: str
    gate: str
    passed: bool
    observed: dict[str, float]
    thresholds: dict[str, float]
    reason: str


def checks(events: list[EventBase]) -> list[Checked]:
    return [
        Checked(e.entity, e.from_state, e.to_state, *outcome)
        for e in events
        if isinstance(e, GatesChecked)
        for outcome in gate_results(CODEC.to_record(e))
    ]


def gate(events: list[EventBase], name: str) -> Checked:
    found = [e for e in checks(events) if e.gate == name]
    assert len(found) == 1, f"{name}: {len(found)} checks"
    return found[0]


def moves(events: list[EventBase]) -> list[tuple[str, str, str]]:
    return [(e.entity, e.from_state, e.to_state) for e in events if isinstance(e, TransitionApplied)]


def comparable(events: list[EventBase]) -> list[dict[str, Any]]:
    """The events as plain data, without the fields that differ on every build (id, wall time)."""
    return [{k: v for k, v in e.__dict__.items() if k not in ("event_id", "ts")} for e in events]


def identical(*entities: str, cosine: float = 0.99) -> dict[str, dict[str, float]]:
    """Metrics making experts serve the same tokens (type 0) with near-equal weights."""
    return {
        e: {
            "token_type.0": 1.0,
            **{f"token_type.{k}": 0.0 for k in range(1, 8)},
            **{f"cosine.{o}": cosine for o in entities if o != e},
        }
        for e in entities
    }


# -- config, ids, observations -------------------------------------------------------------------


def test_seeds_002_settings_are_chronomoe_v3s() -> None:
    """seeds_002() gives every setting seeds/002 names, and the snapshot is plain JSON of every field."""
    cfg = ExpertCoordinatorConfig.seeds_002()
    assert (
        cfg.spawn_patience,
        cfg.spawn_cooldown_steps,
        cfg.max_spawns_per_cycle,
        cfg.max_experts_per_layer,
        cfg.spawn_init_strategy,
    ) == (5, 500, 1, 16, "clone_and_perturb")
    assert (cfg.prune_patience, cfg.max_prunes_per_cycle, cfg.min_experts_per_layer) == (10, 1, 2)
    assert (
        cfg.split_share_threshold,
        cfg.split_patience,
        cfg.split_perturbation_scale,
        cfg.split_cooldown_per_expert,
    ) == (0.4, 5, 0.01, 1000)
    assert (cfg.merge_similarity_threshold, cfg.merge_overlap_threshold, cfg.merge_patience) == (0.95, 0.8, 8)
    assert (cfg.basin_window_size, cfg.lifecycle_eval_interval, cfg.cooling_period) == (50, 5, 3)
    snapshot = cfg.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert set(snapshot) == {f.name for f in dataclasses.fields(cfg)}


@pytest.mark.parametrize(
    "bad",
    [
        {"spawn_patience": 0},
        {"prune_patience": 2.5},
        {"max_spawns_per_cycle": -1},
        {"spawn_cooldown_steps": True},
        {"min_experts_per_layer": 17},
        {"spawn_init_strategy": "copy"},
        {"split_share_threshold": 1.0},
        {"split_share_threshold": 0},
        {"merge_overlap_threshold": float("nan")},
        {"merge_similarity_threshold": 1.5},
        {"starvation_entropy_threshold": 0.0},
        {"dormant_share_epsilon": -1e-9},
        {"merge_patience": 60},
        {"basin_window_size": 5},
    ],
)
def test_a_bad_config_value_is_refused_at_construction(bad: dict[str, Any]) -> None:
    """Out-of-range, mistyped or unsatisfiable values raise ConfigError naming the field."""
    with pytest.raises(
        ConfigError,
        match=next(iter(bad)) if next(iter(bad)) != "basin_window_size" else "exceeds basin_window_size",
    ):
        ExpertCoordinatorConfig(**bad)


def test_initial_experts_are_registered_active_in_their_slots() -> None:
    """register_initial appends L<layer>_E0.. straight into active, expert i in slot i, as one batch."""
    run = Run(capacity={0: 4, 3: 6}, initial={3: 5})
    assert [(e.entity, e.state, e.slot, e.layer) for e in run.lc.registry] == [
        (E(i, 3), "active", i, 3) for i in range(5)
    ]
    with pytest.raises(UsageError, match="count"):
        run.coordinator.register_initial(run.lc, 0, 5)
    with pytest.raises(UsageError, match="not managed"):
        run.coordinator.register_initial(run.lc, 1, 1)


def test_observations_are_one_validated_event_per_layer_and_expert() -> None:
    """Layer events (with the checkpoint's step) come first in each layer, then its experts by number."""
    coordinator = ExpertCoordinator(BASE, {0: 16, 1: 4})
    layer = v2_layer_metrics([0.5, 0.5])
    events = coordinator.observations(
        run_id=RUN,
        step=40,
        layers={1: layer, 0: layer},
        experts={E(10): {"share": 0.5}, E(9): {"share": 0.5}, E(0, 1): {"share": 1.0}},
    )
    assert [(e.entity, e.layer, e.step) for e in events] == [
        (None, 0, 40),
        (E(9), 0, 40),
        (E(10), 0, 40),
        (None, 1, 40),
        (E(0, 1), 1, 40),
    ]
    assert events[0].metrics["checkpoint_step"] == 40.0
    assert all(e.seq == 0 for e in events)


@pytest.mark.parametrize(
    ("experts", "layers", "error", "match"),
    [
        ({E(0): {"entropy_contribution": 0.1}}, None, InvalidMetricError, "lacks the metric 'share'"),
        ({E(0): {"share": 1.5}}, None, InvalidMetricError, "share"),
        (
            {E(0): {"share": 0.5, "token_type.0": 0.5, "token_type.1": 0.1}},
            None,
            InvalidMetricError,
            "sum to 1",
        ),
        ({E(0): {"share": float("nan")}}, None, InvalidMetricError, "finite"),
        ({E(0): {"share": 0.5, "cosine.L0_E1": 2.0}}, None, InvalidMetricError, "cosine"),
        ({}, {0: {"entropy": 1.0}}, InvalidMetricError, "lacks the metrics"),
        ({}, {0: {**v2_layer_metrics([1.0]), "checkpoint_step": 3.0}}, InvalidMetricError, "recorded by"),
        ({}, {5: v2_layer_metrics([1.0])}, UsageError, "not managed"),
        ({E(0, 1): {"share": 1.0}}, None, UsageError, "no layer metrics"),
        ({"expert-7": {"share": 1.0}}, None, UsageError, "L<layer>_E<n>"),
    ],
)
def test_bad_observations_raise_before_any_event_exists(
    experts: dict[str, Any], layers: Any, error: type[Exception], match: str
) -> None:
    """Missing, out-of-range or unplaceable metrics raise a precise error."""
    coordinator = ExpertCoordinator(BASE, {0: 4, 1: 4})
    with pytest.raises(error, match=match):
        coordinator.observations(
            run_id=RUN,
            step=1,
            experts=experts,
            layers=layers if layers is not None else {0: v2_layer_metrics([1.0])},
        )


def test_decide_refuses_another_run_or_an_earlier_step() -> None:
    """decide() for another run's id, or for a step before the registry's, is a misuse."""
    run = Run(initial={0: 2})
    run.lc.seal(step=20)
    with pytest.raises(UsageError, match="is not the registry's run"):
        run.coordinator.decide(run.lc.registry, run_id="another-run", step=20)
    with pytest.raises(UsageError, match="step 10 is before the run's latest step 20"):
        run.coordinator.decide(run.lc.registry, run_id=RUN, step=10)


def test_the_coordinator_refuses_a_run_that_was_not_started() -> None:
    """register_initial and decide on a run whose log holds no RunStarted say start() was not called."""
    lc = Lifecycle(run_id=RUN, config=LifecycleConfig(metric_window=BASE.basin_window_size))
    coordinator = ExpertCoordinator(BASE, {0: 8})
    not_started = rf"^run '{RUN}' was not started: call Lifecycle.start\(\) before"
    with pytest.raises(UsageError, match=not_started):
        coordinator.register_initial(lc, 0, 4)
    with pytest.raises(UsageError, match=not_started):
        coordinator.decide(lc.registry, run_id=RUN, step=0)
    assert lc.log.last_seq() == 0


def test_help_lists_every_setting_with_its_default_and_description() -> None:
    """The class docstring, which help() shows, holds each field as `name = default` followed by
    its attribute docstring, in field order, generated from the source so it cannot drift."""
    doc = ExpertCoordinatorConfig.__doc__ or ""
    shown = pydoc.render_doc(ExpertCoordinatorConfig, renderer=pydoc.plaintext)
    lines = doc.splitlines()
    positions = []
    for field in dataclasses.fields(ExpertCoordinatorConfig):
        entry = f"{field.name} = {field.default!r}"
        assert entry in lines, entry
        at = lines.index(entry)
        assert lines[at + 1].startswith("    ") and lines[at + 1].strip(), f"{field.name} has no description"
        assert entry in shown
        positions.append(at)
    assert positions == sorted(positions)
    assert "    Checkpoints in a row a layer must be starved before an expert is spawned into it" in lines


def test_a_registry_window_shorter_than_the_basin_window_is_refused() -> None:
    """decide() refuses a registry that keeps fewer observations than basin_window_size."""
    lc = Lifecycle(run_id=RUN, config=LifecycleConfig(metric_window=10))
    with pytest.raises(ConfigError, match="metric_window=50"):
        ExpertCoordinator(ExpertCoordinatorConfig(), {0: 4}).decide(lc.registry, run_id=RUN, step=0)


# -- state upkeep: dormancy, recovery, cooling ---------------------------------------------------


def test_an_expert_with_zero_share_goes_dormant_and_recovers_when_it_gets_tokens() -> None:
    """active -> dormant on a share below epsilon, dormant -> active on the next share above it."""
    run = Run()
    events = run.checkpoint({E(1): 1e-9})
    assert moves(events) == [(E(1), "active", "dormant")]
    assert gate(events, "expert.zero_share").observed == {"share": 1e-9}
    events = run.checkpoint({E(1): 0.1})
    assert moves(events) == [(E(1), "dormant", "active")]
    assert gate(events, "expert.recovered_share").passed


def test_a_new_expert_cools_for_cooling_period_checkpoints_then_activates() -> None:
    """A split-off child spends exactly cooling_period checkpoints in cooling."""
    run = Run()
    for _ in range(N):
        events = run.checkpoint({E(0): 0.5})
    assert run.state(E(4)) == "cooling"
    events = run.checkpoint({E(0): 0.3})
    assert gate(events, "expert.grace_period").observed == {"checkpoints_cooling": 1}
    assert run.state(E(4)) == "cooling"
    events = run.checkpoint({E(0): 0.3})
    assert moves(events) == [(E(4), "cooling", "active")]


def split_off_child(run: Run) -> int:
    """Split L0_E1 into L0_E4 (cooling); return the checkpoint count at the split."""
    for _ in range(N):
        run.checkpoint({E(1): 0.45})
    assert run.state(E(4)) == "cooling"
    return run.step // EVERY


def test_similarity_seen_in_cooling_does_not_count_toward_a_merge() -> None:
    """A child identical to its parent from birth merges after merge_patience checkpoints as active."""
    run = Run(dataclasses.replace(BASE, split_cooldown_per_expert=EVERY))
    split_at = split_off_child(run)
    twins = identical(E(1), E(4))
    while run.state(E(4)) == "cooling":
        assert not decisions(run.checkpoint({E(1): 0.3, E(4): 0.2}, experts=twins))
    for _ in range(N - 1):
        assert not decisions(run.checkpoint({E(1): 0.3, E(4): 0.2}, experts=twins))
    (merge,) = decisions(run.checkpoint({E(1): 0.3, E(4): 0.2}, experts=twins))
    assert (merge.entity, merge.children) == (E(1), [E(4)])
    assert run.step // EVERY - split_at == BASE.cooling_period + N


def test_a_child_is_not_merged_back_into_its_parent_within_the_split_cooldown() -> None:
    """Twins from a split stay apart until the child is split_cooldown_per_expert steps old."""
    run = Run(dataclasses.replace(BASE, split_divergence_window=BASE.basin_window_size))  # no undo
    split_off_child(run)
    born = run.lc.registry.get(E(4)).born_step
    twins = identical(E(1), E(4))
    while run.step + EVERY - born < BASE.split_cooldown_per_expert:
        events = run.checkpoint({E(1): 0.3, E(4): 0.2}, experts=twins)
        assert not decisions(events)
    lineage = gate(events, "merge.lineage_grace")
    assert (lineage.passed, lineage.observed) == (
        False,
        {"steps_since_birth": BASE.split_cooldown_per_expert - EVERY},
    )
    events = run.checkpoint({E(1): 0.3, E(4): 0.2}, experts=twins)
    assert [(d.entity, d.children) for d in decisions(events)] == [(E(1), [E(4)])]
    assert gate(events, "merge.lineage_grace").passed


def test_a_child_that_never_gets_tokens_is_pruned_only_after_dormant_patience() -> None:
    """Zero share through cooling counts for nothing: active, then dormant, then N checkpoints."""
    run = Run()
    split_at = split_off_child(run)
    for _ in range(BASE.cooling_period + 1 + N - 1):
        assert not decisions(run.checkpoint({E(4): 0.0}), Action.PRUNE)
    assert [d.entity for d in decisions(run.checkpoint({E(4): 0.0}), Action.PRUNE)] == [E(4)]
    assert run.step // EVERY - split_at == BASE.cooling_period + 1 + N


# -- prune -------------------------------------------------------------------------------------


def test_a_dormant_expert_is_pruned_after_prune_patience_checkpoints_dormant_not_before() -> None:
    """Pruned at its N-th checkpoint in dormant: PRUNE, then dormant -> pending_prune; archived next."""
    run = Run()
    assert moves(run.checkpoint({E(2): 0.0})) == [(E(2), "active", "dormant")]
    for i in range(1, N):
        events = run.checkpoint({E(2): 0.0})
        assert not decisions(events)
        assert gate(events, "prune.dormant_patience").observed == {"checkpoints_dormant": i}
    events = run.checkpoint({E(2): 0.0})
    (prune,) = decisions(events, Action.PRUNE)
    assert (prune.entity, prune.layer, prune.reason) == (E(2), 0, "confirmed_dead")
    assert prune.metrics_at_decision["dormant_checkpoints"] == N
    assert moves(events) == [(E(2), "dormant", "pending_prune")]
    assert run.lc.registry.slot_holder("expert", 0, 2) == E(2)  # held until removed
    events = run.checkpoint()
    assert moves(events) == [(E(2), "pending_prune", "archived")]
    assert run.lc.registry.slot_holder("expert", 0, 2) is None


def test_pruning_stops_at_the_layer_floor() -> None:
    """With min_experts_per_layer live experts left, a dead expert stays dormant."""
    run = Run(initial={0: 2})
    for _ in range(N + 2):
        events = run.checkpoint({E(0): 0.3, E(1): 0.0})
    assert not decisions(events)
    floor = gate(events, "prune.population_floor")
    assert (floor.passed, floor.observed) == (False, {"live_experts": 2})
    assert run.state(E(1)) == "dormant"


def test_at_most_max_prunes_per_cycle_experts_are_pruned_per_checkpoint() -> None:
    """Two experts ready at once: the budget takes one this cycle and the other the next."""
    run = Run(initial={0: 6})
    for _ in range(N + 1):
        events = run.checkpoint({E(1): 0.0, E(4): 0.0})
    assert [d.entity for d in decisions(events)] == [E(1)]
    budget = [e for e in checks(events) if e.gate == "prune.budget"]
    assert [(b.entity, b.passed) for b in budget] == [(E(1), True), (E(4), False)]
    events = run.checkpoint({E(1): 0.0, E(4): 0.0})
    assert [d.entity for d in decisions(events)] == [E(4)]


# -- split -------------------------------------------------------------------------------------


def test_an_overloaded_expert_splits_after_split_patience_checkpoints_not_before() -> None:
    """At the N-th checkpoint above the threshold: a child in the lowest free slot, then SPLIT."""
    run = Run()
    for _ in range(N - 1):
        assert not decisions(run.checkpoint({E(1): 0.45}))
    events = run.checkpoint({E(1): 0.45})
    (split,) = decisions(events)
    assert (split.action, split.entity, split.parent, split.children) == (Action.SPLIT, E(1), E(1), [E(4)])
    assert split.apply_at_step == run.step + 1
    assert split.seed == decision_seed(0, run.step, "SPLIT", E(4)) < 2**31
    assert split.config_snapshot == BASE.snapshot()
    push = BASE.split_divergence_push * 0.45 / BASE.split_share_threshold  # need-scaled
    assert split.metrics_at_decision == {"share": 0.45, "overload_duration": N, "slot": 4, "push": push}
    child = run.lc.registry.get(E(4))
    assert (child.state, child.slot, child.parent, child.layer) == ("cooling", 4, E(1), 0)
    kinds = [type(e).__name__ for e in events if not isinstance(e, GatesChecked)]
    assert kinds == ["EntityRegistered", "DecisionMade", "TransitionApplied"]


def test_the_split_threshold_is_rechecked_on_the_share_at_execution() -> None:
    """A share back under the threshold at execution blocks the split, and a new spike starts over."""
    run = Run()
    for _ in range(N - 1):
        run.checkpoint({E(1): 0.45})
    events = run.checkpoint({E(1): 0.39})
    assert not decisions(events)
    recheck = gate(events, "split.share_at_execution")
    assert (recheck.passed, recheck.observed) == (False, {"share": 0.39})
    events = run.checkpoint({E(1): 0.45})
    assert gate(events, "split.share_at_execution").passed
    assert gate(events, "split.overload_patience").observed == {"checkpoints_overloaded": 1}
    assert not decisions(events)


def test_the_same_expert_splits_again_only_after_its_cooldown() -> None:
    """split_cooldown_per_expert steps after a split, and not a checkpoint sooner, it may split again."""
    run = Run(dataclasses.replace(BASE, split_cooldown_per_expert=3 * EVERY))
    for _ in range(N):
        events = run.checkpoint({E(1): 0.45})
    first = run.step
    for _ in range(2):
        events = run.checkpoint({E(1): 0.45})
        cooldown = gate(events, "split.cooldown")
        assert not cooldown.passed and not decisions(events)
    events = run.checkpoint({E(1): 0.45})
    assert run.step - first == 3 * EVERY
    assert [d.children for d in decisions(events)] == [[E(5)]]


@pytest.mark.parametrize(
    ("capacity", "cap", "failing"), [(4, 16, "split.free_slot"), (8, 4, "split.layer_cap")]
)
def test_a_split_needs_a_free_slot_and_room_under_the_layer_cap(
    capacity: int, cap: int, failing: str
) -> None:
    """A full layer (its slots, or max_experts_per_layer) blocks the split with a structural check."""
    run = Run(dataclasses.replace(BASE, max_experts_per_layer=cap), capacity={0: capacity})
    for _ in range(N):
        events = run.checkpoint({E(1): 0.45})
    assert not decisions(events)
    assert [g.gate for g in checks(events) if not g.passed] == [failing]


def test_at_most_max_splits_per_cycle_experts_split_per_checkpoint() -> None:
    """Two overloaded experts: the more loaded splits now, the other at the next checkpoint."""
    run = Run()
    for _ in range(N):
        events = run.checkpoint({E(0): 0.42, E(2): 0.48})
    assert [d.parent for d in decisions(events)] == [E(2)]
    assert not gate([e for e in events if e.entity == E(0)], "split.budget").passed
    assert [d.parent for d in decisions(run.checkpoint({E(0): 0.42, E(2): 0.48}))] == [E(0)]


# -- merge -------------------------------------------------------------------------------------


def test_converged_experts_merge_after_merge_patience_checkpoints_not_before() -> None:
    """Cosine and overlap above threshold N times: the larger share survives and cools briefly."""
    run = Run()
    same = identical(E(1), E(3))
    for _ in range(N - 1):
        assert not decisions(run.checkpoint({E(1): 0.2, E(3): 0.3}, experts=same))
    events = run.checkpoint({E(1): 0.2, E(3): 0.3}, experts=same)
    (merge,) = decisions(events)
    assert (merge.action, merge.entity, merge.children, merge.reason) == (
        Action.MERGE,
        E(3),
        [E(1)],
        "converged_basins",
    )
    assert merge.metrics_at_decision["shares"] == {E(1): 0.2, E(3): 0.3}
    assert merge.metrics_at_decision["overlap"] == pytest.approx(1.0)
    assert moves(events) == [(E(1), "active", "pending_prune"), (E(3), "active", "cooling")]
    assert gate(events, "merge.similarity_patience").entity == E(1)
    events = run.checkpoint()
    assert sorted(moves(events)) == [(E(1), "pending_prune", "archived"), (E(3), "cooling", "active")]


def test_a_merge_needs_both_similarities_for_the_whole_patience() -> None:
    """Near-equal weights with one checkpoint of disjoint basins in the window do not merge."""
    run = Run()
    same, alike = identical(E(1), E(3)), identical(E(1), E(3))
    alike[E(3)] = {**alike[E(3)], "token_type.0": 0.0, "token_type.3": 1.0}  # own tokens again
    run.checkpoint(experts=same)
    run.checkpoint(experts=alike)
    events = run.checkpoint(experts=same)
    assert not decisions(events)
    overlap = gate(events, "merge.overlap_patience")
    assert (overlap.passed, overlap.observed["checkpoints_overlapping"]) == (False, 1)
    assert gate(events, "merge.similarity_patience").passed


def test_with_the_hysteresis_on_a_merge_waits_until_the_merged_share_is_below_the_split_threshold() -> None:
    """Two converged experts carrying 0.5 of the routing stay apart (their merge would be split again)
    while `merge_below_split_share` is on, and merge once together they carry 0.3."""
    run = Run(dataclasses.replace(BASE, merge_below_split_share=True))
    same = identical(E(1), E(3))
    for _ in range(N):
        events = run.checkpoint({E(1): 0.25, E(3): 0.25}, experts=same)
    assert not decisions(events)
    held = gate(events, "merge.below_split_share")
    assert (held.passed, held.observed["combined_share"], held.thresholds["split_share_threshold"]) == (
        False,
        0.5,
        0.4,
    )
    events = run.checkpoint({E(1): 0.1, E(3): 0.2}, experts=same)
    (merge,) = decisions(events)
    assert (merge.entity, merge.children) == (E(3), [E(1)])
    assert gate(events, "merge.below_split_share").passed


@pytest.mark.parametrize("value", [1, "yes", None])
def test_the_hysteresis_switch_is_a_bool(value: object) -> None:
    """Anything but True or False for `merge_below_split_share` is a one-sentence configuration error."""
    with pytest.raises(ConfigError, match="merge_below_split_share must be True or False"):
        dataclasses.replace(BASE, merge_below_split_share=value)  # type: ignore[arg-type]


def test_without_the_hysteresis_the_merge_does_not_ask_for_the_merged_share() -> None:
    """By default (seeds/002) an overloaded pair merges, and no hysteresis check is recorded."""
    run = Run()
    for _ in range(N):
        events = run.checkpoint({E(1): 0.25, E(3): 0.25}, experts=identical(E(1), E(3)))
    assert len(decisions(events, Action.MERGE)) == 1
    assert not [e for e in checks(events) if e.gate == "merge.below_split_share"]


def test_merging_stops_at_the_layer_floor() -> None:
    """Two identical experts in a layer at the floor both stay."""
    run = Run(initial={0: 2})
    for _ in range(N):
        events = run.checkpoint({E(0): 0.3, E(1): 0.3}, experts=identical(E(0), E(1)))
    assert not decisions(events)
    assert not gate(events, "merge.population_floor").passed


# -- spawn -------------------------------------------------------------------------------------

STARVED = {"topk_saturation": 0.9}


def test_a_starved_layer_spawns_after_spawn_patience_checkpoints_not_before() -> None:
    """N saturated checkpoints: a perturbed clone of the most loaded expert, pending_spawn -> cooling."""
    run = Run()
    shares = {E(0): 0.2, E(1): 0.3, E(2): 0.25, E(3): 0.25}
    for _ in range(N - 1):
        assert not decisions(run.checkpoint(shares, layers={0: STARVED}))
    events = run.checkpoint(shares, layers={0: STARVED})
    (spawn,) = decisions(events)
    assert (spawn.action, spawn.entity, spawn.parent, spawn.children, spawn.reason) == (
        Action.SPAWN,
        E(4),
        E(1),
        [E(4)],
        "sustained_starvation",
    )
    assert spawn.config_snapshot["spawn_init_strategy"] == "clone_and_perturb"
    assert spawn.metrics_at_decision["starvation_duration"] == N
    assert spawn.metrics_at_decision["topk_saturation"] == 0.9
    assert {"layer_entropy", "layer_neff", "topology_debt"} <= set(spawn.metrics_at_decision)
    registered = [e for e in events if isinstance(e, EntityRegistered)]
    assert [(e.entity, e.state, e.slot, e.parent) for e in registered] == [(E(4), "pending_spawn", 4, E(1))]
    assert moves(events) == [(E(4), "pending_spawn", "cooling")]
    assert gate(events, "spawn.starvation_patience").entity == E(4)


def test_high_entropy_starves_a_layer_only_while_no_expert_is_idle() -> None:
    """Evenly spread routing is starvation under the entropy test, unless some expert is dead."""
    config = dataclasses.replace(BASE, starvation_entropy_threshold=0.95)
    idle = Run(config)
    for _ in range(N):
        events = idle.checkpoint({E(3): 0.0}, default=1 / 3)
    assert not decisions(events, Action.SPAWN)
    busy = Run(config)
    for _ in range(N):
        events = busy.checkpoint()
    assert [d.layer for d in decisions(events, Action.SPAWN)] == [0]
    assert gate(events, "spawn.starvation_patience").observed["normalized_entropy"] == pytest.approx(1.0)


def test_with_a_breadth_threshold_only_experts_serving_several_types_starve_a_layer() -> None:
    """Even routing over experts that each serve one token type is no starvation once the breadth
    test is on; the same routing with basins spread over two types each is, and the spawn records it."""
    config = dataclasses.replace(BASE, starvation_entropy_threshold=0.95, starvation_breadth_threshold=1.5)
    fitted = Run(config)
    for _ in range(N):
        events = fitted.checkpoint(layers={0: {"basin_breadth": 1.0}})
    assert not decisions(events, Action.SPAWN)
    assert not [e for e in checks(events) if e.gate.startswith("spawn.")]
    unobserved = Run(config)  # a layer observed without the breadth metric never starves
    for _ in range(N):
        events = unobserved.checkpoint()
    assert not decisions(events, Action.SPAWN)
    stretched = Run(config)
    for _ in range(N):
        events = stretched.checkpoint(layers={0: {"basin_breadth": 2.0}})
    (spawn,) = decisions(events, Action.SPAWN)
    assert spawn.metrics_at_decision["basin_breadth"] == 2.0
    check = gate(events, "spawn.starvation_patience")
    assert check.observed["basin_breadth"] == 2.0
    assert spawn.config_snapshot["starvation_breadth_threshold"] == 1.5  # a passed gate's threshold


def test_the_breadth_test_alone_starves_a_layer_whatever_its_routing_spread() -> None:
    """With the spread tests off, broad basins starve a layer even under uneven routing; with every
    starvation test off nothing starves."""
    alone = dataclasses.replace(BASE, starvation_saturation_threshold=None, starvation_breadth_threshold=1.5)
    uneven = {E(0): 0.55, E(1): 0.15, E(2): 0.15, E(3): 0.15}
    run = Run(alone)
    for _ in range(N):
        events = run.checkpoint(uneven, layers={0: {"basin_breadth": 1.6}})
    assert [d.parent for d in decisions(events, Action.SPAWN)] == [E(0)]
    off = Run(dataclasses.replace(alone, starvation_breadth_threshold=None))
    for _ in range(N):
        events = off.checkpoint(uneven, layers={0: {"basin_breadth": 3.0, **STARVED}})
    assert not decisions(events, Action.SPAWN)


@pytest.mark.parametrize("value", [0.5, 1.0 - 1e-9, float("inf"), float("nan")])
def test_the_breadth_threshold_is_at_least_one_type(value: float) -> None:
    """A breadth below one type (or not finite) is a configuration error, named in one sentence."""
    with pytest.raises(ConfigError, match="starvation_breadth_threshold"):
        dataclasses.replace(BASE, starvation_breadth_threshold=value)


def test_the_spawn_goes_to_the_layer_with_the_highest_topology_debt() -> None:
    """Of two starved layers the one with more v2 debt gets the cycle's spawn; the other waits."""
    run = Run(capacity={0: 8, 1: 8}, initial={0: 4, 1: 4})
    lopsided = {**STARVED, "top2_share": 0.9}
    for _ in range(N):
        events = run.checkpoint(layers={0: STARVED, 1: lopsided})
    assert [d.layer for d in decisions(events)] == [1]
    debt = decisions(events)[0].metrics_at_decision["topology_debt"]
    assert debt == pytest.approx(0.4 * (0.9 - 0.75) / 0.25)
    budget = [g for g in checks(events) if g.gate == "spawn.budget"]
    assert [(g.entity, g.passed) for g in budget] == [(E(4, 1), True), (E(4, 0), False)]


def test_the_spawn_budget_allows_more_spawns_per_cycle_without_a_cooldown() -> None:
    """With max_spawns_per_cycle 2 and no global cooldown both starved layers spawn at once."""
    config = dataclasses.replace(BASE, max_spawns_per_cycle=2, spawn_cooldown_steps=0)
    run = Run(config, capacity={0: 8, 1: 8}, initial={0: 4, 1: 4})
    for _ in range(N):
        events = run.checkpoint(layers={0: STARVED, 1: STARVED})
    assert [d.entity for d in decisions(events)] == [E(4, 0), E(4, 1)]


def test_spawns_wait_for_the_global_cooldown() -> None:
    """A layer that stays starved spawns again spawn_cooldown_steps after the last spawn, not sooner."""
    run = Run(dataclasses.replace(BASE, spawn_cooldown_steps=5 * EVERY))
    for _ in range(N):
        run.checkpoint(layers={0: STARVED})
    first = run.step
    while run.step - first < 4 * EVERY:
        events = run.checkpoint(layers={0: STARVED})
        assert not decisions(events) and not gate(events, "spawn.cooldown").passed
    events = run.checkpoint(layers={0: STARVED})
    assert [d.entity for d in decisions(events)] == [E(5)]
    assert run.step - first == 5 * EVERY


@pytest.mark.parametrize(
    ("capacity", "cap", "failing"), [(4, 16, "spawn.free_slot"), (8, 4, "spawn.layer_cap")]
)
def test_a_spawn_needs_a_free_slot_and_room_under_the_layer_cap(
    capacity: int, cap: int, failing: str
) -> None:
    """A full layer (its slots, or max_experts_per_layer) blocks the spawn with a structural check."""
    run = Run(dataclasses.replace(BASE, max_experts_per_layer=cap), capacity={0: capacity})
    for _ in range(N):
        events = run.checkpoint(layers={0: STARVED})
    assert not decisions(events)
    assert [g.gate for g in checks(events) if not g.passed] == [failing]


def test_random_and_mean_cluster_spawns_name_their_sources() -> None:
    """Random init names no parent; mean_cluster records the most loaded expert's co-activated cluster."""
    random = Run(dataclasses.replace(BASE, spawn_init_strategy="random"))
    for _ in range(N):
        events = random.checkpoint(layers={0: STARVED})
    assert decisions(events)[0].parent is None
    assert random.lc.registry.get(E(4)).parent is None
    cluster = Run(dataclasses.replace(BASE, spawn_init_strategy="mean_cluster"))
    coact = {E(2): {"coact.L0_E0": 0.3, "coact.L0_E1": 0.05, "coact.L0_E3": 0.25}}
    for _ in range(N):
        events = cluster.checkpoint({E(2): 0.4}, experts=coact, layers={0: STARVED})
    (spawn,) = decisions(events)
    assert spawn.parent == E(2)
    assert spawn.metrics_at_decision["cluster"] == [E(2), E(0), E(3)]


# -- purity, ordering and replay ------------------------------------------------------------------


def scripted_run() -> Run:
    """A run that has split, pruned and merged, and is observed at its next checkpoint."""
    run = Run(capacity={0: 8, 1: 6}, initial={0: 4, 1: 3})
    for _ in range(N + 1):
        run.checkpoint({E(1): 0.45, E(2, 1): 0.0})
    for _ in range(N):
        run.checkpoint({E(0): 0.3, E(3): 0.2}, experts=identical(E(0), E(3)), layers={1: STARVED})
    run.observe({E(1): 0.0}, layers={1: STARVED})
    return run


def test_decide_does_not_change_the_registry_and_answers_the_same_twice() -> None:
    """decide() is pure: the registry is unchanged and a second call gives the same events."""
    run = scripted_run()
    before = run.lc.registry.copy()
    first = run.coordinator.decide(run.lc.registry, run_id=RUN, step=run.step)
    assert run.lc.registry == before
    assert comparable(run.coordinator.decide(run.lc.registry, run_id=RUN, step=run.step)) == comparable(first)


def test_a_coordinator_on_a_registry_rebuilt_from_the_log_decides_the_same() -> None:
    """Every checkpoint of a run with all four actions: decide() on Lifecycle(log) equals the live one."""
    run = Run(capacity={0: 8, 1: 6}, initial={0: 4, 1: 3})
    script: list[dict[str, Any]] = [{"shares": {E(1): 0.45, E(2, 1): 0.0}}] * (N + 1) + [
        {"shares": {E(0): 0.3, E(3): 0.2}, "experts": identical(E(0), E(3)), "layers": {1: STARVED}}
    ] * (N + 2)
    actions = set()
    for observed in script:
        run.observe(observed.get("shares"), experts=observed.get("experts"), layers=observed.get("layers"))
        rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=BASE.basin_window_size))
        assert rebuilt.registry == run.lc.registry
        replayed = run.coordinator.decide(rebuilt.registry, run_id=RUN, step=run.step)
        live = run.decide()
        assert comparable(replayed) == comparable(live)
        actions |= {d.action for d in decisions(live)}
    assert actions == {Action.SPLIT, Action.PRUNE, Action.MERGE, Action.SPAWN}


def test_returned_events_are_unsequenced_and_every_named_expert_exists_when_folded() -> None:
    """Events come back with seq 0, append and validate cleanly, and name only registered experts."""
    run = scripted_run()
    events = run.coordinator.decide(run.lc.registry, run_id=RUN, step=run.step)
    assert events and all(e.seq == 0 and e.step == run.step for e in events)
    seen = set(run.lc.registry.entities)
    for event in events:
        if isinstance(event, EntityRegistered):
            seen.add(event.entity)
        if isinstance(event, DecisionMade):
            assert {event.entity, event.parent, *event.children} - {None} <= seen
    records = run.lc.append(events)
    assert [r["seq"] for r in records] == list(range(records[0]["seq"], records[0]["seq"] + len(events)))
    assert [type(CODEC.from_record(json.loads(json.dumps(r)))) for r in records] == list(map(type, events))


# -- the numbers ---------------------------------------------------------------------------------


def test_basin_overlap_is_one_minus_the_js_divergence_over_ln_2() -> None:
    """Identical basins overlap 1, disjoint ones 0, and a half-shared one as the formula says."""
    assert basin_overlap([0.2, 0.8], [0.2, 0.8]) == pytest.approx(1.0)
    assert basin_overlap([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)
    assert basin_overlap([0.0, 0.0], [0.5, 0.5]) == 0.0
    m = [0.75, 0.25]
    jsd = 0.5 * (math.log(1 / m[0])) + 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1]))
    assert js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(jsd)
    assert basin_overlap([1.0, 0.0], [0.5, 0.5]) == pytest.approx(1 - jsd / math.log(2))


@pytest.mark.parametrize(
    ("p", "q"), [([1.0, 0.0], [0.5]), ([0.0, 0.0], [0.5, 0.5])], ids=["lengths", "no-mass"]
)
def test_js_divergence_refuses_what_is_not_two_distributions(p: list[float], q: list[float]) -> None:
    """Unequal lengths or a distribution without mass are a misuse of the function, not a number."""
    with pytest.raises(UsageError, match="equal length with positive mass"):
        js_divergence(p, q)


def test_topology_debt_is_chronomoe_v2s() -> None:
    """0.4 n_eff debt + 0.4 top-2 debt + 0.2 dead debt, each clipped to [0, 1]."""
    assert topology_debt(n_experts=8, n_eff=3, top2_share=0.9, dead_count=1) == pytest.approx(
        0.4 * (4.8 - 3) / 4.8 + 0.4 * 0.15 / 0.25 + 0.2 / 7
    )
    assert topology_debt(n_experts=4, n_eff=4, top2_share=0.5, dead_count=0) == 0.0


def test_decision_seeds_are_31_bit_and_differ_by_step_action_and_target() -> None:
    """blake2b of (run, step, action, target): stable, below 2**31, different for different decisions."""
    seeds = {
        decision_seed(7, step, action, target)
        for step in (1, 2)
        for action in ("SPAWN", "SPLIT")
        for target in ("L0_E4", "L0_E5")
    }
    assert len(seeds) == 8 and all(0 <= s < 2**31 for s in seeds)
    assert decision_seed(7, 1, "SPAWN", "L0_E4") == decision_seed(7, 1, "SPAWN", "L0_E4")


# -- the vocabulary the coordinator shares with surgery -------------------------------------------


PAYLOADS: dict[Action, type] = {
    Action.SPAWN: SpawnMetrics,
    Action.SPLIT: SplitMetrics,
    Action.PRUNE: PruneMetrics,
    Action.MERGE: MergeMetrics,
}


def test_every_decision_payload_has_the_keys_its_typed_dict_names() -> None:
    """Each action's metrics_at_decision holds its TypedDict's required keys and no key it does not name."""
    made: list[DecisionMade] = []
    split, prune, merge, spawn = (
        Run(),
        Run(),
        Run(),
        Run(dataclasses.replace(BASE, spawn_init_strategy="mean_cluster")),
    )
    coact = {E(2): {"coact.L0_E0": 0.3, "coact.L0_E3": 0.25}}
    for _ in range(N + 1):
        made += decisions(split.checkpoint({E(1): 0.45}))
        made += decisions(prune.checkpoint({E(2): 0.0}))
        made += decisions(merge.checkpoint({E(1): 0.2, E(3): 0.3}, experts=identical(E(1), E(3))))
        made += decisions(spawn.checkpoint({E(2): 0.4}, experts=coact, layers={0: STARVED}))
    assert {d.action for d in made} == set(PAYLOADS)
    for decision in made:
        shape = PAYLOADS[decision.action]
        keys = set(decision.metrics_at_decision)
        assert shape.__required_keys__ <= keys <= shape.__required_keys__ | shape.__optional_keys__, decision


def test_the_settings_surgery_reads_are_coordinator_fields_with_the_shared_defaults() -> None:
    """SurgerySettings names ExpertCoordinatorConfig fields, whose defaults are the vocabulary's."""
    fields = {f.name: f.default for f in dataclasses.fields(ExpertCoordinatorConfig)}
    assert set(SurgerySettings.__optional_keys__) <= set(fields)
    assert fields["spawn_init_strategy"] == DEFAULT_INIT_STRATEGY in INIT_STRATEGIES
    assert fields["split_perturbation_scale"] == DEFAULT_PERTURBATION
    assert {ExpertState.COOLING, ExpertState.ACTIVE, ExpertState.DORMANT} == ROUTING_STATES


# -- what an observation records (issue 18, log volume) ------------------------------------------


def _observed(experts: Mapping[str, Mapping[str, float]]) -> dict[str | None, dict[str, float]]:
    coordinator = ExpertCoordinator(BASE, {0: 8})
    layer = v2_layer_metrics([m["share"] for m in experts.values()])
    events = coordinator.observations(run_id=RUN, step=10, experts=experts, layers={0: layer})
    return {e.entity: dict(e.metrics) for e in events}


def test_observations_record_metrics_to_six_significant_digits() -> None:
    """A share of 1/3 is recorded as 0.333333: the coordinator decides on the value as recorded."""
    recorded = _observed({E(0): {"share": 1 / 3, "weight_norm": 12345.678901}, E(1): {"share": 2 / 3}})
    assert recorded[E(0)] == {"share": 0.333333, "weight_norm": 12345.7}
    assert recorded[E(1)] == {"share": 0.666667}
    assert recorded[None]["entropy"] == float(f"{v2_layer_metrics([1 / 3, 2 / 3])['entropy']:.6g}")


def test_a_pair_metric_both_experts_carry_is_recorded_once_on_the_first() -> None:
    """coact and cosine of a pair stay on the expert with the lower number (E2 before E10); a pair
    metric only one side carries is kept where it is."""
    recorded = _observed(
        {
            E(10): {"share": 0.5, "coact.L0_E2": 0.25, "cosine.L0_E2": 0.5, "coact.L0_E7": 0.1},
            E(2): {"share": 0.5, "coact.L0_E10": 0.25, "cosine.L0_E10": 0.5},
        }
    )
    assert recorded[E(2)] == {"share": 0.5, "coact.L0_E10": 0.25, "cosine.L0_E10": 0.5}
    assert recorded[E(10)] == {"share": 0.5, "coact.L0_E7": 0.1}


def test_the_first_experts_pair_metric_stands_for_the_pair() -> None:
    """Two converged experts merge when the pair's first expert carries their high cosine, whether
    or not the second carries it too: the value kept is the first's, and merges read it there."""
    for mirrored in (True, False):
        run = Run()
        same = identical(E(1), E(3))
        if not mirrored:  # the second keeps Run's default cosine of 0 to the first
            del same[E(3)][f"cosine.{E(1)}"]
        for _ in range(N):
            events = run.checkpoint(experts=same)
        (merge,) = decisions(events, Action.MERGE)
        assert {merge.entity, *merge.children} == {E(1), E(3)}

"""`ExpertCoordinatorConfig`: every knob of the expert coordinator, with one default config.

The structure and most values are seeds/002's (ChronoMoE v3, reference/seed-projects.md section
2.6); the fields it leaves open are added here, each saying why. The defaults are the one config
the MoE demo and the real-data benchmark (tests/benchmarks/bench_real_data.py) both run under,
measured over seeds on both: they differ from seeds/002 where its values react to load rather
than need (starvation by routing entropy, which a load-balancing loss holds true) or count
ChronoMoE v2 controller updates rather than training steps. `ExpertCoordinatorConfig.seeds_002()`
gives seeds/002's values (`SEEDS_002` lists the fields that moved).

The `Lifecycle` writer the coordinator decides through has its own `lifecycle_es.LifecycleConfig`
(gate mode, metric window), whose `metric_window` must be at least `basin_window_size`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pydantic import JsonValue

from lifecycle_es._settings_doc import document_settings
from lifecycle_es.controllers._config_validation import validate
from lifecycle_es.specs.expert import DEFAULT_INIT_STRATEGY, DEFAULT_PERTURBATION, InitStrategy

__all__ = ["ExpertCoordinatorConfig"]


@document_settings  # help(ExpertCoordinatorConfig) lists every setting below with its default
@dataclass(frozen=True, kw_only=True)
class ExpertCoordinatorConfig:
    """When the expert coordinator spawns, prunes, splits and merges, and what limits it."""

    # -- spawning ------------------------------------------------------------------------------
    spawn_patience: int = 10
    """Checkpoints in a row a layer must be starved before an expert is spawned into it
    (seeds/002: 5; an untrained router spreads every basin for the first few dozen steps,
    which is no reason to grow)."""
    spawn_cooldown_steps: int = 100
    """Minimum training steps between any two spawns, in any layer (a global cooldown;
    seeds/002: 500, counted in ChronoMoE v2 controller updates, themselves many steps apart)."""
    max_spawns_per_cycle: int = 1
    """Spawns allowed per lifecycle cycle (the decisions between two `StepSealed`); 0 disables."""
    max_experts_per_layer: int = 16
    """Hard cap on the live experts of a layer (pending_spawn, cooling, active, dormant)."""
    spawn_init_strategy: InitStrategy = DEFAULT_INIT_STRATEGY
    """How a spawned expert starts: random init, a perturbed clone of the layer's most loaded
    expert, or the mean of that expert's cluster of co-activated experts."""
    starvation_entropy_threshold: float | None = None
    """A checkpoint counts as starved when the layer's normalized routing entropy
    (entropy / ln n_active, 1 for a single expert) is at least this: tokens are spread over
    every expert nearly evenly, so no expert has room to specialise further. None (the
    default; seeds/002: 0.95) disables this test: a load-balancing loss makes routing even
    whatever the need, and the real-data benchmark spawned on it at every cooldown. n_eff /
    n_active is the same signal on another scale (exp of the entropy)."""
    starvation_saturation_threshold: float | None = None
    """A checkpoint also counts as starved when the layer's `topk_saturation` (the fraction of
    tokens whose top-k routing weights are nearly uniform: the router finds no expert that
    fits them) is at least this. Only read when the observation has it; None (the default;
    seeds/002: 0.5) disables it, as the entropy test, for the same reason."""
    starvation_breadth_threshold: float | None = 1.6
    """When set, a checkpoint counts as starved only if, besides the tests above, the layer's
    `basin_breadth` (the share-weighted mean number of token types per expert basin, 1 when
    every expert serves one kind) is at least this: experts stretched over several kinds of
    token, where another expert could take one kind. Needs the observation to carry it (basin
    tracking records it); None (seeds/002) does not ask. With both thresholds of the spread
    test above None (the default), this test decides with the need test below and the
    no-dead-expert condition."""

    starvation_need_metric: str | None = "type_loss_gap"
    """The name of a user metric (passed to `ExpertCoordinator.observations(user=...)`) that
    measures need: at a checkpoint that carries it, it replaces the spread test above, which a
    load-balancing loss holds true whatever the need. A checkpoint is then starved when the
    metric is at least `starvation_need_threshold` (and the breadth test holds); at one without
    it, the spread test decides (with both its thresholds None, breadth alone). The default
    is the metric `ExpertLifecycle` records when the loop passes each token's loss to
    `record(types, losses)`: the type loss gap (`projections.moe.type_loss`), the worst token
    type's mean loss over the mean of all types, minus 1. None (seeds/002) does not ask."""
    starvation_need_threshold: float = 0.5
    """The value of `starvation_need_metric` at or above which the model needs more experts:
    by default, one kind of token costing 1.5 times the average (the types sharing an expert
    on the synthetic demo cost about twice it; seeds/002: no need test)."""
    need_payoff_fraction: float | None = 0.2
    """Tells short capacity from hard data by whether need spawns pay off. A spawn made for
    need (the need metric observed at each of its `spawn_patience` checkpoints) records that
    metric's mean over them, its *level*; it pays off when the metric's mean over the last
    `spawn_patience` checkpoints of `need_payoff_window` after it has fallen by at least this
    fraction of the level. One that does not, the `need_floor_failures`-th in a row, sets a
    *floor* at its level: the need that more capacity did not reduce is difficulty (a class
    that is simply harder), not short capacity, and the layer's next need spawn waits until
    the metric's mean exceeds the floor by `need_floor_margin` (gate `spawn.need_payoff`, the
    floor recorded in the decision and carried by every later spawn). No need spawn is made
    while the last one's window is open.
    Chosen over a plateau test (need only while the metric has stopped falling) by measuring
    the type loss gap on the real-data benchmark (seed 0): it climbs from about 0.5 to 2-4 over
    the run as the mean loss falls and the harder digits stay hard, so "not falling" holds
    nearly always, while the payoff test sees spawns fail to move it (5 seeds: 11 spawns per
    run without it, 4.6 with these defaults; 7.9 experts on average, 6.2). 0.2 is about twice
    the noise of a 10-checkpoint mean of the gap there. None (seeds/002) sets no floors."""
    need_payoff_window: int = 20
    """Checkpoints after a need spawn within which it must pay off (`need_payoff_fraction`):
    the child's `cooling_period` (when it starts to learn its tokens) plus as long again. While
    need spawns are judged (a need metric, the payoff test on and spawns allowed), at most
    `basin_window_size`: the window must hold the verdict (lower both together)."""
    need_floor_margin: float = 0.5
    """Fraction by which the need metric's mean must exceed the floor a failed need spawn set
    before the layer's next need spawn: 0.5 lets a need half as large again as the one capacity
    did not fix try once more, which the noise of a 10-checkpoint mean of the type loss gap on
    the real-data benchmark (0.2-0.3 at levels of 1.6-2.5, seed 0) seldom reaches by chance."""
    need_floor_failures: int = 2
    """Need spawns in a row that must fail to pay off before the last one's level is a floor:
    one clone may not be enough for data that needs two (on the demo's arrival of new token
    types, a floor after the first failure left its held-out loss 2-10x higher on seeds 0, 2
    and 4 of 0-4 than without the payoff test; after the second, within 15% of it). 1 floors
    at the first failure."""
    spawn_return_grace: int = 20
    """Checkpoints, counting the one of its return, during which the layer spawns nothing after a
    token type that had left its input (absent for `park_patience` checkpoints) comes back: the
    returning type's high loss is forgetting, which its kept expert (`keep_departed_share`) and
    a little training mend, not short capacity. The return is read from the layer's window, so
    a type must have been present, gone and back within `basin_window_size` checkpoints: after
    a longer absence the grace holds fewer checkpoints, or none. On the real-data benchmark's
    validation split (10 seeds), beside keeping alone, the returning classes ended 0.4 points
    higher with 0.1 fewer experts on average. 0 (seeds/002) gives none."""

    # -- pruning -------------------------------------------------------------------------------
    prune_patience: int = 5
    """Checkpoints in a row a dormant expert must have received no tokens before it is pruned
    (seeds/002: 10; 5 lets an idle expert go within a phase of the demo's task)."""
    max_prunes_per_cycle: int = 1
    """Prunes allowed per lifecycle cycle; 0 disables pruning."""
    min_experts_per_layer: int = 2
    """Floor on the live experts of a layer: neither a prune nor a merge goes below it."""
    dormant_share_epsilon: float = 0.01
    """A share below this counts as zero: an expert doing less than 1% of the layer's routing
    is idle, ChronoMoE v2's "nearly dead" bound (seeds/002: 1e-6, less than one token in a
    million, which a top-k router's leftovers always exceed)."""
    prune_contribution_threshold: float = 0.0
    """A dormant expert is pruned only while its observed `contribution` (the rise of the
    evaluation loss when it is masked, `projections.moe.masked_contribution`) is at most this:
    low share alone is not enough. Experts observed without a contribution pass."""
    prune_init_grace: int = 20
    """Checkpoints from the start of the run during which an initial expert (one registered
    active, with no parent) is never pruned: experts that collapse at initialisation often get
    tokens again once the router has learnt. 0 (seeds/002) gives none; the default, four times
    `prune_patience`, lets a router that starts collapsed settle first."""
    keep_departed_share: float | None = 0.5
    """A dormant expert at least this fraction of whose basin, at the last checkpoint it was
    routed while its departed token types were present, came from those types (gone from the
    layer's input, `park_type_share_epsilon`, for `park_patience` checkpoints, having left within
    `park_patience` checkpoints of that one) is kept, not pruned: it went idle because its
    inputs left, and it still answers them while they are away and takes them back when they
    return. The departure is read from the layer's window, so an expert whose types have been
    gone for `basin_window_size` checkpoints is pruned as dead. None (seeds/002) prunes it as
    dead at once."""
    keep_departed_budget: int = 4
    """Dormant experts per layer kept for inputs that left, those whose types left most recently
    first; the next beyond it is pruned as dead. Each costs one expert's parameters and
    optimizer moments, as a routing slot of the model. 0 keeps none."""

    # -- splitting -----------------------------------------------------------------------------
    split_share_threshold: float = 0.4
    """Routing share above which an expert is overloaded."""
    split_patience: int = 5
    """Checkpoints in a row an expert must be overloaded before it is split."""
    split_perturbation_scale: float = DEFAULT_PERTURBATION
    """Noise added to a clone (split or clone_and_perturb spawn), relative to the weights' RMS."""
    split_cooldown_per_expert: int = 400
    """Minimum training steps before the same expert may be split again, and before a child may
    be merged back into the parent it was split or cloned from (their basins start identical
    and need this long to diverge; merging them sooner would undo the split). seeds/002: 1000,
    in controller updates; 400 steps is 40 default checkpoints."""
    max_splits_per_cycle: int = 1
    """Splits allowed per lifecycle cycle; 0 disables splitting."""
    split_divergence_push: float = 0.5
    """How far a split pushes the router rows of parent and child apart, relative to the parent
    row's norm, along a seeded direction orthogonal to it: each then takes one side of a
    hyperplane through the parent's basin, where a clone with noise alone gets the same tokens
    and gradients as its parent. Scaled by need (share / `split_share_threshold`, at most 2);
    recorded in the decision as `push`. A `clone_and_perturb` spawn is pushed apart from the
    expert it copies by this much too (unscaled): under top-k routing an unpushed clone gets
    its source's tokens and is undone as a failed split. 0 splits into a plain perturbed clone."""
    split_divergence_window: int = 5
    """Checkpoints after a clone child's cooling (split or cloned spawn) within which parent and
    child must divide the parent's basin (by load for a split of one token type, by type for a
    split of several: `split_load_types`): undivided at every one of them is a failed split,
    undone (the twin with the smaller share pruned, reason `failed_split`), not merged back."""
    split_divergence_overlap: float = 0.9
    """Basin overlap of parent and child above which the pair has not diverged (a split for
    breadth: its parent served more than `split_load_types` token types)."""
    split_load_types: float = 1.5
    """Effective number of token types (exp of the basin's entropy) the parent served when it
    was split, at or below which the split was made for load on one type: such a pair cannot
    diverge by type (seeds/002's trigger is share alone), so it is judged by how it shares
    the load (`split_load_balance`) instead of by basin overlap."""
    split_load_balance: float = 0.4
    """Balance of a load split's pair (2 min(share) / (sum of shares), 1 for an even split)
    below which the pair has not shared the load: below it, with the basins still overlapping
    above `split_divergence_overlap`, at every checkpoint of `split_divergence_window`, the split
    failed and is undone. 0.4: the smaller twin must take
    at least a fifth of the pair's tokens (top-k routing rarely splits one type evenly: in the
    demo, seed 0, a split that ended the overload measured 0.48, one whose child took over
    the whole load 0.05)."""

    # -- merging -------------------------------------------------------------------------------
    merge_similarity_threshold: float = 0.95
    """Weight cosine similarity above which two experts have converged."""
    merge_overlap_threshold: float = 0.8
    """Basin overlap (1 - Jensen-Shannon divergence of their token-type distributions, in [0, 1])
    above which two experts serve the same tokens."""
    merge_patience: int = 8
    """Checkpoints in a row both similarities must hold before two experts are merged."""
    max_merges_per_cycle: int = 1
    """Merges allowed per lifecycle cycle (seeds/002 names this budget); 0 disables merging."""
    merge_cooling_period: int = 1
    """Checkpoints the surviving expert of a merge spends in its "brief" cooling."""
    merge_below_split_share: bool = True
    """When True (the default), two experts merge only while their shares add up to no more than
    `split_share_threshold`: a hysteresis (seeds/000) so a merge never makes an expert that the
    split rule would take apart again, as two halves of a split still sharing an overloaded
    basin would. False (seeds/002) does not ask."""

    # -- parking and revival -------------------------------------------------------------------
    park_budget: int = 4
    """Experts per layer whose weights and optimizer state surgery keeps when they are pruned
    as dead (parked), the oldest dropped first; only a parked expert can be revived. Each
    costs one expert's parameters and moments of host or device memory. 0 parks none."""
    revive_affinity_threshold: float = 0.2
    """A parked expert is revived when its `revival:<id>` layer metric (the fraction of the
    layer's evaluation tokens its router row would pick first, `projections.moe
    .revival_affinity`) is at least this for `revive_patience` checkpoints in a row: inputs
    like its basin have returned."""
    revive_patience: int = 2
    """Checkpoints in a row the affinity must hold before a parked expert is revived."""
    max_revives_per_cycle: int = 1
    """Revivals allowed per lifecycle cycle; 0 disables revival."""
    park_basin_gone_share: float | None = None
    """An active expert is parked (a PRUNE with reason `basin_gone`, its weights and optimizer
    state kept under `park_budget`) when at least this fraction of its basin, at the last
    checkpoint its departed token types were seen, came from those of its types that have since
    left the layer's input (`park_type_share_epsilon`, for `park_patience` checkpoints). Parking takes it
    out of routing: kept routing, a load-balancing loss would feed it other tokens and
    overwrite what it knew, before its inputs return. None (the default) disables it: at 0.5
    on the real-data benchmark (digits, 5 seeds) it parked 16 experts and revived 16, yet the
    dropped classes' accuracy fell to 49.8% while they were gone (69.3% without parking) and
    was 97.5% against 98.2% after their return, so it costs more than it gives back there."""
    park_type_share_epsilon: float = 0.01
    """A token type whose share of the layer's tokens (the experts' shares times their basins,
    `token_type.<k>`) is below this has left the input."""
    park_patience: int = 3
    """Checkpoints in a row a token type must have been gone before it counts as departed."""
    revive_type_share_threshold: float = 0.05
    """An expert parked as `basin_gone` is also revived when its departed types together make
    up at least this share of the layer's tokens for `revive_patience` checkpoints in a row:
    its inputs have returned (a `revival:<id>` affinity above its threshold revives it too)."""

    # -- cadence -------------------------------------------------------------------------------
    basin_window_size: int = 50
    """Checkpoints of metric history kept per expert and layer; the `Lifecycle`'s
    `metric_window` must be at least this."""
    lifecycle_eval_interval: int = 10
    """Run a lifecycle evaluation every N training steps (`ExpertLifecycle.after_step`); read by
    the training loop, which decides when to call `ExpertCoordinator.decide`. seeds/002: 5
    ChronoMoE v2 controller updates, themselves many steps apart."""
    cooling_period: int = 10
    """Checkpoints a spawned or split-off expert spends in cooling before it is evaluated
    (seeds/002: 3): a newborn clone needs about 100 steps to find a basin of its own; judged
    sooner, it is merged back or split again before it could."""

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def seeds_002(cls, **changes: object) -> ExpertCoordinatorConfig:
        """Return seeds/002's (ChronoMoE v3's) settings, with `changes`: the defaults before the
        need-aware ones, for a run or test that must decide exactly as they did."""
        return cls(**{**SEEDS_002, **changes})  # type: ignore[arg-type]

    def snapshot(self) -> dict[str, JsonValue]:
        """Return every field by name: the `config_snapshot` recorded with each decision."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


SEEDS_002: dict[str, object] = {
    "spawn_patience": 5,
    "spawn_cooldown_steps": 500,
    "starvation_entropy_threshold": 0.95,
    "starvation_saturation_threshold": 0.5,
    "starvation_breadth_threshold": None,
    "starvation_need_metric": None,
    "starvation_need_threshold": 0.0,
    "need_payoff_fraction": None,
    "prune_patience": 10,
    "dormant_share_epsilon": 1e-6,
    "prune_init_grace": 0,
    "keep_departed_share": None,
    "spawn_return_grace": 0,
    "split_cooldown_per_expert": 1000,
    "merge_below_split_share": False,
    "lifecycle_eval_interval": 5,
    "cooling_period": 3,
}
"""The settings whose defaults moved from seeds/002's (`ExpertCoordinatorConfig.seeds_002`)."""

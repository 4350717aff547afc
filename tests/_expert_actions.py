"""Expert actions shaped as the expert coordinator shapes them, and a decider that picks them
without looking at a float.

Floating-point results differ between CPUs (AVX2 and AVX-512 builds take different kernels),
so which actions an emergent run decides is not a fact a test can rely on (DESIGN.md section
10). Tests that need SPAWN, PRUNE, SPLIT and MERGE get them from `SeededDecider`: a drop-in for
`ExpertCoordinator.decide` whose choices depend only on its seed, the step and the registry.
The DDP matrix and the demo tests install it in a real demo run (`install`); the DDP soak and
benchmark (tests/benchmarks/) use the action helpers and the decider directly.

Each action is recorded as `Evaluation` records it: its gate checks, the child's registration,
`DecisionMade`, the state moves; an expert is first brought by upkeep edges to the state the
action's edge needs.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import JsonValue

from lifecycle_es import EntityState, Lifecycle, Registry
from lifecycle_es.commands import Stamp
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id, parse_expert_id
from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.events import Action, DecisionMade, EventBase, GateCategory
from lifecycle_es.specs import EXPERT_SPEC, INIT_STRATEGIES, ExpertState

if TYPE_CHECKING:
    from replay.demo import DemoRun

__all__ = [
    "KINDS",
    "ROUTING",
    "S",
    "SeededDecider",
    "archive_pending",
    "experts",
    "free_slot",
    "install",
    "merge",
    "new_batch",
    "prune",
    "spawn",
    "split",
]

S = ExpertState
PERF, STRUCT = GateCategory.PERFORMANCE, GateCategory.STRUCTURAL
ROUTING = (S.COOLING, S.ACTIVE, S.DORMANT)
"""States whose weights are live in the model."""
KINDS = (Action.SPAWN, Action.SPLIT, Action.PRUNE, Action.MERGE)
"""The four expert actions, in the order `SeededDecider` takes them in turn."""
_EXPERT = EXPERT_SPEC.name


# -- reading the registry --------------------------------------------------------------------------


def experts(registry: Registry, layer: int, states: Sequence[str]) -> list[EntityState]:
    """A layer's experts in `states`, by slot."""
    wanted = {str(s) for s in states}
    found = [e for e in registry if e.spec == _EXPERT and e.layer == layer and e.state in wanted]
    return sorted(found, key=lambda e: (e.slot if e.slot is not None else -1, e.entity))


def free_slot(registry: Registry, layer: int, capacity: int) -> int | None:
    """The lowest slot of `layer` no expert holds (`Evaluation._free_slot`)."""
    return next((s for s in range(capacity) if registry.slot_holder(_EXPERT, layer, s) is None), None)


def next_id(registry: Registry, layer: int) -> str:
    """The next never-used expert id of `layer` (`Evaluation._next_id`)."""
    taken = [
        p[1]
        for e in registry
        if e.layer == layer and (p := parse_expert_id(e.entity)) is not None and p[0] == layer
    ]
    return expert_id(layer, max(taken, default=-1) + 1)


# -- the actions -----------------------------------------------------------------------------------


def new_batch(lc: Lifecycle, step: int, config: ExpertCoordinatorConfig) -> Batch:
    """A coordinator batch over the lifecycle's registry (observations already appended)."""
    return Batch(lc.registry, Stamp(run_id=lc.run_id, step=step, rank=lc.rank), config.snapshot())


def archive_pending(batch: Batch, layer: int) -> None:
    """The coordinator's upkeep of `pending_prune` experts: archived one step after the decision."""
    for e in experts(batch.registry, layer, (S.PENDING_PRUNE,)):
        waited = batch.stamp.step - e.entered_step
        if batch.checks(
            e.entity,
            e.state,
            S.ARCHIVED,
            [
                Check(
                    "expert.removal_applied",
                    STRUCT,
                    waited >= 1,
                    f"scheduled {waited} steps ago",
                    {"steps_scheduled": waited},
                    {"min_steps": 1},
                )
            ],
        ):
            batch.move(e.entity, S.ARCHIVED, "removed after its scheduled removal was applied")


_UPKEEP = {  # (from, to) -> the states an upkeep passes through, each a spec edge
    (S.COOLING, S.ACTIVE): (S.ACTIVE,),
    (S.DORMANT, S.ACTIVE): (S.ACTIVE,),
    (S.COOLING, S.DORMANT): (S.ACTIVE, S.DORMANT),
    (S.ACTIVE, S.DORMANT): (S.DORMANT,),
}


def bring(batch: Batch, entity: str, to: ExpertState) -> None:
    """Move an expert to `to` by the upkeep edges (grace expired, share fell to zero, recovered)."""
    for state in _UPKEEP.get((S(batch.registry.get(entity).state), to), ()):
        e = batch.registry.get(entity)
        batch.checks(
            entity,
            e.state,
            state,
            [Check(f"expert.upkeep_{state.value}", PERF, True, "scripted upkeep", {}, {})],
        )
        batch.move(entity, state, f"upkeep to {state.value}")


def decide(
    batch: Batch,
    action: Action,
    *,
    layer: int,
    entity: str,
    target: str,
    reason: str,
    metrics: Mapping[str, JsonValue],
    parent: str | None = None,
    children: Sequence[str] = (),
    seed: int | None = None,
    config: Mapping[str, JsonValue] | None = None,
) -> None:
    """`Batch.decide`; with `seed` or `config`, the same event with that seed or config snapshot."""
    batch.decide(
        action,
        layer=layer,
        entity=entity,
        target=target,
        reason=reason,
        metrics=metrics,
        parent=parent,
        children=children,
    )
    made = batch.events[-1]
    assert isinstance(made, DecisionMade)
    update: dict[str, Any] = {}
    if seed is not None:
        update["seed"] = seed
    if config is not None:
        update["config_snapshot"] = dict(config)
    if update:  # neither field is folded, so the scratch registry is the same either way
        batch.events[-1] = made.model_copy(update=update)


def structural(
    batch: Batch,
    config: ExpertCoordinatorConfig,
    action: Action,
    layer: int,
    *,
    grows: bool,
    slot: int | None = None,
    capacity: int = 0,
) -> list[Check]:
    """The coordinator's structural gates of an action: cap and slot (growth) or floor, and budget."""
    registry, name = batch.registry, action.value
    found = (
        [
            checks.cap(registry, config, f"{name}.layer_cap", layer),
            checks.slot(f"{name}.free_slot", layer, slot, capacity),
        ]
        if grows
        else [checks.floor(registry, config, f"{name}.population_floor", layer)]
    )
    return [*found, checks.budget(registry, f"{name}.budget", action, 1 << 30)]


def spawn(
    batch: Batch,
    config: ExpertCoordinatorConfig,
    layer: int,
    capacity: int,
    *,
    parent: str | None,
    seed: int | None = None,
    init: str | None = None,
    cluster: Sequence[str] = (),
) -> str:
    """A SPAWN as `Evaluation._spawn` makes it: gates, registration, decision, child to cooling."""
    slot, child = free_slot(batch.registry, layer, capacity), next_id(batch.registry, layer)
    gates = [
        Check(
            "spawn.starvation_patience",
            PERF,
            True,
            "scripted: starved",
            {"checkpoints_starved": 3.0},
            {"spawn_patience": 3.0},
        ),
        *structural(batch, config, Action.SPAWN, layer, grows=True, slot=slot, capacity=capacity),
    ]
    if not batch.checks(child, "", S.PENDING_SPAWN, gates):
        raise AssertionError(f"spawn in layer {layer} refused: {[g.reason for g in gates if not g.passed]}")
    assert slot is not None
    metrics: dict[str, JsonValue] = {"slot": slot, "starvation_duration": 3}
    snapshot = None
    if init is not None:
        snapshot = {**batch.config, "spawn_init_strategy": init}
        if init == "mean_cluster":
            metrics["cluster"] = list(cluster)
    batch.register(child, layer=layer, slot=slot, parent=parent)
    decide(
        batch,
        Action.SPAWN,
        layer=layer,
        entity=child,
        parent=parent,
        children=[child],
        target=child,
        reason="sustained_starvation",
        metrics=metrics,
        seed=seed,
        config=snapshot,
    )
    batch.move(child, S.COOLING, "integrated into routing")
    return child


def prune(
    batch: Batch, config: ExpertCoordinatorConfig, layer: int, entity: str, *, seed: int | None = None
) -> None:
    """A PRUNE as `Evaluation._prunes` makes it (the expert first brought to dormant)."""
    bring(batch, entity, S.DORMANT)
    gates = [
        Check(
            "prune.dormant_patience",
            PERF,
            True,
            "scripted: dormant",
            {"checkpoints_dormant": 5.0},
            {"prune_patience": 5.0},
        ),
        *structural(batch, config, Action.PRUNE, layer, grows=False),
    ]
    if not batch.checks(entity, S.DORMANT, S.PENDING_PRUNE, gates):
        raise AssertionError(f"prune of {entity} refused: {[g.reason for g in gates if not g.passed]}")
    decide(
        batch,
        Action.PRUNE,
        layer=layer,
        entity=entity,
        target=entity,
        reason="confirmed_dead",
        metrics={"share": 0.0, "dormant_checkpoints": 5},
        seed=seed,
    )
    batch.move(entity, S.PENDING_PRUNE, "confirmed dead")


def split(
    batch: Batch,
    config: ExpertCoordinatorConfig,
    layer: int,
    parent: str,
    capacity: int,
    *,
    seed: int | None = None,
) -> str:
    """A SPLIT as `Evaluation._split` makes it (the parent first brought to active)."""
    bring(batch, parent, S.ACTIVE)
    slot, child = free_slot(batch.registry, layer, capacity), next_id(batch.registry, layer)
    gates = [
        Check(
            "split.overload_patience",
            PERF,
            True,
            "scripted: overloaded",
            {"checkpoints_overloaded": 3.0},
            {"split_patience": 3.0},
        ),
        *structural(batch, config, Action.SPLIT, layer, grows=True, slot=slot, capacity=capacity),
    ]
    if not batch.checks(parent, S.ACTIVE, S.ACTIVE, gates):
        raise AssertionError(f"split of {parent} refused: {[g.reason for g in gates if not g.passed]}")
    assert slot is not None
    batch.register(child, layer=layer, slot=slot, parent=parent)
    decide(
        batch,
        Action.SPLIT,
        layer=layer,
        entity=parent,
        parent=parent,
        children=[child],
        target=child,
        reason="sustained_overload",
        metrics={"share": 0.6, "slot": slot},
        seed=seed,
    )
    batch.move(child, S.COOLING, "integrated into routing")
    return child


def merge(
    batch: Batch,
    config: ExpertCoordinatorConfig,
    layer: int,
    survivor: str,
    absorbed: str,
    *,
    shares: Mapping[str, float],
    seed: int | None = None,
) -> None:
    """A MERGE as `Evaluation._merge` makes it (both first brought to active)."""
    bring(batch, survivor, S.ACTIVE)
    bring(batch, absorbed, S.ACTIVE)
    gates = [
        Check(
            "merge.similarity_patience",
            GateCategory.STABILITY,
            True,
            "scripted: similar",
            {"cosine": 0.99},
            {"merge_similarity_threshold": 0.95},
        ),
        *structural(batch, config, Action.MERGE, layer, grows=False),
    ]
    if not batch.checks(absorbed, S.ACTIVE, S.PENDING_PRUNE, gates):
        raise AssertionError(f"merge of {absorbed} refused: {[g.reason for g in gates if not g.passed]}")
    decide(
        batch,
        Action.MERGE,
        layer=layer,
        entity=survivor,
        target=survivor,
        children=[absorbed],
        reason="converged_basins",
        metrics={"shares": dict(shares)},
        seed=seed,
    )
    batch.move(absorbed, S.PENDING_PRUNE, f"merged into {survivor}")
    batch.move(survivor, S.COOLING, f"absorbed {absorbed}")


# -- the decider -----------------------------------------------------------------------------------


class SeededDecider:
    """`ExpertCoordinator.decide` without floats: a seeded RNG picks among the actions valid now.

    Called with the coordinator's arguments, it returns the coordinator's kind of events. Each
    call first archives the experts pruned or merged away at an earlier step, then, at steps
    that are multiples of `every`, decides 1 to `per_call` actions (`most` caps a call):

    - `order="cycle"`: the kinds in turn SPAWN, SPLIT, PRUNE, MERGE (the n-th action of step
      s takes `KINDS[(s // every + n) % 4]`, or the next valid kind if that one is not), so
      four consecutive decision steps take all four;
    - `order="random"`: each kind drawn among those valid now.

    Valid means as the coordinator's gates have it: SPAWN and SPLIT below the layer's cap with
    a free slot, PRUNE above the floor, MERGE above the floor with two experts to merge; no
    expert takes part in two actions of one call. The layer, the experts and a spawn's init
    strategy are drawn too. A call's RNG is seeded from (seed, step) alone, so a run resumed
    from a checkpoint decides what the uninterrupted run decided. Decision seeds come from the
    run's seed, as the coordinator's do, unless `random_seeds` draws them from the RNG.
    """

    def __init__(
        self,
        config: ExpertCoordinatorConfig,
        capacity: int,
        *,
        seed: int,
        every: int = 10,
        per_call: int = 1,
        order: Literal["cycle", "random"] = "cycle",
        random_seeds: bool = False,
    ) -> None:
        self.config, self.capacity = config, capacity
        self.seed, self.every, self.per_call = seed, every, per_call
        self.order, self.random_seeds = order, random_seeds
        self.inits: collections.Counter[str] = collections.Counter()
        """Spawn init strategies drawn so far (for a report; never read by a decision)."""

    def decide(
        self, registry: Registry, *, run_id: str, step: int, rank: int = 0, most: int | None = None
    ) -> list[EventBase]:
        """Return this step's events: upkeep, then the actions drawn (none off the schedule)."""
        batch = Batch(registry, Stamp(run_id=run_id, step=step, rank=rank), self.config.snapshot())
        layers = sorted({e.layer for e in registry if e.spec == _EXPERT and e.layer is not None})
        for layer in layers:
            archive_pending(batch, layer)  # earlier prunes and merges leave their slots
        if step % self.every:
            return batch.events
        rng = random.Random(self.seed * 1_000_003 + step)
        touched: set[str] = set()
        count = rng.randint(1, self.per_call)
        for n in range(count if most is None else min(count, most)):
            valid = self._valid(batch.registry, layers, touched)
            if not valid:
                break
            layer, kind = self._pick(rng, valid, step // self.every + n)
            touched |= self._act(rng, batch, layer, kind, touched)
        return batch.events

    def _pick(self, rng: random.Random, valid: list[tuple[int, Action]], turn: int) -> tuple[int, Action]:
        if self.order == "random":
            return rng.choice(valid)
        first = turn % len(KINDS)
        for kind in KINDS[first:] + KINDS[:first]:
            layers = [layer for layer, k in valid if k == kind]
            if layers:
                return rng.choice(layers), kind
        raise AssertionError("unreachable: `valid` is not empty")

    def _eligible(self, registry: Registry, layer: int, touched: set[str]) -> list[str]:
        return [e.entity for e in experts(registry, layer, ROUTING) if e.entity not in touched]

    def _valid(self, registry: Registry, layers: list[int], touched: set[str]) -> list[tuple[int, Action]]:
        found = []
        for layer in layers:
            live = checks.live(registry, layer)
            eligible = self._eligible(registry, layer, touched)
            grow = (
                live < self.config.max_experts_per_layer
                and free_slot(registry, layer, self.capacity) is not None
            )
            shrink = live > self.config.min_experts_per_layer
            if grow and eligible:
                found += [(layer, Action.SPAWN), (layer, Action.SPLIT)]
            if shrink and eligible:
                found.append((layer, Action.PRUNE))
            if shrink and len(eligible) >= 2:
                found.append((layer, Action.MERGE))
        return found

    def _act(self, rng: random.Random, batch: Batch, layer: int, kind: Action, touched: set[str]) -> set[str]:
        """Take one action of `kind` in `layer`; return the experts it involved."""
        config, capacity = self.config, self.capacity
        eligible = self._eligible(batch.registry, layer, touched)
        seed = rng.getrandbits(31) if self.random_seeds else None
        if kind == Action.SPAWN:
            init = rng.choice(INIT_STRATEGIES)
            self.inits[init] += 1
            cluster = rng.sample(eligible, rng.randint(1, min(3, len(eligible))))
            parent = None if init == "random" else cluster[0]
            child = spawn(
                batch, config, layer, capacity, parent=parent, seed=seed, init=init, cluster=cluster
            )
            return {child, *cluster}
        if kind == Action.SPLIT:
            parent = rng.choice(eligible)
            return {parent, split(batch, config, layer, parent, capacity, seed=seed)}
        if kind == Action.PRUNE:
            target = rng.choice(eligible)
            prune(batch, config, layer, target, seed=seed)
            return {target}
        survivor, absorbed = rng.sample(eligible, 2)
        merge(
            batch,
            config,
            layer,
            survivor,
            absorbed,
            seed=seed,
            shares={survivor: rng.random(), absorbed: rng.random()},
        )
        return {survivor, absorbed}


def install(demo: DemoRun, *, seed: int | None = None, every: int = 20) -> SeededDecider:
    """Make a demo run's leader decide with a `SeededDecider` (cycle order) instead of its
    coordinator; the coordinator still records the run's metrics. Returns the decider."""
    lifecycle = demo.lifecycle
    assert lifecycle is not None, "a demo run without the lifecycle decides nothing"
    decider = SeededDecider(
        lifecycle.config,
        demo.options.max_experts,
        seed=demo.options.seed if seed is None else seed,
        every=every,
    )
    lifecycle.coordinator.decide = decider.decide  # type: ignore[method-assign]
    return decider

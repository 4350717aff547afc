"""What the DDP benchmark (bench_ddp_step.py) and the soak (soak_ddp.py) share: gloo ranks on
the CPU, the demo's model under DDP, the lifecycle wired as the demo wires it, and expert
actions shaped as the expert coordinator shapes them.

Nothing here is collected by pytest; both scripts import it as a sibling module.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pydantic import JsonValue

from bus import Log, MemoryLog
from lifecycle_es import Lifecycle
from lifecycle_es.commands import Stamp
from lifecycle_es.controllers import ExpertCoordinator, LifecycleConfig
from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.controllers._expert_ids import expert_id, parse_expert_id
from lifecycle_es.errors import DivergenceError
from lifecycle_es.events import Action, ActionsVerified, DecisionMade, GateCategory
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.session import LifecycleConfig as SessionConfig
from lifecycle_es.specs import BUILTIN_SPECS
from lifecycle_es.specs.expert import EXPERT_SPEC, ExpertState
from projections import distributed
from projections.basin import BasinReadout, BasinTracker
from projections.distributed import Replicated
from projections.runner import Runner
from projections.state_tensors import StateTensors
from projections.surgery import ModelSurgery
from projections.sync import Boundary, LifecycleSync, SyncConfig
from replay.demo import DemoOptions, Task
from replay.demo._model import DemoModel

S = ExpertState
PERF, STRUCT = GateCategory.PERFORMANCE, GateCategory.STRUCTURAL
ROUTING = (S.COOLING, S.ACTIVE, S.DORMANT)
"""States whose weights are live in the model."""
_EXPERT = EXPERT_SPEC.name

# -- ranks ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_ranks(fn: Callable[..., None], world: int, *args: Any) -> None:
    """Run `fn(rank, world, port, *args)` on `world` fresh processes; re-raise a rank's error.

    (torch leaves `multiprocessing.spawn` untyped, hence the ignore.)
    """
    mp.spawn(fn, args=(world, free_port(), *args), nprocs=world, join=True)  # type: ignore[attr-defined,no-untyped-call]


@contextlib.contextmanager
def process_group(rank: int, world: int, port: int, threads: int = 1) -> Iterator[None]:
    """Join a gloo process group on loopback, with `threads` torch threads in this rank."""
    torch.set_num_threads(threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=300))
    try:
        yield
    finally:
        dist.destroy_process_group()


# -- the model under DDP ---------------------------------------------------------------------------


class Trainer:
    """The demo's model, task and optimizer under DDP; `step` trains on this rank's shard."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.task = Task(seed=options.seed, steps=options.steps, batch_size=options.batch_size)
        capacity = options.max_experts if options.strategy == "masked" else options.initial_experts
        self.model = DemoModel(d_in=self.task.d_in, d_out=self.task.d_out, d_model=options.d_model,
                               d_hidden=options.d_hidden, capacity=capacity, layers=options.layers,
                               top_k=options.top_k, seed=options.seed)
        self.replicated = Replicated(self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=options.lr,
                                           weight_decay=options.weight_decay)
        self._loss = torch.zeros(())

    def start_without_lifecycle(self) -> None:
        """Route the initial experts only, as `DemoRun.start` does with the lifecycle off."""
        for layer in self.model.layers().values():
            mask = torch.zeros(layer.capacity, dtype=torch.bool)
            mask[: self.options.initial_experts] = True
            layer.set_active(mask)

    def step(self, step: int) -> torch.Tensor:
        """One training step, as `DemoRun.train_step`; return the shard's token types."""
        batch = self.task.batch(step).shard(self.rank, self.world)
        loss = torch.nn.functional.mse_loss(self.replicated(batch.x), batch.y)
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        self.optimizer.step()
        self._loss += loss.detach()
        return batch.types


def lifecycle_config(options: DemoOptions, **overrides: Any) -> LifecycleConfig:
    """The demo's lifecycle config (see `replay.demo.demo_config`), with overrides."""
    from replay.demo import demo_config

    base = demo_config(options)
    if not overrides:
        return base
    fields = {**{k: getattr(base, k) for k in base.__dataclass_fields__}, **overrides}
    return LifecycleConfig(**fields)


class Phases:
    """Where each boundary's time goes on this rank: seconds per phase, one dict per boundary."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.done: list[dict[str, float]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - started

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        """Time every call of `obj.attr` (an instance attribute shadowing the method) as `name`."""
        fn = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        setattr(obj, attr, timed)

    def commit(self) -> None:
        self.done.append(self.current)
        self.current = {}


Decide = Callable[[Lifecycle, int, BasinReadout], None]
"""A leader's decision at an evaluation: (lifecycle, step, the basin readout) -> appends."""


class _Side:
    """What every lifecycle variant has: the coordinator, surgery, state tensors, basin tracking."""

    def __init__(self, trainer: Trainer, config: LifecycleConfig) -> None:
        self.trainer = trainer
        self.config = config
        self.layers = trainer.model.layers()
        self.coordinator = ExpertCoordinator(config, capacity={i: trainer.options.max_experts
                                                               for i in self.layers})
        self.surgery = ModelSurgery(self.layers, trainer.optimizer, strategy=trainer.options.strategy,
                                    model=trainer.model, on_rewrap=trainer.replicated.rewrap)
        self.basin = BasinTracker(self.layers, num_types=trainer.task.num_types)
        self.phases = Phases()

    def begin(self, lc: Lifecycle, step: int, readout: BasinReadout | None = None) -> None:
        """The run's first batch: `RunStarted` and the initial experts (`_LifecycleSide._begin`)."""
        options = self.trainer.options
        lc.start(config={"demo": options.to_json(), "lifecycle": self.config.snapshot()},
                 seed=options.seed, world_size=self.trainer.world, torch_version=torch.__version__)
        for layer in sorted(self.layers):
            self.coordinator.register_initial(lc, layer, options.initial_experts, step=0)

    def readout(self, reduce: Callable[[dict[str, torch.Tensor]], object]) -> BasinReadout:
        """Counters summed across ranks with `reduce`, then this interval's metrics."""
        with self.phases.phase("sum"):
            self.basin.sum_across(reduce)
        with self.phases.phase("collect"):
            return self.basin.collect({i: self.surgery.routing_experts(i) for i in sorted(self.layers)})

    def observations(self, lc: Lifecycle, step: int, readout: BasinReadout) -> None:
        """Append the checkpoint's `MetricsObserved` events, as the demo's `decide` does first."""
        lc.append(self.coordinator.observations(run_id=lc.run_id, step=step, experts=readout.experts,
                                                layers=readout.layers))


class Ours(_Side):
    """The lifecycle wired as the demo wires it: `LifecycleSync` on a shared log (Redis, JSONL)."""

    def __init__(self, trainer: Trainer, config: LifecycleConfig, log: Log,
                 sync: SyncConfig | None = None) -> None:
        super().__init__(trainer, config)
        self.log = log
        self.lc = Lifecycle(log, config=SessionConfig(metric_window=config.basin_window_size),
                            rank=trainer.rank)
        self.tensors = StateTensors(self.lc.registry.specs)
        self.runner = Runner(log, [self.surgery, self.tensors])
        self.sync = LifecycleSync(self.lc, self.runner, self.surgery, config=sync or SyncConfig())
        for obj, attr, name in ((self.sync, "_seal", "seal"), (self.sync, "_follow_to_seal", "transport"),
                                (self.lc, "fold", "fold"), (self.runner, "apply", "apply"),
                                (self.sync, "_verify", "verify"), (self.sync, "_append", "record"),
                                (self.surgery, "digest", "digest")):
            self.phases.wrap(obj, attr, name)

    def start(self) -> None:
        self.sync.at_boundary(0, lambda lc: self.begin(lc, 0))
        self.phases.current.clear()

    def boundary(self, step: int, decide: Decide) -> Boundary:
        """An evaluation at the boundary after `step`: observe, decide (leader), seal, apply, verify."""
        import functools

        readout = self.readout(functools.partial(self.sync.observe, step))

        def timed(lc: Lifecycle) -> None:
            with self.phases.phase("decide"):
                decide(lc, step, readout)

        done = self.sync.at_boundary(step, timed)
        self.phases.commit()
        return done


class Peer(_Side):
    """The peer recipe (reference/ddp-structural-changes.md section 6, step 1's alternative):
    the leader decides into a `Lifecycle` on a leader-local `MemoryLog`, broadcasts the records
    with `broadcast_object_list`, every rank applies them to the same projections and all-reduces
    MIN/MAX of the same digest."""

    def __init__(self, trainer: Trainer, config: LifecycleConfig, run_id: str) -> None:
        super().__init__(trainer, config)
        self.leader = trainer.rank == 0
        self.lc = Lifecycle(MemoryLog(run_id), config=SessionConfig(
            metric_window=config.basin_window_size), rank=trainer.rank) if self.leader else None
        self.tensors = StateTensors(BUILTIN_SPECS)
        self.runner = Runner(MemoryLog(run_id), [self.surgery, self.tensors])  # apply() only
        self._unsent: list[dict[str, Any]] = []
        """The leader's records appended after the last broadcast (its `ActionsVerified`)."""

    def start(self) -> None:
        self._apply(0, lambda lc: self.begin(lc, 0))
        self.phases.current.clear()

    def boundary(self, step: int, decide: Decide) -> int:
        readout = self.readout(lambda d: distributed.sum_in_place([d[k] for k in sorted(d)]))

        def timed(lc: Lifecycle) -> None:
            with self.phases.phase("decide"):
                decide(lc, step, readout)

        done = self._apply(step, timed)
        self.phases.commit()
        return done

    def _apply(self, step: int, decide: Callable[[Lifecycle], None]) -> int:
        payload: list[Any] = [None]
        phase = self.phases.phase
        if self.lc is not None:
            with phase("seal"), self.lc.batch() as pending:
                decide(self.lc)
                self.lc.seal(step)
            payload = [[*self._unsent, *pending]]
            self._unsent = []
        with phase("transport"):
            dist.broadcast_object_list(payload, src=0)
        records = payload[0]
        decisions = sum(1 for r in records if r["kind"] == "DecisionMade")
        with phase("apply"):
            if decisions:
                self.surgery.optimizer.zero_grad(set_to_none=True)
            self.runner.apply(records)
        with phase("verify"):
            with phase("digest"):
                digest = self.surgery.digest()
            low, high = distributed.digest_range(digest)
        if low != high:
            raise DivergenceError(f"peer: digests differ at step {step}", step=step, ranks=())
        if self.lc is not None and decisions:
            with phase("record"):
                self._unsent += self.lc.append([ActionsVerified(
                    run_id=self.lc.run_id, step=step, rank=0, digest=digest, world_size=self.trainer.world)])
        return decisions


class Floor:
    """The synchronization any recipe pays at an evaluation, and nothing else: the routing
    counters summed across ranks and one MIN/MAX all-reduce of a (constant) digest."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.basin = BasinTracker(trainer.model.layers(), num_types=trainer.task.num_types)
        self.phases = Phases()

    def start(self) -> None:
        self.trainer.start_without_lifecycle()

    def boundary(self, step: int, decide: Decide | None = None) -> None:
        with self.phases.phase("sum"):
            self.basin.sum_across(lambda d: distributed.sum_in_place([d[k] for k in sorted(d)]))
            self.basin.reset()
        with self.phases.phase("verify"):
            distributed.digest_range("0" * 16)
        self.phases.commit()


# -- expert actions, shaped as the coordinator shapes them -----------------------------------------


def registry_size(registry: Registry) -> str:
    """Entities, metric windows and the time of one `Registry.copy()` (the coordinator's `Batch`
    and `Lifecycle.batch()` each take one per evaluation)."""
    archived = sum(1 for e in registry if e.state == S.ARCHIVED)
    windows = registry._windows  # a benchmark's look inside
    names = sum(len(v) for v in windows.values())
    started = time.perf_counter()
    for _ in range(5):
        registry.copy()
    copy_ms = (time.perf_counter() - started) / 5 * 1e3
    return (f"{len(registry)} entities ({archived} archived), {len(windows)} metric-window owners "
            f"holding {names} windows; Registry.copy() {copy_ms:.2f} ms")


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
    taken = [p[1] for e in registry if e.layer == layer
             and (p := parse_expert_id(e.entity)) is not None and p[0] == layer]
    return expert_id(layer, max(taken, default=-1) + 1)


def archive_pending(batch: Batch, layer: int) -> None:
    """The coordinator's upkeep of `pending_prune` experts: archived one step after the decision."""
    for e in experts(batch.registry, layer, (S.PENDING_PRUNE,)):
        waited = batch.stamp.step - e.entered_step
        if batch.checks(e.entity, e.state, S.ARCHIVED, [Check(
                "expert.removal_applied", STRUCT, waited >= 1, f"scheduled {waited} steps ago",
                {"steps_scheduled": waited}, {"min_steps": 1})]):
            batch.move(e.entity, S.ARCHIVED, "removed after its scheduled removal was applied")


_UPKEEP = {  # (from, to) -> the states an upkeep passes through, each a spec edge
    (S.COOLING, S.ACTIVE): (S.ACTIVE,), (S.DORMANT, S.ACTIVE): (S.ACTIVE,),
    (S.COOLING, S.DORMANT): (S.ACTIVE, S.DORMANT), (S.ACTIVE, S.DORMANT): (S.DORMANT,),
}


def bring(batch: Batch, entity: str, to: ExpertState) -> None:
    """Move an expert to `to` by the upkeep edges (grace expired, share fell to zero, recovered)."""
    for state in _UPKEEP.get((S(batch.registry.get(entity).state), to), ()):
        e = batch.registry.get(entity)
        batch.checks(entity, e.state, state, [Check(f"expert.upkeep_{state.value}", PERF, True,
                                                    "benchmark upkeep", {}, {})])
        batch.move(entity, state, f"upkeep to {state.value}")


def decide(batch: Batch, action: Action, *, layer: int, entity: str, target: str, reason: str,
           metrics: Mapping[str, JsonValue], parent: str | None = None,
           children: Sequence[str] = (), seed: int | None = None,
           config: Mapping[str, JsonValue] | None = None) -> None:
    """`Batch.decide`; with `seed` or `config`, the same event with that seed or config snapshot."""
    if seed is None and config is None:
        batch.decide(action, layer=layer, entity=entity, target=target, reason=reason,
                     metrics=metrics, parent=parent, children=children)
        return
    from lifecycle_es.controllers._basin_math import decision_seed

    step = batch.stamp.step
    batch.add(DecisionMade(
        run_id=batch.stamp.run_id, step=step, rank=batch.stamp.rank, entity=entity, action=action,
        layer=layer, parent=parent, children=list(children), reason=reason,
        metrics_at_decision=dict(metrics), config_snapshot=dict(config or batch.config),
        apply_at_step=step + 1,
        seed=decision_seed(batch.registry.run_seed, step, action.value, target) if seed is None else seed))


def structural(batch: Batch, config: LifecycleConfig, action: Action, layer: int, *,
               grows: bool, slot: int | None = None, capacity: int = 0) -> list[Check]:
    """The coordinator's structural gates of an action: cap and slot (growth) or floor, and budget."""
    registry, name = batch.registry, action.value
    found = [checks.cap(registry, config, f"{name}.layer_cap", layer),
             checks.slot(f"{name}.free_slot", layer, slot, capacity)] if grows \
        else [checks.floor(registry, config, f"{name}.population_floor", layer)]
    return [*found, checks.budget(registry, f"{name}.budget", action, 1 << 30)]


def spawn(batch: Batch, config: LifecycleConfig, layer: int, capacity: int, *,
          parent: str | None, seed: int | None = None, init: str | None = None,
          cluster: Sequence[str] = ()) -> str:
    """A SPAWN as `Evaluation._spawn` makes it: gates, registration, decision, child to cooling."""
    slot, child = free_slot(batch.registry, layer, capacity), next_id(batch.registry, layer)
    gates = [Check("spawn.starvation_patience", PERF, True, "benchmark: starved",
                   {"checkpoints_starved": 3.0}, {"spawn_patience": 3.0}),
             *structural(batch, config, Action.SPAWN, layer, grows=True, slot=slot, capacity=capacity)]
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
    decide(batch, Action.SPAWN, layer=layer, entity=child, parent=parent, children=[child],
           target=child, reason="sustained_starvation", metrics=metrics, seed=seed, config=snapshot)
    batch.move(child, S.COOLING, "integrated into routing")
    return child


def prune(batch: Batch, config: LifecycleConfig, layer: int, entity: str, *,
          seed: int | None = None) -> None:
    """A PRUNE as `Evaluation._prunes` makes it (the expert first brought to dormant)."""
    bring(batch, entity, S.DORMANT)
    gates = [Check("prune.dormant_patience", PERF, True, "benchmark: dormant",
                   {"checkpoints_dormant": 5.0}, {"prune_patience": 5.0}),
             *structural(batch, config, Action.PRUNE, layer, grows=False)]
    if not batch.checks(entity, S.DORMANT, S.PENDING_PRUNE, gates):
        raise AssertionError(f"prune of {entity} refused: {[g.reason for g in gates if not g.passed]}")
    decide(batch, Action.PRUNE, layer=layer, entity=entity, target=entity, reason="confirmed_dead",
           metrics={"share": 0.0, "dormant_checkpoints": 5}, seed=seed)
    batch.move(entity, S.PENDING_PRUNE, "confirmed dead")


def split(batch: Batch, config: LifecycleConfig, layer: int, parent: str, capacity: int, *,
          seed: int | None = None) -> str:
    """A SPLIT as `Evaluation._split` makes it (the parent first brought to active)."""
    bring(batch, parent, S.ACTIVE)
    slot, child = free_slot(batch.registry, layer, capacity), next_id(batch.registry, layer)
    gates = [Check("split.overload_patience", PERF, True, "benchmark: overloaded",
                   {"checkpoints_overloaded": 3.0}, {"split_patience": 3.0}),
             *structural(batch, config, Action.SPLIT, layer, grows=True, slot=slot, capacity=capacity)]
    if not batch.checks(parent, S.ACTIVE, S.ACTIVE, gates):
        raise AssertionError(f"split of {parent} refused: {[g.reason for g in gates if not g.passed]}")
    assert slot is not None
    batch.register(child, layer=layer, slot=slot, parent=parent)
    decide(batch, Action.SPLIT, layer=layer, entity=parent, parent=parent, children=[child],
           target=child, reason="sustained_overload", metrics={"share": 0.6, "slot": slot}, seed=seed)
    batch.move(child, S.COOLING, "integrated into routing")
    return child


def merge(batch: Batch, config: LifecycleConfig, layer: int, survivor: str, absorbed: str, *,
          shares: Mapping[str, float], seed: int | None = None) -> None:
    """A MERGE as `Evaluation._merge` makes it (both first brought to active)."""
    bring(batch, survivor, S.ACTIVE)
    bring(batch, absorbed, S.ACTIVE)
    gates = [Check("merge.similarity_patience", GateCategory.STABILITY, True, "benchmark: similar",
                   {"cosine": 0.99}, {"merge_similarity_threshold": 0.95}),
             *structural(batch, config, Action.MERGE, layer, grows=False)]
    if not batch.checks(absorbed, S.ACTIVE, S.PENDING_PRUNE, gates):
        raise AssertionError(f"merge of {absorbed} refused: {[g.reason for g in gates if not g.passed]}")
    decide(batch, Action.MERGE, layer=layer, entity=survivor, target=survivor, children=[absorbed],
           reason="converged_basins", metrics={"shares": dict(shares)}, seed=seed)
    batch.move(absorbed, S.PENDING_PRUNE, f"merged into {survivor}")
    batch.move(survivor, S.COOLING, f"absorbed {absorbed}")


def new_batch(lc: Lifecycle, step: int, config: LifecycleConfig) -> Batch:
    """A coordinator batch over the lifecycle's registry (observations already appended)."""
    return Batch(lc.registry, Stamp(run_id=lc.run_id, step=step, rank=lc.rank), config.snapshot())

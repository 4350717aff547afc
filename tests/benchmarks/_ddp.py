"""What the DDP benchmark (bench_ddp_step.py) and the soak (soak_ddp.py) share: gloo ranks on
the CPU, the demo's model under DDP and the lifecycle wired as the demo wires it. The expert
actions they decide are the test suite's (`tests._expert_actions`).

Nothing here is collected by pytest; both scripts import it as a sibling module.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bus import Log, MemoryLog
from lifecycle_es import ActionsVerified, DivergenceError, Lifecycle, LifecycleConfig, Registry
from lifecycle_es.controllers import ExpertCoordinator, ExpertCoordinatorConfig
from lifecycle_es.specs import BUILTIN_SPECS
from projections import Runner, StateTensors
from projections.moe import BasinReadout, BasinTracker, ModelSurgery
from projections.training import Boundary, LifecycleSync, Replicated, SyncConfig, distributed
from replay.demo import DemoOptions, Task, demo_model
from tests._expert_actions import S

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
    with distributed.process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=300),
    ):
        yield


# -- the model under DDP ---------------------------------------------------------------------------


class Trainer:
    """The demo's model, task and optimizer under DDP; `step` trains on this rank's shard.

    `ballast` adds that many frozen parameters (not trained, so DDP leaves them alone) with
    AdamW-shaped state, which the digest covers: a model of that size as the digest sees it,
    at the demo's training cost.
    """

    def __init__(self, options: DemoOptions, *, ballast: int = 0) -> None:
        self.options = options
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.task = Task(seed=options.seed, steps=options.steps, batch_size=options.batch_size)
        self.model = demo_model(options, self.task)
        if ballast:
            frozen = torch.nn.Parameter(torch.randn(ballast, generator=torch.Generator().manual_seed(1)))
            self.model.register_parameter("ballast", frozen.requires_grad_(False))
        self.replicated = Replicated(self.model)
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trained, lr=options.lr, weight_decay=options.weight_decay)
        if ballast:  # state the optimizer never steps, for the digest to read
            frozen = self.model.ballast
            moments = {"exp_avg": frozen * 1e-3, "exp_avg_sq": frozen * frozen * 1e-6}
            self.optimizer.state[frozen] = {"step": torch.tensor(1.0), **moments}
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


def lifecycle_config(options: DemoOptions, **overrides: Any) -> ExpertCoordinatorConfig:
    """The demo's lifecycle config (see `replay.demo.demo_config`), with overrides."""
    from replay.demo import demo_config

    base = demo_config(options)
    if not overrides:
        return base
    fields = {**{k: getattr(base, k) for k in base.__dataclass_fields__}, **overrides}
    return ExpertCoordinatorConfig(**fields)


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

    def __init__(self, trainer: Trainer, config: ExpertCoordinatorConfig) -> None:
        self.trainer = trainer
        self.config = config
        self.layers = trainer.model.layers()
        self.coordinator = ExpertCoordinator(
            config, capacity={i: trainer.options.max_experts for i in self.layers}
        )
        self.surgery = ModelSurgery(
            self.layers,
            trainer.optimizer,
            strategy=trainer.options.strategy,
            model=trainer.model,
            on_rewrap=trainer.replicated.rewrap,
        )
        self.basin = BasinTracker(self.layers, num_types=trainer.task.num_types)
        self.phases = Phases()

    def begin(self, lc: Lifecycle, step: int, readout: BasinReadout | None = None) -> None:
        """The run's first batch: `RunStarted` and the initial experts (`_LifecycleSide._begin`)."""
        options = self.trainer.options
        lc.start(
            config={"demo": options.to_json(), "lifecycle": self.config.snapshot()},
            seed=options.seed,
            world_size=self.trainer.world,
            torch_version=torch.__version__,
        )
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
        lc.append(
            self.coordinator.observations(
                run_id=lc.run_id, step=step, experts=readout.experts, layers=readout.layers
            )
        )


class Ours(_Side):
    """The lifecycle wired as the demo wires it: `LifecycleSync` on a shared log (Redis, JSONL)."""

    def __init__(
        self, trainer: Trainer, config: ExpertCoordinatorConfig, log: Log, sync: SyncConfig | None = None
    ) -> None:
        super().__init__(trainer, config)
        self.log = log
        self.lc = Lifecycle(
            log, config=LifecycleConfig(metric_window=config.basin_window_size), rank=trainer.rank
        )
        self.tensors = StateTensors(self.lc.registry.specs)
        self.runner = Runner(log, [self.surgery, self.tensors])
        self.sync = LifecycleSync(self.lc, self.runner, self.surgery, config=sync or SyncConfig())
        for obj, attr, name in (
            (self.sync, "_seal", "seal"),
            (self.sync, "_follow_to_seal", "transport"),
            (self.lc, "fold", "fold"),
            (self.runner, "apply", "apply"),
            (self.sync, "_compare_carried", "verify"),
            (self.sync, "_append", "record"),
            (self.surgery, "digest", "digest"),
        ):
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

    def __init__(self, trainer: Trainer, config: ExpertCoordinatorConfig, run_id: str) -> None:
        super().__init__(trainer, config)
        self.leader = trainer.rank == 0
        self.lc = (
            Lifecycle(
                MemoryLog(run_id),
                config=LifecycleConfig(metric_window=config.basin_window_size),
                rank=trainer.rank,
            )
            if self.leader
            else None
        )
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
        with phase("digest"):
            digest = self.surgery.digest()
        with phase("verify"):
            low, high = distributed.digest_range(digest)
        if low != high:
            raise DivergenceError(f"peer: digests differ at step {step}", step=step, ranks=())
        if self.lc is not None and decisions:
            with phase("record"):
                self._unsent += self.lc.append(
                    [
                        ActionsVerified(
                            run_id=self.lc.run_id,
                            step=step,
                            rank=0,
                            digest=digest,
                            world_size=self.trainer.world,
                        )
                    ]
                )
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


# -- the leader's registry --------------------------------------------------------------------------


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
    return (
        f"{len(registry)} entities ({archived} archived), {len(windows)} metric-window owners "
        f"holding {names} windows; Registry.copy() {copy_ms:.2f} ms"
    )

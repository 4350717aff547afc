"""`ExpertLifecycle`: the expert lifecycle wired into a training loop, one object and three calls.

Built from the model (the MoE layers it holds, each meeting `projections.moe.ExpertLayer`), its
optimizer and a log, it builds what DESIGN.md section 7 has a loop wire by hand: the `Lifecycle`
writer, the `ExpertCoordinator`, `ModelSurgery`, the `StateTensors`, the `Runner` that feeds
them, `LifecycleSync`, `Checkpoints` and the `BasinTracker`. The loop then calls::

    lifecycle.start(seed=0)            # once: RunStarted, the initial experts, StepSealed(0)
    for step in range(1, steps + 1):
        ...                            # forward, backward, optimizer.step()
        lifecycle.record(token_types, losses)  # every step: references only, no device work
        lifecycle.after_step(step)     # every lifecycle_eval_interval steps: decide and apply
    lifecycle.finish(steps)

`losses` (each token's training loss, optional) gives the default need test its metric, the
type loss gap; without it the layer's basin breadth decides alone. The same code runs in one
process and on every rank of a DDP job (every rank on the same log
URL, the leader decides; see `LifecycleSync`). Checkpoints are the loop's own: save with
`lifecycle.checkpoints.save(directory, boundary, extra={"basin": lifecycle.basin.state(), ...})`
at a boundary `after_step` returned, and after `start(resume=True)` restore the basin tracker
with `lifecycle.basin.load_state(checkpoint.extra["basin"])`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import cast

import torch
from pydantic import JsonValue
from torch import nn

import bus
from bus import Log, LogOwner
from lifecycle_es.controllers import ExpertCoordinator, ExpertCoordinatorConfig
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.events import Action, DecisionMade, EventBase
from lifecycle_es.session import Lifecycle, LifecycleConfig
from lifecycle_es.specs import ROUTING_STATES
from projections.moe import BasinTracker, ExpertLayer, ModelSurgery, RoutedLayer, Strategy, revival_metrics
from projections.moe._protocol import missing_members
from projections.moe.split_direction import split_direction
from projections.moe.type_loss import TypeLossTracker
from projections.runner import Runner
from projections.state_tensors import StateTensors
from projections.training import distributed
from projections.training.checkpoint import Checkpoint, Checkpoints
from projections.training.distributed import Replicated
from projections.training.sync import Boundary, LifecycleSync, SyncConfig

__all__ = ["ExpertLifecycle", "find_expert_layers"]

RunMetrics = Callable[[], Mapping[str, float]]
"""The run's own metrics at an evaluation step (e.g. its mean loss), read on the leader only."""
LayerInputs = Callable[[], Mapping[int, torch.Tensor]]
"""Evaluation inputs of each MoE layer, by layer index, for `revival_affinity`."""


class ExpertLifecycle(LogOwner):
    """The expert lifecycle of one run, for a training loop: start, record, after_step, finish."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        log: Log | str,
        *,
        num_types: int,
        config: ExpertCoordinatorConfig | None = None,
        layers: Mapping[int, ExpertLayer] | None = None,
        initial_experts: int | None = None,
        strategy: Strategy = "masked",
        replicated: Replicated | None = None,
        sync: SyncConfig | None = None,
        run_id: str | None = None,
    ) -> None:
        """Run the lifecycle of the MoE layers of `model`, trained by `optimizer`, on `log`.

        `log` is a `bus` log or a log URL (`jsonl://DIR`, `redis://...`, a directory), opened
        for run `run_id` and closed by `close()`. `num_types` is the number of token types
        `record` is given (ids 0..num_types-1), over which basin tracking measures what each
        expert serves. `layers` maps layer indices to the model's MoE layers (default: every
        module of `model` meeting `ExpertLayer`, numbered 0.. in module order).
        `config` defaults to `ExpertCoordinatorConfig()` (under the masked strategy with
        `max_experts_per_layer` lowered to the fewest slots of a layer; an explicit config
        asking for more than a masked layer's slots is a `ConfigError`).
        `initial_experts` experts of each layer route at step 0 (default: as many as its
        capacity and `max_experts_per_layer` allow). `strategy` is model surgery's: "masked"
        keeps every layer's slots and masks them, "resize" adds and removes parameters (up to
        `max_experts_per_layer`). Under DDP pass `replicated`, the `Replicated` wrapper the loop
        trains through (surgery re-wraps it after a resize), and `sync` to change the leader,
        the seal timeout or repair.
        """
        self.layers: dict[int, ExpertLayer] = dict(sorted(_given_layers(model, layers).items()))
        self.config = _config(config, self.layers, strategy)
        self.log, self._owns_log = _open(log, run_id)
        self.interval = self.config.lifecycle_eval_interval
        """Training steps between two evaluations (`lifecycle_eval_interval`)."""
        self.lc = Lifecycle(
            self.log,
            config=LifecycleConfig(metric_window=self.config.basin_window_size),
            rank=distributed.rank(),
        )
        self.run_id = self.lc.run_id
        self.coordinator = ExpertCoordinator(self.config, capacity=self._capacity(strategy))
        self.initial_experts = self._initial(initial_experts)
        _check_rewrap(strategy, replicated)
        self._wire(model, optimizer, strategy, replicated, sync)
        self.basin = BasinTracker(_routed(self.layers), num_types=num_types)
        self.type_loss = TypeLossTracker(num_types=num_types)
        """Each token type's training loss between evaluations, when `record` is given losses."""
        self._started = False

    def _wire(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        strategy: Strategy,
        replicated: Replicated | None,
        sync: SyncConfig | None,
    ) -> None:
        """Build the projections the log drives (surgery, state tensors) and the parts over them."""
        self.surgery = ModelSurgery(
            self.layers,
            optimizer,
            strategy=strategy,
            model=model,
            on_rewrap=None if replicated is None else replicated.rewrap,
        )
        self.tensors = StateTensors(self.lc.registry.specs)
        self.runner = Runner(self.log, [self.surgery, self.tensors])
        self.sync = LifecycleSync(self.lc, self.runner, self.surgery, replicated=replicated, config=sync)
        self.checkpoints = Checkpoints(
            self.lc, self.runner, model=model, optimizer=optimizer, leader=self.sync.config.leader
        )

    def _capacity(self, strategy: Strategy) -> dict[int, int]:
        """Expert slots per layer, as the coordinator counts them."""
        if strategy == "resize":  # rows come and go: the cap is the config's
            return {i: self.config.max_experts_per_layer for i in self.layers}
        return {i: layer.capacity for i, layer in self.layers.items()}

    def _initial(self, count: int | None) -> dict[int, int]:
        limit = self.config.max_experts_per_layer
        if count is None:
            return {i: min(layer.capacity, limit) for i, layer in self.layers.items()}
        for i, layer in self.layers.items():
            top = min(layer.capacity, limit)
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= top:
                raise ConfigError(
                    f"initial_experts must be an int in [1, {top}] (layer {i}'s slots and "
                    f"max_experts_per_layer), got {count!r}"
                )
        return dict.fromkeys(self.layers, count)

    # -- the loop ------------------------------------------------------------------------------

    def start(
        self,
        *,
        seed: int = 0,
        config: Mapping[str, JsonValue] | None = None,
        resume: bool = False,
        metadata: Mapping[str, JsonValue] | None = None,
    ) -> Checkpoint | None:
        """Begin the run at step 0, or resume it; return the checkpoint resumed from, if any.

        Call it on every rank before training. The leader records `RunStarted` (`seed`, and
        `config`, the run's own settings as JSON values, with the coordinator's settings added
        under "lifecycle"), the initial experts of each layer in `active`, and `StepSealed(0)`;
        every rank applies them. On a log that holds step 0 already, the run is followed, not
        started again. With `resume`, every rank loads the checkpoint the log records last
        (model, optimizer, projections) and the loop continues at its `step + 1`, restoring its
        own `extra` state from it; with no checkpoint recorded it starts from step 0 as above.
        `metadata` (what resumes the run: command line, arguments, ...) goes in `RunStarted`.
        """
        if self._started:
            raise UsageError("start() called twice: call it once, on every rank, before training")
        if config is not None and "lifecycle" in config:
            raise ConfigError(
                "start(config=...) cannot use the key 'lifecycle': "
                "the coordinator's settings are recorded there"
            )
        self._started = True
        if resume:
            checkpoint = self.checkpoints.resume()
            if checkpoint is not None:
                self.sync.last_step = checkpoint.step  # its boundary is behind this rank already
                return checkpoint
        begin = functools.partial(self._begin, seed, dict(config or {}), dict(metadata or {}))
        self.sync.at_boundary(0, begin)
        return None

    def _begin(
        self, seed: int, config: dict[str, JsonValue], metadata: dict[str, JsonValue], lc: Lifecycle
    ) -> None:
        lc.start(
            config={**config, "lifecycle": self.config.snapshot()},
            seed=seed,
            world_size=self.sync.world_size,
            torch_version=torch.__version__,
            metadata=metadata,
        )
        for layer, count in self.initial_experts.items():
            self.coordinator.register_initial(lc, layer, count, step=0)

    def record(self, token_types: torch.Tensor, losses: torch.Tensor | None = None) -> None:
        """Keep the last forward's routing with each token's type ([tokens] long, ids 0..num_types-1).

        Call it once per forward, after the optimizer step; it keeps references only (no
        device work, no host sync). Types that are not a 1-D int64 or int32 tensor are refused
        here, ids outside the range at the next evaluation.
        `losses`, each token's training loss ([tokens], e.g. `cross_entropy(..., reduction=
        "none")`), gives the coordinator its need signal: each evaluation records the type loss
        gap (`projections.moe.type_loss`) as the user metric `user.type_loss_gap`, which the
        default `starvation_need_metric` reads. Without losses the layer's spread and breadth
        decide alone (see `ExpertCoordinatorConfig.starvation_need_metric`).
        """
        self._check_started("record")
        self.basin.record(token_types)
        if losses is not None:
            self.type_loss.record(token_types, losses)

    def after_step(
        self,
        step: int,
        *,
        metrics: RunMetrics | None = None,
        user: RunMetrics | None = None,
        revival: LayerInputs | None = None,
    ) -> Boundary | None:
        """At an evaluation step, run the lifecycle at the boundary after `step`; else return None.

        Call it on every rank after `optimizer.step()` (and `record`), outside any `no_sync()`
        window. Every `lifecycle_eval_interval` steps: the interval's routing is summed over
        ranks and read out as basin metrics; the leader appends the coordinator's observations,
        `metrics()` (the run's own figures, e.g. its mean loss, recorded as a run-level
        `MetricsObserved` that no controller reads) and its decisions, sealed at `step`, in one
        batch; every rank applies them to the model and optimizer and, under a process group,
        checks that all ranks agree. `user()` (e.g. loss per class) is recorded on every layer as
        `user.<name>`, where the coordinator's `starvation_need_metric` reads it; `revival()`
        (evaluation inputs of each layer, [tokens, d_model]) measures each parked expert's
        `revival_affinity`, which revives it, and gives a split of that layer its push
        direction (`projections.moe.split_direction`, recorded in the decision). Returns what
        the boundary did.
        """
        self._check_started("after_step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise UsageError(f"step must be an int, got {type(step).__name__}")
        if step % self.interval:
            return None
        return self.evaluate(step, metrics, user=user, revival=revival)

    def evaluate(
        self,
        step: int,
        metrics: RunMetrics | None = None,
        *,
        user: RunMetrics | None = None,
        revival: LayerInputs | None = None,
    ) -> Boundary:
        """One lifecycle evaluation at the boundary after step `step`, whatever the interval."""
        for name, given in (("metrics", metrics), ("user", user), ("revival", revival)):
            if given is not None and not callable(given):
                raise UsageError(
                    f"{name}= takes a function the evaluation calls, got a {type(given).__name__}: "
                    "pass e.g. lambda: {...}"
                )
        # Scored before the interval's routing is read out, so bad inputs lose none of it.
        evaluation, affinity = self._revival(revival)
        observe = functools.partial(self.sync.observe, step)
        # One all-reduce for both: the dicts hold the very tensors each tracker reads back.
        both = self.type_loss.sum_across
        self.basin.sum_across(lambda routed: both(lambda lost: observe({**routed, **lost})))
        need = self.type_loss.collect()
        readout = self.basin.collect({i: self.surgery.routing_experts(i) for i in self.layers})
        for layer, scores in affinity.items():
            readout.layers[layer].update(scores)

        def decide(lc: Lifecycle) -> None:
            lc.append(
                self.coordinator.observations(
                    run_id=self.run_id,
                    step=step,
                    experts=readout.experts,
                    layers=readout.layers,
                    user={**need, **(user() if user is not None else {})} or None,
                )
            )
            if metrics is not None:
                lc.observe(metrics(), step=step)
            decided = self.coordinator.decide(lc.registry, run_id=self.run_id, step=step)
            lc.append([self._directed(event, evaluation) for event in decided])

        return self.sync.at_boundary(step, decide)

    def _revival(
        self, revival: LayerInputs | None
    ) -> tuple[dict[int, torch.Tensor], dict[int, dict[str, float]]]:
        """Return `revival()`'s inputs of each layer, and the parked experts' affinity for them."""
        evaluation = dict(revival()) if revival is not None else {}
        unknown = sorted(set(evaluation) - set(self.layers), key=repr)
        if unknown:
            raise UsageError(
                f"revival() gave inputs of layers {unknown}, but the managed layers are {list(self.layers)}"
            )
        return evaluation, {layer: revival_metrics(self.surgery, layer, x) for layer, x in evaluation.items()}

    def _directed(self, event: EventBase, inputs: Mapping[int, torch.Tensor]) -> EventBase:
        """Return a SPLIT decision with the push direction of its parent's routed inputs added.

        Computed here, on the leader, and recorded, so every rank and replay read the same
        direction; other events, and splits of layers without inputs, are returned as they are.
        """
        if not isinstance(event, DecisionMade) or event.action != Action.SPLIT:
            return event
        layer, parent = event.layer, event.parent or event.entity
        if (
            layer is None
            or layer not in inputs
            or parent is None
            or not event.metrics_at_decision.get("push")
        ):
            return event
        direction = split_direction(self.surgery, layer, parent, inputs[layer])
        if direction is None:
            return event
        metrics = {**event.metrics_at_decision, "direction": direction}
        return event.model_copy(update={"metrics_at_decision": metrics})

    def finish(self, step: int) -> str | None:
        """Check every rank ends with the same digest at `step`; return it (None in one process)."""
        self._check_started("finish")
        return self.sync.verify(step)

    def _check_started(self, call: str) -> None:
        if not self._started:
            raise UsageError(f"{call}() before start(): call start() once, on every rank, before training")

    # -- reading -------------------------------------------------------------------------------

    def routing_counts(self) -> dict[int, int]:
        """Return how many experts of each layer are in a routing state (cooling, active, dormant)."""
        registry = self.lc.registry
        return {
            layer: sum(registry.population("expert", layer, s) for s in sorted(ROUTING_STATES))
            for layer in self.layers
        }


def find_expert_layers(model: nn.Module) -> dict[int, ExpertLayer]:
    """Return the modules of `model` that meet `ExpertLayer`, numbered 0.. in module order.

    A model with none is a `ConfigError` that names each module with an `expert_parameters`
    method and what it lacks.
    """
    found = [m for m in model.modules() if isinstance(m, ExpertLayer)]
    if found:
        return dict(enumerate(found))
    near = [
        f"{name or 'the model'} ({type(m).__name__}) lacks {', '.join(missing_members(m, ExpertLayer))}"
        for name, m in model.named_modules()
        if hasattr(m, "expert_parameters")
    ]
    hint = "; ".join(near) if near else "pass layers={index: layer}"
    raise ConfigError(f"{type(model).__name__} holds no module meeting the ExpertLayer protocol: {hint}")


def _given_layers(model: nn.Module, layers: object) -> Mapping[int, ExpertLayer]:
    """Return `layers` once it is a mapping of layer indices, or the model's own (none given)."""
    if not layers:
        return find_expert_layers(model)
    if isinstance(layers, Mapping) and all(type(i) is int and i >= 0 for i in layers):
        return layers
    got = f"keys {list(layers)}" if isinstance(layers, Mapping) else f"a {type(layers).__name__}"
    raise ConfigError(
        f"layers maps layer indices (ints >= 0) to MoE layers, e.g. {{0: model.moe}}, but got {got}"
    )


def _config(
    config: ExpertCoordinatorConfig | None, layers: Mapping[int, ExpertLayer], strategy: Strategy
) -> ExpertCoordinatorConfig:
    """Return the coordinator's settings, checked against the layers' slots under the masked strategy.

    A masked layer can never route more experts than it has slots, so a `max_experts_per_layer`
    above that would cap growth at the slot count while the recorded settings claim more: an
    explicit config that asks for it is refused. Without a config, the defaults are used with
    `max_experts_per_layer` lowered to the fewest slots of any layer (recorded as such).
    """
    if config is not None and not isinstance(config, ExpertCoordinatorConfig):
        raise ConfigError(
            f"config must be an ExpertCoordinatorConfig, got a {type(config).__name__}: "
            "build one with its settings, e.g. ExpertCoordinatorConfig(spawn_patience=5)"
        )
    if strategy != "masked" or not layers:
        return ExpertCoordinatorConfig() if config is None else config
    slots = {i: layer.capacity for i, layer in layers.items()}
    if config is None:
        limit = min(ExpertCoordinatorConfig.max_experts_per_layer, *slots.values())
        floor = min(ExpertCoordinatorConfig.min_experts_per_layer, limit)
        return ExpertCoordinatorConfig(max_experts_per_layer=limit, min_experts_per_layer=floor)
    short = {i: n for i, n in slots.items() if n < config.max_experts_per_layer}
    if short:
        raise ConfigError(
            f"max_experts_per_layer {config.max_experts_per_layer} exceeds the slots of masked "
            f"layer(s) {short} (layer: slots): allocate that many slots or lower max_experts_per_layer"
        )
    return config


def _routed(layers: Mapping[int, ExpertLayer]) -> dict[int, RoutedLayer]:
    """The layers as basin tracking takes them; it checks each for `last_indices` and `last_weights`."""
    return cast(dict[int, RoutedLayer], dict(layers))


def _open(log: Log | str, run_id: str | None) -> tuple[Log, bool]:
    """Return the log, opened for `run_id` if a URL names it, and whether it was opened here."""
    if isinstance(log, str):
        if run_id is None:
            raise ConfigError(f"a log URL ({bus.redact_url(log)}) needs run_id= to name the run")
        return bus.open(log, run_id), True
    if run_id is not None and run_id != log.run_id:
        raise ConfigError(f"run_id {run_id!r} differs from the log's run {log.run_id!r}")
    return log, False


def _check_rewrap(strategy: Strategy, replicated: Replicated | None) -> None:
    """Refuse a resize under a process group that could not re-wrap DDP after surgery."""
    if strategy == "resize" and replicated is None and distributed.active():
        raise ConfigError(
            "under the resize strategy with a process group, pass replicated= (the Replicated "
            "wrapper the loop trains through) so that DDP is re-wrapped after surgery"
        )

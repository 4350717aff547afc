"""The expert coordinator: the Mixture-of-Experts lifecycle of seeds/002 as a controller.

At each evaluation checkpoint the training loop records what basin tracking measured, asks the
coordinator what to do, and appends the answer::

    lc.append(coordinator.observations(run_id=run, step=step, experts=..., layers=...))
    lc.append(coordinator.decide(lc.registry, run_id=run, step=step))
    lc.seal(step)  # closes the lifecycle cycle: the per-cycle budgets count from here

`decide` is pure: it reads the registry (whose metric windows hold this checkpoint's
observations) and the config, and returns events; nothing changes until they are appended. All
the state its policies read (patience streaks, cooldowns, budgets, populations, slots) is folded
from the log, so a registry rebuilt from the log gets the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import ValidationError

from lifecycle_es import commands
from lifecycle_es.commands import Stamp, check_metrics
from lifecycle_es.controllers._batch import Batch
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_ids import expert_id, layer_of, parse_expert_id
from lifecycle_es.controllers._phases import Evaluation
from lifecycle_es.controllers._precision import METRIC_DIGITS, rounded_all
from lifecycle_es.controllers._signals import (
    BREADTH,
    CHECKPOINT_STEP,
    COSINE,
    LAYER_KEYS,
    PAIR_PREFIXES,
    SATURATION,
    SHARE,
    TOKEN_TYPE,
    USER,
    pair_order,
)
from lifecycle_es.errors import ConfigError, InvalidMetricError, SchemaError, UsageError
from lifecycle_es.events import EventBase, MetricsObserved
from lifecycle_es.registry import Registry
from lifecycle_es.specs.expert import EXPERT_SPEC, ExpertState

if TYPE_CHECKING:
    from lifecycle_es.session import Lifecycle

__all__ = ["ExpertCoordinator", "ExpertCoordinatorConfig", "expert_id"]

_TOLERANCE = 1e-3
"""Slack for float metrics that must lie in a range or sum to 1 (float32 sums drift)."""


class ExpertCoordinator:
    """Decides spawns, prunes, splits and merges of the experts of the layers it manages."""

    def __init__(self, config: ExpertCoordinatorConfig, capacity: Mapping[int, int]) -> None:
        """Manage the layers named in `capacity`, each with that many expert slots."""
        if not isinstance(config, ExpertCoordinatorConfig):
            raise ConfigError(
                f"config must be a controllers.ExpertCoordinatorConfig, got {type(config).__name__}"
            )
        for layer, slots in capacity.items():
            for name, value, low in (("layer", layer, 0), ("capacity", slots, 1)):
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if not capacity:
            raise ConfigError("capacity must name at least one layer")
        self.config = config
        self.capacity = dict(sorted(capacity.items()))
        """Expert slots per managed layer; experts of other layers are left alone."""
        self._snapshot = config.snapshot()

    # -- registration --------------------------------------------------------------------------

    def register_initial(self, lc: Lifecycle, layer: int, count: int, *, step: int = 0) -> list[str]:
        """Register a layer's starting experts `L{layer}_E0..` in `active`, expert i in slot i.

        All are appended as one batch; returns their ids.
        """
        if layer not in self.capacity:
            raise UsageError(f"layer {layer!r} is not managed; capacity names {list(self.capacity)}")
        limit = min(self.capacity[layer], self.config.max_experts_per_layer)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= limit:
            raise UsageError(
                f"count must be an int in [0, {limit}] (the layer's capacity and "
                f"max_experts_per_layer), got {count!r}"
            )
        self._check_window(lc.registry)
        _check_started(lc.registry, lc.run_id)
        stamp = Stamp(run_id=lc.run_id, step=step, rank=lc.rank)
        ids = [expert_id(layer, i) for i in range(count)]
        events = [
            commands.register(
                lc.registry,
                stamp,
                entity=entity,
                spec=EXPERT_SPEC.name,
                state=ExpertState.ACTIVE.value,
                slot=i,
                layer=layer,
            )
            for i, entity in enumerate(ids)
        ]
        lc.append(events)
        return ids

    # -- observing -----------------------------------------------------------------------------

    def observations(
        self,
        *,
        run_id: str,
        step: int,
        experts: Mapping[str, Mapping[str, float]],
        layers: Mapping[int, Mapping[str, float]],
        rank: int = 0,
        user: Mapping[str, float] | None = None,
    ) -> list[MetricsObserved]:
        """Return one validated `MetricsObserved` per layer and per expert, layer by layer, each
        value to 6 significant digits (`METRIC_DIGITS`), a pair metric (`coact.`, `cosine.`) on
        one expert of the pair when both carry it.

        Each layer's event also records the checkpoint's step (`checkpoint_step`), from which
        the coordinator counts the checkpoints an expert has spent in its state, and every
        `user` metric (the training loop's own figures, e.g. loss per class) as `user.<name>`,
        where `starvation_need_metric` reads it. Every expert's layer must be among `layers`,
        and every layer a managed one.
        """
        extra = {USER + name: value for name, value in check_metrics(user or {}).items()}
        stamp = Stamp(run_id=run_id, step=step, rank=rank)
        by_layer: dict[int, list[tuple[str, dict[str, float]]]] = {}
        for layer, metrics in layers.items():
            if layer not in self.capacity:
                raise UsageError(f"layer {layer!r} is not managed; capacity names {list(self.capacity)}")
            by_layer[layer] = []
            checked = _layer_metrics(layer, metrics)
            checked[CHECKPOINT_STEP] = float(step)
            checked.update(extra)
            by_layer[layer].append(("", checked))
        checked_experts = {}
        for entity, metrics in experts.items():
            layer = layer_of(entity)
            if layer not in by_layer:
                raise UsageError(f"expert {entity} is in layer {layer}, which has no layer metrics")
            checked_experts[entity] = _expert_metrics(entity, metrics)
        for entity, metrics in _pairs_once(checked_experts).items():
            by_layer[layer_of(entity)].append((entity, metrics))
        events = []
        for layer in sorted(by_layer):
            (_, layer_metrics), *rest = by_layer[layer]
            events.append(_observed(stamp, None, layer, layer_metrics))
            events += [_observed(stamp, entity, layer, m) for entity, m in sorted(rest, key=_by_number)]
        return events

    # -- deciding ------------------------------------------------------------------------------

    def decide(self, registry: Registry, *, run_id: str, step: int, rank: int = 0) -> list[EventBase]:
        """Return this checkpoint's lifecycle events, in append order, without changing `registry`.

        The events are built and folded one by one into `registry.copy()` under provisional
        seqs, so later decisions see earlier ones (budgets, slots, floors); they are returned
        with seq 0 for the caller to append (`Lifecycle.append`). Order: state upkeep
        (pending_prune->archived, cooling->active, active->dormant, dormant->active), then
        failed splits undone, prunes, merges, splits, revivals and spawns; each action's
        `GatesChecked` (all its gates) comes first, then the registration of any child, the
        `DecisionMade`, and the state moves it causes.
        Per-cycle budgets count decisions since the last `StepSealed`: seal each checkpoint.
        """
        stamp = Stamp(run_id=run_id, step=step, rank=rank)
        self._check_window(registry)
        _check_started(registry, run_id)
        if registry.run_id != run_id:
            raise UsageError(f"run_id {run_id!r} is not the registry's run {registry.run_id!r}")
        if step < registry.step:
            raise UsageError(f"step {step} is before the run's latest step {registry.step}")
        return Evaluation(self.config, self.capacity, Batch(registry, stamp, self._snapshot)).run()

    def _check_window(self, registry: Registry) -> None:
        if registry.window < self.config.basin_window_size:
            raise ConfigError(
                f"the registry keeps {registry.window} observations per metric, fewer than "
                f"basin_window_size {self.config.basin_window_size}; build the Lifecycle with "
                f"LifecycleConfig(metric_window={self.config.basin_window_size})"
            )


def _check_started(registry: Registry, run_id: str) -> None:
    if registry.run_id is None:
        raise UsageError(
            f"run {run_id!r} was not started: call Lifecycle.start() before the coordinator registers "
            "or decides anything"
        )


def _by_number(item: tuple[str, dict[str, float]]) -> tuple[int, int]:
    parsed = parse_expert_id(item[0])
    assert parsed is not None  # layer_of accepted the id
    return parsed


def _pairs_once(experts: Mapping[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Drop the mirror half of each symmetric pair metric that both experts carry.

    `coact.<b>` of `a` equals `coact.<a>` of `b` (and the cosines agree but for rounding): the
    pair's first expert (`pair_order`) keeps it, and the readers (`pair_window`) read it from
    there, so recording it twice would only double the largest part of each observation.
    """
    kept = {}
    for entity, metrics in experts.items():
        kept[entity] = {
            name: value for name, value in metrics.items() if not _mirrored(experts, entity, name)
        }
    return kept


def _mirrored(experts: Mapping[str, Mapping[str, float]], entity: str, name: str) -> bool:
    """Whether `name` of `entity` is a pair metric that the pair's first expert also carries."""
    prefix = next((p for p in PAIR_PREFIXES if name.startswith(p)), None)
    if prefix is None:
        return False
    other = name[len(prefix) :]
    return other in experts and pair_order(other) < pair_order(entity) and prefix + entity in experts[other]


def _observed(stamp: Stamp, entity: str | None, layer: int, metrics: dict[str, float]) -> MetricsObserved:
    # Recorded to METRIC_DIGITS: these events are most of a long run's log, and the coordinator
    # decides on the values folded from them, so live and replayed decisions see the same.
    try:
        return MetricsObserved(
            run_id=stamp.run_id,
            step=stamp.step,
            rank=stamp.rank,
            entity=entity,
            layer=layer,
            metrics=rounded_all(metrics, METRIC_DIGITS),
        )
    except ValidationError as e:
        err = e.errors()[0]
        raise SchemaError(
            f"cannot record metrics of {entity or f'layer {layer}'}: "
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
        ) from e


def _layer_metrics(layer: int, metrics: Mapping[str, float]) -> dict[str, float]:
    checked = check_metrics(metrics)
    if CHECKPOINT_STEP in checked:
        raise InvalidMetricError(f"layer {layer}: {CHECKPOINT_STEP!r} is recorded by the coordinator")
    missing = [k for k in LAYER_KEYS if k not in checked]
    if missing:
        raise InvalidMetricError(f"layer {layer} lacks the metrics {missing}")
    for name in LAYER_KEYS:
        _in_range(f"layer {layer}", name, checked[name], 0.0, math.inf)
    if SATURATION in checked:
        _in_range(f"layer {layer}", SATURATION, checked[SATURATION], 0.0, 1.0)
    if BREADTH in checked:
        _in_range(f"layer {layer}", BREADTH, checked[BREADTH], 0.0, math.inf)
    return checked


def _expert_metrics(entity: str, metrics: Mapping[str, float]) -> dict[str, float]:
    checked = check_metrics(metrics)
    if SHARE not in checked:
        raise InvalidMetricError(f"expert {entity} lacks the metric {SHARE!r}")
    _in_range(entity, SHARE, checked[SHARE], 0.0, 1.0)
    types = {k: v for k, v in checked.items() if k.startswith(TOKEN_TYPE)}
    for name, value in types.items():
        _in_range(entity, name, value, 0.0, 1.0)
    total = math.fsum(types.values())
    if types and total != 0 and abs(total - 1) > _TOLERANCE:
        raise InvalidMetricError(f"expert {entity}: token_type.* must sum to 1 or be all 0, got {total:.6g}")
    for name, value in checked.items():
        if name.startswith(COSINE):
            _in_range(entity, name, value, -1.0, 1.0)
    return checked


def _in_range(owner: str, name: str, value: float, low: float, high: float) -> None:
    if not low - _TOLERANCE <= value <= high + _TOLERANCE:
        raise InvalidMetricError(f"{owner}: metric {name!r} must lie in [{low:g}, {high:g}], got {value!r}")

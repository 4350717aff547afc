"""Per-checkpoint signals read back from the registry's metric windows, oldest first.

Every series here is a function of the windows folded from `MetricsObserved` events, so a
registry rebuilt from the log yields the same series. Series of different metrics are aligned
from their newest end: the k-th value from the end of each belongs to the same checkpoint,
which holds as long as each metric is observed at every checkpoint once it first appears.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lifecycle_es.controllers._basin_math import (
    basin_overlap,
    effective_types,
    load_balance,
    normalized_entropy,
    topology_debt,
)
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_ids import parse_expert_id
from lifecycle_es.registry import Registry

__all__ = [
    "BREADTH",
    "CHECKPOINT_STEP",
    "COACT",
    "CONTRIBUTION",
    "COSINE",
    "LAYER_KEYS",
    "PAIR_PREFIXES",
    "SATURATION",
    "SHARE",
    "TOKEN_TYPE",
    "USER",
    "LayerSignal",
    "checkpoints_since",
    "layer_signal",
    "mean",
    "need_series",
    "pair_balance",
    "pair_cosine",
    "pair_order",
    "pair_overlap",
    "pair_series",
    "pair_window",
    "starvation_thresholds",
    "types_at_step",
]

SHARE = "share"
"""An expert's routing share at a checkpoint."""
TOKEN_TYPE = "token_type."
"""Prefix of an expert's distribution over token types (`token_type.<k>`)."""
COSINE = "cosine."
"""Prefix of an expert's weight cosine similarity to another expert (`cosine.<expert id>`)."""
COACT = "coact."
"""Prefix of an expert's co-activation with another expert (`coact.<expert id>`)."""
PAIR_PREFIXES = (COACT, COSINE)
"""The symmetric pair metrics: recorded once per pair, on the pair's first expert (`pair_order`)."""
LAYER_KEYS = ("entropy", "n_eff", "top2_share", "dead_count", "n_active")
"""The layer metrics every checkpoint must carry (ChronoMoE v2's `LayerSnapshot`)."""
BREADTH = "basin_breadth"
"""The optional layer metric: the share-weighted mean over the layer's experts of the effective
number of token types in each expert's basin (exp of the basin's entropy): 1 when every expert
serves one kind of token, higher when experts compromise between kinds."""
USER = "user."
"""Prefix of a user metric recorded on each layer (`user.<name>`, `observations(user=...)`)."""
CONTRIBUTION = "contribution"
"""The optional expert metric: the rise of the evaluation loss when the expert is masked."""
SATURATION = "topk_saturation"
"""The optional layer metric: fraction of tokens whose top-k weights are nearly uniform."""
CHECKPOINT_STEP = "checkpoint_step"
"""Recorded with each layer observation: the step of the checkpoint, so the coordinator can count
the checkpoints an expert has spent in its state (the windows keep values, not steps)."""


@dataclass(frozen=True, slots=True)
class LayerSignal:
    """A layer's starvation and topology debt at each checkpoint of its window, oldest first."""

    starved: tuple[float, ...]
    """1.0 where the checkpoint was starved, else 0.0 (numbers, as the patience policy reads)."""
    debt: tuple[float, ...]
    """ChronoMoE v2 topology debt per checkpoint."""
    spread: tuple[float, ...]
    """Normalized routing entropy per checkpoint."""
    saturation: tuple[float | None, ...]
    """`topk_saturation` per checkpoint, None where it was not observed."""
    breadth: tuple[float | None, ...]
    """`basin_breadth` per checkpoint, None where it was not observed."""
    latest: dict[str, float]
    """The layer's newest value of each metric."""

    def breadth_now(self) -> dict[str, float]:
        """Return the newest `basin_breadth` by name, or nothing where it was not observed."""
        return {BREADTH: self.breadth[-1]} if self.breadth and self.breadth[-1] is not None else {}


def layer_signal(registry: Registry, layer: int, config: ExpertCoordinatorConfig) -> LayerSignal:
    """Return the layer's per-checkpoint starvation, debt and spread.

    A checkpoint is starved when the layer has no dead expert (every expert carries load, so
    no idle capacity is left: "all active experts at capacity") and every test the config sets
    holds. The spread test, when either of its thresholds is set: routing spread thin, with
    normalized entropy (over the layer's n_active + dead_count experts) at least
    `starvation_entropy_threshold`, or `topk_saturation` at least
    `starvation_saturation_threshold`. The breadth test, when `starvation_breadth_threshold` is
    set: the experts' basins are broad, `basin_breadth` at least that (a checkpoint without it
    fails). At a checkpoint carrying the user metric `starvation_need_metric` names, the need
    test (that metric at least `starvation_need_threshold`) replaces the spread test. With no
    test set, nothing starves.
    """
    series = {name: registry.metric_window(layer, name, layer=True) for name in LAYER_KEYS}
    length = min(len(v) for v in series.values())
    cols = {name: values[len(values) - length :] for name, values in series.items()}
    sat_window = registry.metric_window(layer, SATURATION, layer=True)
    saturation = _tail_aligned(sat_window, length)
    breadth = _tail_aligned(registry.metric_window(layer, BREADTH, layer=True), length)
    need_name = config.starvation_need_metric
    need = _tail_aligned(
        registry.metric_window(layer, USER + need_name, layer=True) if need_name else (), length
    )
    # n_active counts the experts that got tokens and dead_count those that got none
    # (ChronoMoE v2's active_experts and dead_expert_count), so together they are v2's n.
    n_experts = tuple(a + d for a, d in zip(cols["n_active"], cols["dead_count"], strict=True))
    spread = tuple(normalized_entropy(h, n) for h, n in zip(cols["entropy"], n_experts, strict=True))
    debt = tuple(
        topology_debt(n_experts=n, n_eff=e, top2_share=t, dead_count=d)
        for n, e, t, d in zip(n_experts, cols["n_eff"], cols["top2_share"], cols["dead_count"], strict=True)
    )
    starved = tuple(
        1.0 if dead == 0 and _needed(config, s, sat, u) and _broad(config, b) else 0.0
        for dead, s, sat, b, u in zip(cols["dead_count"], spread, saturation, breadth, need, strict=True)
    )
    latest = {name: values[-1] for name, values in cols.items() if values}
    if need and need[-1] is not None:
        latest[USER + str(need_name)] = need[-1]
    if saturation and saturation[-1] is not None:
        latest[SATURATION] = saturation[-1]
    if breadth and breadth[-1] is not None:
        latest[BREADTH] = breadth[-1]
    return LayerSignal(starved, debt, spread, saturation, breadth, latest)


def _needed(
    config: ExpertCoordinatorConfig, spread: float, saturation: float | None, need: float | None
) -> bool:
    """The need test when a need metric is named and observed at the checkpoint, else the spread test."""
    if config.starvation_need_metric is not None and need is not None:
        return need >= config.starvation_need_threshold
    return _spread_thin(config, spread, saturation)


def _spread_thin(config: ExpertCoordinatorConfig, spread: float, saturation: float | None) -> bool:
    entropy_at = config.starvation_entropy_threshold
    saturation_at = config.starvation_saturation_threshold
    if entropy_at is None and saturation_at is None:  # not asked, unless no test is set at all
        return config.starvation_breadth_threshold is not None
    return (entropy_at is not None and spread >= entropy_at) or (
        saturation_at is not None and saturation is not None and saturation >= saturation_at
    )


def starvation_thresholds(config: ExpertCoordinatorConfig) -> dict[str, float]:
    """Return the thresholds of the starvation tests the config sets, by name: a spawn gate's evidence."""
    found = {"spawn_patience": float(config.spawn_patience)}
    for name in (
        "starvation_entropy_threshold",
        "starvation_saturation_threshold",
        "starvation_breadth_threshold",
    ):
        if (value := getattr(config, name)) is not None:
            found[name] = value
    if config.starvation_need_metric is not None:
        found["starvation_need_threshold"] = config.starvation_need_threshold
    return found


def need_series(registry: Registry, layer: int, name: str) -> tuple[tuple[float, float | None], ...]:
    """Return the layer's user metric `name` at each checkpoint of its window, oldest first, as
    (checkpoint step, value) pairs, the value None where the checkpoint did not carry it."""
    steps = registry.metric_window(layer, CHECKPOINT_STEP, layer=True)
    values = _tail_aligned(registry.metric_window(layer, USER + name, layer=True), len(steps))
    return tuple(zip(steps, values, strict=True))


def _broad(config: ExpertCoordinatorConfig, breadth: float | None) -> bool:
    at = config.starvation_breadth_threshold
    return at is None or (breadth is not None and breadth >= at)


def _tail_aligned(values: tuple[float, ...], length: int) -> tuple[float | None, ...]:
    """Return `values` aligned to the last `length` checkpoints, None where they have none."""
    tail: tuple[float | None, ...] = values[max(0, len(values) - length) :]
    return (None,) * (length - len(tail)) + tail


def checkpoints_since(registry: Registry, layer: int | None, step: int) -> int:
    """Return how many of the layer's recorded checkpoints came after `step`.

    A transition made at a checkpoint's step comes after that checkpoint's observations, so
    the checkpoints an entity has spent in a state it entered at `step` are those after it.
    """
    return sum(1 for at in registry.metric_window(layer, CHECKPOINT_STEP, layer=True) if at > step)


def pair_order(entity: str) -> tuple[int, int, str]:
    """Sort key of expert ids, by layer and number (`L0_E2` before `L0_E10`): the first of a pair
    keeps the pair's symmetric metrics."""
    parsed = parse_expert_id(entity)
    return (-1, -1, entity) if parsed is None else (*parsed, entity)


def pair_window(registry: Registry, prefix: str, a: str, b: str) -> tuple[float, ...]:
    """Return a symmetric pair metric of two experts per checkpoint (`prefix` one of
    `PAIR_PREFIXES`): the first expert's `<prefix><second>`, else the second's `<prefix><first>`,
    whatever the order of `a` and `b`."""
    first, second = sorted((a, b), key=pair_order)
    return registry.metric_window(first, prefix + second) or registry.metric_window(second, prefix + first)


def pair_cosine(registry: Registry, a: str, b: str) -> tuple[float, ...]:
    """Return the weight cosine of two experts per checkpoint (`pair_window` of `cosine.`)."""
    return pair_window(registry, COSINE, a, b)


def pair_series(registry: Registry, a: str, b: str, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return two experts' weight cosine and basin overlap over their last (up to) `n` checkpoints.

    The cosine is `pair_cosine`; the overlap is computed per
    checkpoint from both experts' token-type distributions. Both series have the same length,
    that of the shortest input; without token types there is no overlap and both are empty.
    """
    cosine = pair_cosine(registry, a, b)
    overlaps = pair_overlap(registry, a, b, min(n, len(cosine)))
    return cosine[len(cosine) - len(overlaps) :], overlaps


def pair_overlap(registry: Registry, a: str, b: str, n: int) -> tuple[float, ...]:
    """Return two experts' basin overlap over their last (up to) `n` checkpoints, oldest first.

    Computed per checkpoint from both experts' token-type distributions; empty without them.
    """
    types = sorted(_token_types(registry, a) | _token_types(registry, b))
    dist_a = [registry.metric_window(a, t) for t in types]
    dist_b = [registry.metric_window(b, t) for t in types]
    observed = [len(w) for w in (*dist_a, *dist_b) if w]
    if not types or not observed:
        return ()
    length = min(n, *observed)
    return tuple(basin_overlap(_at(dist_a, k, length), _at(dist_b, k, length)) for k in range(length))


def pair_balance(registry: Registry, a: str, b: str, n: int) -> tuple[float, ...]:
    """Return how evenly two experts share their tokens over their last (up to) `n` checkpoints,
    oldest first (`load_balance` of their routing shares)."""
    share_a, share_b = registry.metric_window(a, SHARE), registry.metric_window(b, SHARE)
    length = min(n, len(share_a), len(share_b))
    tail_a, tail_b = share_a[len(share_a) - length :], share_b[len(share_b) - length :]
    return tuple(load_balance(x, y) for x, y in zip(tail_a, tail_b, strict=True))


def types_at_step(registry: Registry, entity: str, step: int) -> float | None:
    """Return the effective number of token types the expert served at the last checkpoint at or
    before `step` (`effective_types`), or None when its window no longer holds that checkpoint
    or it has no token types."""
    layer = registry.get(entity).layer
    back = checkpoints_since(registry, layer, step) + 1
    columns = [registry.metric_window(entity, t) for t in sorted(_token_types(registry, entity))]
    if not columns or any(len(col) < back for col in columns):
        return None
    return effective_types([col[-back] for col in columns])


def _token_types(registry: Registry, entity: str) -> set[str]:
    return {name for name in registry.latest_metrics(entity) if name.startswith(TOKEN_TYPE)}


def _at(columns: Sequence[tuple[float, ...]], k: int, length: int) -> list[float]:
    """Return the distribution of the k-th of the last `length` checkpoints (0 = oldest)."""
    back = length - k
    return [col[-back] if len(col) >= back else 0.0 for col in columns]


def mean(values: Sequence[float]) -> float:
    """Return the arithmetic mean of `values`, 0.0 for none."""
    return math.fsum(values) / len(values) if values else 0.0

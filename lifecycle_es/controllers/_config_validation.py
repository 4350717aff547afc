"""The validation of `ExpertCoordinatorConfig`: which values each setting takes, checked at
construction so a bad config fails with one sentence before any run starts.

Kept apart from the settings themselves, whose module is mostly their documentation. A float
setting is stored as a float once it passes (an int given for it is converted).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lifecycle_es.errors import ConfigError
from lifecycle_es.specs.expert import INIT_STRATEGIES

if TYPE_CHECKING:
    from lifecycle_es.controllers._config import ExpertCoordinatorConfig

_COUNTS_FROM_1 = (
    "spawn_patience",
    "prune_patience",
    "split_patience",
    "merge_patience",
    "basin_window_size",
    "lifecycle_eval_interval",
    "cooling_period",
    "merge_cooling_period",
    "split_divergence_window",
    "revive_patience",
    "need_payoff_window",
    "need_floor_failures",
    "park_patience",
    "max_experts_per_layer",
    "min_experts_per_layer",
)
_COUNTS_FROM_0 = (
    "park_budget",
    "keep_departed_budget",
    "spawn_return_grace",
    "max_revives_per_cycle",
    "prune_init_grace",
    "spawn_cooldown_steps",
    "split_cooldown_per_expert",
    "max_spawns_per_cycle",
    "max_prunes_per_cycle",
    "max_splits_per_cycle",
    "max_merges_per_cycle",
)
_INF = math.inf
_RANGES: tuple[tuple[str, str, float, float, str], ...] = (
    ("split_share_threshold", "(", 0.0, 1.0, ")"),
    ("merge_similarity_threshold", "[", -1.0, 1.0, ")"),
    ("merge_overlap_threshold", "[", 0.0, 1.0, ")"),
    ("dormant_share_epsilon", "[", 0.0, 1.0, ")"),
    ("split_perturbation_scale", "[", 0.0, _INF, ")"),
    ("split_divergence_push", "[", 0.0, _INF, ")"),
    ("split_divergence_overlap", "[", 0.0, 1.0, ")"),
    ("split_load_types", "[", 1.0, _INF, ")"),
    ("split_load_balance", "[", 0.0, 1.0, "]"),
    ("revive_affinity_threshold", "(", 0.0, 1.0, "]"),
    ("park_type_share_epsilon", "(", 0.0, 1.0, ")"),
    ("revive_type_share_threshold", "(", 0.0, 1.0, "]"),
    ("park_basin_gone_share", "(", 0.0, 1.0, "]"),
    ("keep_departed_share", "(", 0.0, 1.0, "]"),
    ("starvation_entropy_threshold", "(", 0.0, 1.0, "]"),
    ("starvation_saturation_threshold", "(", 0.0, 1.0, "]"),
    ("starvation_breadth_threshold", "[", 1.0, _INF, ")"),
    ("prune_contribution_threshold", "(", -_INF, _INF, ")"),
    ("starvation_need_threshold", "(", -_INF, _INF, ")"),
    ("need_payoff_fraction", "(", 0.0, 1.0, ")"),
    ("need_floor_margin", "[", 0.0, _INF, ")"),
)
"""Each float setting with its interval, in bound notation: '(' or ')' leaves the bound out."""
_OPTIONAL = frozenset(
    {
        "park_basin_gone_share",
        "keep_departed_share",
        "starvation_entropy_threshold",
        "starvation_saturation_threshold",
        "starvation_breadth_threshold",
        "need_payoff_fraction",
    }
)
"""The float settings None switches off; None is not checked against the interval."""
_WITHIN_WINDOW = (
    "spawn_patience",
    "prune_patience",
    "split_patience",
    "merge_patience",
    "cooling_period",
    "merge_cooling_period",
    "split_divergence_window",
    "revive_patience",
    "park_patience",
)
"""The counts of checkpoints a basin window must be able to hold."""


def validate(config: ExpertCoordinatorConfig) -> None:
    """Raise `ConfigError` for the first setting out of its range; make the float ones floats."""
    for name in _COUNTS_FROM_1:
        _check_int(config, name, 1)
    for name in _COUNTS_FROM_0:
        _check_int(config, name, 0)
    _check_choices(config)
    for name, low_bound, low, high, high_bound in _RANGES:
        if name not in _OPTIONAL or getattr(config, name) is not None:
            _check_float(config, name, low, high, low_open=low_bound == "(", high_open=high_bound == ")")
    _check_kinds(config)
    _check_windows(config)


def judges_need_spawns(config: ExpertCoordinatorConfig) -> bool:
    """Tell whether need spawns can be made and judged (`need_payoff_fraction`)."""
    return (
        config.need_payoff_fraction is not None
        and config.starvation_need_metric is not None
        and config.max_spawns_per_cycle > 0
    )


def _check_choices(config: ExpertCoordinatorConfig) -> None:
    if config.min_experts_per_layer > config.max_experts_per_layer:
        raise ConfigError(
            f"min_experts_per_layer {config.min_experts_per_layer} exceeds "
            f"max_experts_per_layer {config.max_experts_per_layer}"
        )
    if config.spawn_init_strategy not in INIT_STRATEGIES:
        raise ConfigError(
            f"spawn_init_strategy must be one of {INIT_STRATEGIES}, got {config.spawn_init_strategy!r}"
        )


def _check_kinds(config: ExpertCoordinatorConfig) -> None:
    below = config.merge_below_split_share
    if not isinstance(below, bool):
        raise ConfigError(f"merge_below_split_share must be True or False, got {below!r}")
    need = config.starvation_need_metric
    if need is not None and (not isinstance(need, str) or not need):
        raise ConfigError(f"starvation_need_metric must be a metric name or None, got {need!r}")


def _check_windows(config: ExpertCoordinatorConfig) -> None:
    """Refuse a patience or period the basin window could never hold that many checkpoints of."""
    window = config.basin_window_size
    need = ("need_payoff_window",) if judges_need_spawns(config) else ()
    for name in (*_WITHIN_WINDOW, *need):
        if getattr(config, name) > window:
            raise ConfigError(
                f"{name} {getattr(config, name)} exceeds basin_window_size {window}: "
                "the window could never hold that many checkpoints"
            )


def _check_int(config: ExpertCoordinatorConfig, name: str, low: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")


def _check_float(
    config: ExpertCoordinatorConfig,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must lie in {bounds}, got {value!r}")
    object.__setattr__(config, name, float(value))

"""Grafting schedules: each seed's alpha, for every seed of a run at once, from folded facts.

The five strategies of esperlite's `grafting/strategies.py` (reference/seed-projects.md
section 1.6), with its `GraftingConfig` defaults, written as one vectorized step over rows:
every formula is computed for every row and each row keeps the one its strategy names, so a
layer's seeds cost one pass of elementwise ops whatever their mix, with no Python loop per
seed and no host sync. A row's schedule state (current alpha, drift pause countdown, momentum
velocity, unstable-window count, last stable alpha, adaptive scores) is a tensor column too.

`graft_step` is a pure function of (state, facts, epochs in state, strategy ids): the facts are
the metrics a seed's `MetricsObserved` recorded (`FACTS`), so every rank and every replay that
folds the same log and steps on the same training steps computes the same alpha. Where
esperlite measures drift from the weights it is handed, the step reads a recorded `drift`
fact; `DriftMeter` computes that fact from weights with esperlite's EMA, for callers that want
it. esperlite passes `current_alpha=0.0` to every call from its layer; here a row's current
alpha is the alpha of its previous step, which is what the strategies' formulas assume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import IntEnum

import torch

from lifecycle_es.errors import ConfigError

__all__ = [
    "ADAPTIVE_CHOICES",
    "FACTS",
    "DriftMeter",
    "GraftState",
    "GraftingConfig",
    "GraftingStrategy",
    "graft_step",
    "should_abort",
]


class GraftingStrategy(IntEnum):
    """A grafting strategy; the value is the id in the `grafting_strategy` state-tensor column."""

    LINEAR = 0
    DRIFT_CONTROLLED = 1
    MOMENTUM = 2
    ADAPTIVE = 3
    STABILITY = 4


FACTS = (
    "drift",
    "performance_delta",
    "performance_score",
    "loss_variance",
    "gradient_norm",
    "accuracy_variance",
    "error_rate",
)
"""The recorded metrics a schedule reads, in the column order of the facts tensor; 0 when unseen."""
DRIFT, DELTA, SCORE, LOSS_VAR, GRAD_NORM, ACC_VAR, ERROR_RATE = range(len(FACTS))

ADAPTIVE_CHOICES = ("drift", "momentum", "linear")
"""The sub-strategies `adaptive` picks from, in the column order of its scores."""


@dataclass(frozen=True, kw_only=True)
class GraftingConfig:
    """esperlite's `GraftingConfig`, with its defaults."""

    ramp_duration: int = 50
    """Epochs in GRAFTING for the linear ramp to go from 0 to 1."""
    drift_threshold: float = 0.01
    """Drift above which drift-controlled grafting pauses (adaptive switches at half of it)."""
    pause_duration: int = 10
    """Epochs a drift pause holds alpha."""
    momentum_factor: float = 0.1
    """Decay of the momentum strategy's velocity."""
    stability_window: int = 5
    """Epochs between stability checks of the stability strategy."""
    min_alpha: float = 0.0
    """Lowest alpha any strategy returns."""
    max_alpha: float = 1.0
    """Highest alpha any strategy returns."""

    def __post_init__(self) -> None:
        for name in ("ramp_duration", "pause_duration", "stability_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GraftingConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("drift_threshold", "momentum_factor", "min_alpha", "max_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"GraftingConfig.{name} must be a finite number, got {value!r}")
        if not 0.0 <= self.min_alpha <= self.max_alpha <= 1.0:
            raise ConfigError(
                "GraftingConfig needs 0 <= min_alpha <= max_alpha <= 1, "
                f"got {self.min_alpha}, {self.max_alpha}"
            )


@dataclass(frozen=True, slots=True)
class GraftState:
    """Per-row schedule state, one device tensor per field ([N], or [N, 3] for `scores`)."""

    alpha: torch.Tensor
    """float32: the alpha of the row's last step (the strategies' `current_alpha`)."""
    pause: torch.Tensor
    """int32: drift pause steps left."""
    velocity: torch.Tensor
    """float32: the momentum strategy's velocity."""
    unstable: torch.Tensor
    """int32: consecutive unstable windows of the stability strategy."""
    last_stable: torch.Tensor
    """float32: the alpha at the stability strategy's last stable check."""
    scores: torch.Tensor
    """float32 [N, 3]: the adaptive strategy's scores of `ADAPTIVE_CHOICES`."""

    @classmethod
    def blank(cls, rows: int, device: torch.device | str = "cpu") -> GraftState:
        """Return the state of `rows` seeds that have not started grafting (esperlite's `reset()`)."""
        zeros = torch.zeros(rows, dtype=torch.float32, device=device)
        counts = torch.zeros(rows, dtype=torch.int32, device=device)
        scores = torch.tensor([0.33, 0.33, 0.34], device=device).repeat(rows, 1)
        return cls(zeros, counts, zeros.clone(), counts.clone(), zeros.clone(), scores)

    def where(self, rows: torch.Tensor, other: GraftState) -> GraftState:
        """Return this state where `rows` ([N] bool) is True and `other` elsewhere."""
        picked = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            mask = rows if mine.dim() == 1 else rows[:, None]
            picked[f.name] = torch.where(mask, mine, theirs)
        return GraftState(**picked)


def should_abort(facts: torch.Tensor) -> torch.Tensor:
    """Return [N] bool: rows whose recorded error rate is above 0.5 (esperlite's `should_abort`)."""
    return facts[:, ERROR_RATE] > 0.5


def graft_step(
    state: GraftState,
    facts: torch.Tensor,
    epochs: torch.Tensor,
    strategies: torch.Tensor,
    config: GraftingConfig,
) -> GraftState:
    """Return every row's state after one schedule step at `epochs` in GRAFTING.

    `facts` is [N, len(FACTS)] float32, `epochs` and `strategies` [N] integer tensors; an id
    outside `GraftingStrategy` steps as `linear`. Rows the caller does not graft are its to
    mask (`GraftState.where`).
    """
    epoch = epochs.to(torch.float32)
    linear = _clip(epoch / config.ramp_duration, config.min_alpha, config)
    drift_alpha, drift_pause = _drift(state, facts, linear, config)
    mom_alpha, mom_velocity = _momentum(state, facts, epoch, config)
    stab_alpha, unstable, last_stable = _stability(state, facts, epoch, config)
    ad_alpha, ad_pause, ad_velocity, scores = _adaptive(
        state, facts, (drift_alpha, mom_alpha, linear), (drift_pause, mom_velocity), config
    )
    s = torch.where((strategies >= 0) & (strategies < len(GraftingStrategy)), strategies, 0)
    is_ = {g: s == int(g) for g in GraftingStrategy}
    alpha = linear
    for g, value in (
        (GraftingStrategy.DRIFT_CONTROLLED, drift_alpha),
        (GraftingStrategy.MOMENTUM, mom_alpha),
        (GraftingStrategy.ADAPTIVE, ad_alpha),
        (GraftingStrategy.STABILITY, stab_alpha),
    ):
        alpha = torch.where(is_[g], value, alpha)
    pause = torch.where(
        is_[GraftingStrategy.DRIFT_CONTROLLED],
        drift_pause,
        torch.where(is_[GraftingStrategy.ADAPTIVE], ad_pause, state.pause),
    )
    velocity = torch.where(
        is_[GraftingStrategy.MOMENTUM],
        mom_velocity,
        torch.where(is_[GraftingStrategy.ADAPTIVE], ad_velocity, state.velocity),
    )
    stability = is_[GraftingStrategy.STABILITY]
    return replace(
        state,
        alpha=alpha,
        pause=pause,
        velocity=velocity,
        unstable=torch.where(stability, unstable, state.unstable),
        last_stable=torch.where(stability, last_stable, state.last_stable),
        scores=torch.where(is_[GraftingStrategy.ADAPTIVE][:, None], scores, state.scores),
    )


def _clip(value: torch.Tensor, low: float | torch.Tensor, config: GraftingConfig) -> torch.Tensor:
    """esperlite's `np.clip(value, low, max_alpha)`: the upper bound wins if they cross."""
    floor = torch.maximum(value, low) if isinstance(low, torch.Tensor) else value.clamp(min=low)
    return floor.clamp(max=config.max_alpha)


def _drift(
    state: GraftState, facts: torch.Tensor, linear: torch.Tensor, config: GraftingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """`DriftControlledGrafting`: a pause holds alpha and counts down; drift over the threshold starts one."""
    paused = state.pause > 0
    drifting = ~paused & (facts[:, DRIFT] > config.drift_threshold)
    hold = paused | drifting
    pause = torch.where(paused, state.pause - 1, torch.where(drifting, config.pause_duration, state.pause))
    return torch.where(hold, state.alpha, linear), pause.to(torch.int32)


def _momentum(
    state: GraftState, facts: torch.Tensor, epoch: torch.Tensor, config: GraftingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """`MomentumGrafting`: a velocity from the performance delta speeds the ramp; alpha never falls."""
    velocity = config.momentum_factor * state.velocity + 0.01 * facts[:, DELTA]
    low = torch.clamp(state.alpha, min=config.min_alpha)
    return _clip(epoch / config.ramp_duration + velocity, low, config), velocity


def _stability(
    state: GraftState, facts: torch.Tensor, epoch: torch.Tensor, config: GraftingConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`StabilityGrafting`: each window's check; three unstable ones revert, any slows the ramp by half."""
    check = (epoch > 0) & (torch.remainder(epoch, config.stability_window) == 0)
    stable = (facts[:, LOSS_VAR] < 0.1) & (facts[:, GRAD_NORM] < 10.0) & (facts[:, ACC_VAR] < 0.05)
    unstable = torch.where(check, torch.where(stable, 0, state.unstable + 1), state.unstable).to(torch.int32)
    last_stable = torch.where(check & stable, state.alpha, state.last_stable)
    progress = epoch / config.ramp_duration
    progress = torch.where(unstable > 0, progress * 0.5, progress)
    ramp = _clip(progress, config.min_alpha, config)
    return torch.where(check & ~stable & (unstable >= 3), last_stable, ramp), unstable, last_stable


def _adaptive(
    state: GraftState,
    facts: torch.Tensor,
    alphas: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    moved: tuple[torch.Tensor, torch.Tensor],
    config: GraftingConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`AdaptiveGrafting`: pick drift, momentum or linear per step; only the picked one's state moves."""
    pick_drift = facts[:, DRIFT] > 0.5 * config.drift_threshold
    pick_momentum = ~pick_drift & (facts[:, DELTA] > 0.01)
    choice = torch.where(pick_drift, 0, torch.where(pick_momentum, 1, 2))
    alpha = torch.where(pick_drift, alphas[0], torch.where(pick_momentum, alphas[1], alphas[2]))
    pause = torch.where(pick_drift, moved[0], state.pause)
    velocity = torch.where(pick_momentum, moved[1], state.velocity)
    bump = torch.where(facts[:, SCORE] > 0, 0.1, -0.05).to(torch.float32)
    # Not one_hot: on CUDA it checks its input's range on the host, a sync per step.
    picked = choice[:, None] == torch.arange(3, device=choice.device)
    scores = state.scores + torch.where(picked, bump[:, None], 0.0)
    total = (scores[:, 0] + scores[:, 1] + scores[:, 2])[:, None]  # a sum over dim 1 is slower on CPU
    scores = torch.where(total > 0, scores / torch.where(total > 0, total, 1.0), scores)
    return alpha, pause, velocity, scores


class DriftMeter:
    """Relative weight drift per row against an EMA of the weights, as esperlite measures it.

    The first `update` sets the EMA to the weights and reports 0; later ones report
    `||w - ema|| / ||ema||` and then move the EMA 10% towards `w`. Record the result as the
    seed's `drift` metric so the schedules (and a replay) read it from the log.
    """

    def __init__(self) -> None:
        self.ema: torch.Tensor | None = None

    def update(self, weights: torch.Tensor) -> torch.Tensor:
        """Return [N] drift of `weights` ([N, P], one flattened blueprint per row)."""
        w = weights.detach().to(torch.float32)
        if self.ema is None or self.ema.shape != w.shape:
            self.ema = w.clone()
            return torch.zeros(w.shape[0], device=w.device)
        norm = torch.linalg.vector_norm
        drift: torch.Tensor = norm(w - self.ema, dim=1) / norm(self.ema, dim=1)
        self.ema = 0.9 * self.ema + 0.1 * w
        return drift

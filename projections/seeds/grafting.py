"""Grafting schedules: each seed's alpha, for every seed of a run at once, from folded facts.

The five strategies of esperlite's `grafting/strategies.py` (reference/seed-projects.md
section 1.6), with its `GraftingConfig` defaults, written as one vectorized step over rows, with
no Python loop per seed and no host sync. A row's schedule state (current alpha, drift pause
countdown, momentum velocity, unstable-window count, last stable alpha, adaptive scores) is a
tensor column too.

A step is split in two: `graft_plan` reads the facts and strategy ids (which only change when
events are folded) into 0/1 row weights once, and `planned_step` runs the clock-driven part,
about forty elementwise ops for every row whatever the mix of strategies: one base ramp, then
each strategy's formula blended in on its own rows with `torch.lerp` (exact at weights 0 and
1), so 10k seeds step in well under a millisecond on one CPU thread. The result is the same,
bit for bit, as computing every formula for every row and picking with `torch.where`.

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
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum

import torch

from lifecycle_es.errors import ConfigError

__all__ = [
    "ADAPTIVE_CHOICES",
    "FACTS",
    "DriftMeter",
    "GraftPlan",
    "GraftState",
    "GraftingConfig",
    "GraftingStrategy",
    "graft_plan",
    "graft_step",
    "planned_step",
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
    """float32, whole numbers: drift pause steps left (a float, so a step needs no casts)."""
    velocity: torch.Tensor
    """float32: the momentum strategy's velocity."""
    unstable: torch.Tensor
    """float32, whole numbers: consecutive unstable windows of the stability strategy."""
    last_stable: torch.Tensor
    """float32: the alpha at the stability strategy's last stable check."""
    scores: torch.Tensor
    """float32 [N, 3]: the adaptive strategy's scores of `ADAPTIVE_CHOICES`."""

    @classmethod
    def blank(cls, rows: int, device: torch.device | str = "cpu") -> GraftState:
        """Return the state of `rows` seeds that have not started grafting (esperlite's `reset()`)."""
        zeros = torch.zeros(rows, dtype=torch.float32, device=device)
        # [N, 3] viewed from [3, N]: a step reads and writes each score's row contiguously.
        scores = torch.tensor([[0.33], [0.33], [0.34]], device=device).repeat(1, rows).T
        return cls(zeros, zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone(), scores)

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


@dataclass(frozen=True, slots=True)
class GraftPlan:
    """What a step reads from the facts and strategy ids, derived once per fold ([N] float32).

    Masks are 0/1 floats: `torch.lerp` returns either end exactly at weight 0 or 1, and float
    arithmetic on them is a few microseconds an op on CPU where `torch.where` on a bool mask
    costs several times more. Every mask is 0 on a row not stepped.
    """

    hold: torch.Tensor
    """Rows whose alpha stays whatever the pause: drift over the threshold, or not stepped."""
    drift: torch.Tensor
    """Rows stepping drift-controlled (the strategy, or adaptive picking it)."""
    high: torch.Tensor
    """Drift rows whose drift is over the threshold (a pause starts unless one runs)."""
    momentum: torch.Tensor
    """Rows stepping momentum (the strategy, or adaptive picking it)."""
    lift: torch.Tensor
    """`0.01 * performance_delta`, the momentum velocity's input."""
    stability: torch.Tensor
    """Rows stepping the stability strategy."""
    steady: torch.Tensor
    """Stability rows whose facts are stable."""
    shaky: torch.Tensor
    """Stability rows whose facts are not stable."""
    bump: torch.Tensor
    """[3, N]: what adaptive rows add to the score of the sub-strategy they pick."""
    adaptive: torch.Tensor
    """Adaptive rows (their scores are normalized)."""
    scratch: tuple[torch.Tensor, ...]
    """Rows a step writes its temporaries to (so a plan serves one step at a time)."""
    constants: tuple[torch.Tensor, ...]
    """The step's numbers as rows (a Python number in an op costs a cast): zeros, ones, halves,
    twos, pause_duration, ramp_duration, stability_window, momentum_factor."""


def graft_plan(
    facts: torch.Tensor,
    strategies: torch.Tensor,
    config: GraftingConfig,
    rows: torch.Tensor | None = None,
    *,
    previous: GraftPlan | None = None,
) -> GraftPlan:
    """Return the plan of a step of `rows` ([N] bool, all when None) from their facts and strategy ids.

    `facts` is [N, len(FACTS)] float32 with finite values, `strategies` [N] integer; an id
    outside `GraftingStrategy` steps as `linear`. A `previous` plan of the same config, rows
    and device lends its scratch and constants (no step may be using it any more).
    """
    # One contiguous row per fact: free when `facts` is a transposed [F, N] tensor, as
    # `AlphaSchedule` keeps it; a column of a row-major [N, F] tensor is a slow strided read.
    cols, n, device = facts.T.contiguous(), len(strategies), facts.device
    on = torch.ones(n, device=device) if rows is None else rows.to(torch.float32)
    ids = strategies.to(torch.float32)  # exact for any id 0..4; others stay outside 0..4

    def test(compare: Callable[..., torch.Tensor], value: torch.Tensor, limit: float) -> torch.Tensor:
        # A comparison written into a float tensor: one vectorized op, and a 0/1 weight at once.
        return compare(value, limit, out=torch.empty(n, device=device))

    kind = {
        g: test(torch.eq, ids, float(g)).mul_(on) for g in GraftingStrategy if g != GraftingStrategy.LINEAR
    }
    adaptive, stability = kind[GraftingStrategy.ADAPTIVE], kind[GraftingStrategy.STABILITY]
    drifting = test(torch.gt, cols[DRIFT], 0.5 * config.drift_threshold)
    pushing = test(torch.gt, cols[DELTA], 0.01).mul_(1.0 - drifting)
    drift = kind[GraftingStrategy.DRIFT_CONTROLLED] + adaptive * drifting  # a row has one strategy
    high = drift * test(torch.gt, cols[DRIFT], config.drift_threshold)
    stable = test(torch.lt, cols[LOSS_VAR], 0.1) * test(torch.lt, cols[GRAD_NORM], 10.0)
    steady = stability * stable.mul_(test(torch.lt, cols[ACC_VAR], 0.05))
    up = test(torch.gt, cols[SCORE], 0.0)
    bump = torch.lerp(torch.full_like(up, -0.05), torch.full_like(up, 0.1), up).mul_(adaptive)
    picked = torch.stack((drifting, pushing, 1.0 - drifting - pushing))
    lent = previous if previous is not None and previous.lift.shape == (n,) else None
    lent = lent if lent is not None and lent.lift.device == device else None
    return GraftPlan(
        hold=torch.maximum(high, 1.0 - on),
        drift=drift,
        high=high,
        momentum=kind[GraftingStrategy.MOMENTUM] + adaptive * pushing,
        lift=0.01 * cols[DELTA],
        stability=stability,
        steady=steady,
        shaky=stability - steady,
        bump=picked.mul_(bump),
        adaptive=adaptive,
        scratch=lent.scratch if lent is not None else tuple(torch.empty(14, n, device=device)),
        constants=lent.constants if lent is not None else _constants(config, n, device),
    )


def _constants(config: GraftingConfig, n: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    numbers = (0.0, 1.0, 0.5, 2.0, config.pause_duration, config.ramp_duration, config.stability_window)
    return tuple(torch.full((n,), float(v), device=device) for v in (*numbers, config.momentum_factor))


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
    mask (`GraftState.where`), or to leave out of a `graft_plan` given to `planned_step`.
    """
    return planned_step(state, graft_plan(facts, strategies, config), epochs, config)


def planned_step(
    state: GraftState, plan: GraftPlan, epochs: torch.Tensor, config: GraftingConfig
) -> GraftState:
    """Return every row's state after one step at `epochs` in GRAFTING, the facts read from `plan`.

    All five strategies in one pass: the base ramp (linear, halved for an unstable stability
    row), then drift holds, momentum and stability reverts replace it on their own rows. The
    counters are whole numbers in float32, so `clamp(0, 1)` is their `> 0` as a 0/1 weight.
    Temporaries go to the plan's scratch rows (`out=`, `op_`): on CPU an allocation costs about
    as much as a small op. The returned state is new tensors, never scratch.
    """
    _, ones, halves, _, pause_duration, ramp_duration, _, momentum_factor = plan.constants
    epoch, ramp, slow, velocity, paused, held, starts = plan.scratch[:7]
    epoch.copy_(epochs)  # to float32, in place
    torch.div(epoch, ramp_duration, out=ramp)
    unstable, last_stable, revert, half = _windows(state, plan, epoch)
    alpha = torch.lerp(ramp, torch.mul(ramp, halves, out=slow), half).clamp_(
        config.min_alpha, config.max_alpha
    )
    torch.mul(momentum_factor, state.velocity, out=velocity).add_(plan.lift)
    # max(ramp + v, alpha) clamped: the same as esperlite's clip(ramp + v, max(alpha, min), max).
    momentum = torch.maximum(ramp.add_(velocity), state.alpha, out=ramp).clamp_(
        config.min_alpha, config.max_alpha
    )
    torch.clamp(state.pause, 0.0, 1.0, out=paused).mul_(plan.drift)
    alpha.lerp_(state.alpha, torch.maximum(paused, plan.hold, out=held)).lerp_(momentum, plan.momentum)
    torch.sub(plan.high, paused, out=starts).clamp_(0.0, 1.0)  # high and not paused
    return GraftState(
        alpha=alpha.lerp_(last_stable, revert),
        pause=(state.pause - paused).lerp_(pause_duration, starts),
        velocity=torch.lerp(state.velocity, velocity, plan.momentum),
        unstable=unstable,
        last_stable=last_stable,
        scores=_scores(state.scores, plan, ones),
    )


def _windows(
    state: GraftState, plan: GraftPlan, epoch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`StabilityGrafting`'s window checks: (unstable, last_stable, revert, half-speed) rows."""
    zeros, _, _, twos, _, _, stability_window, _ = plan.constants
    windows, check, steady, revert, half = plan.scratch[7:12]
    torch.div(epoch, stability_window, out=windows)
    # A window ends at a positive multiple of the window: floor(q) == q for q >= 1 only. A
    # comparison written into a float tensor is one vectorized op; a bool and a cast cost more.
    torch.eq(torch.floor(windows, out=check), windows.clamp_(min=0.5), out=check)
    torch.mul(check, plan.steady, out=steady)
    shaky = check.mul_(plan.shaky)
    unstable = (state.unstable + shaky).lerp_(zeros, steady)
    last_stable = torch.lerp(state.last_stable, state.alpha, steady)
    torch.sub(unstable, twos, out=revert).clamp_(0.0, 1.0).mul_(shaky)
    return unstable, last_stable, revert, torch.clamp(unstable, 0.0, 1.0, out=half).mul_(plan.stability)


def _scores(scores: torch.Tensor, plan: GraftPlan, ones: torch.Tensor) -> torch.Tensor:
    """`AdaptiveGrafting`'s scores: the picked one bumped, then all three normalized by their sum."""
    total, normalize = plan.scratch[12:14]
    # The bump first: the result takes its [3, N] layout, so the next step reads rows contiguously.
    bumped = plan.bump + scores.T
    torch.sum(bumped, 0, out=total)  # over the [3, N] layout: b0 + b1 + b2, one vectorized pass
    torch.gt(total, 0.0, out=normalize).mul_(plan.adaptive)
    return bumped.div_(torch.lerp(ones, total, normalize, out=normalize)).T


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

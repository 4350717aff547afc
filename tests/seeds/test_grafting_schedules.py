"""The vectorized grafting schedules give esperlite's alpha sequences, strategy by strategy.

The expected sequences come from an unvectorized transcription of reference/seed-projects.md
section 1.6, one Python object per seed as esperlite's classes are, fed the same facts. Facts
are drawn from grids of values well away from every threshold, so float32 and float64 agree
on each comparison and the test holds on any machine.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from lifecycle_es import ConfigError
from projections.seeds import (
    FACTS,
    DriftMeter,
    GraftingConfig,
    GraftingStrategy,
    GraftState,
    graft_step,
    should_abort,
)

# -- the transcription ------------------------------------------------------------------------


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


class RefLinear:
    def __init__(self, c: GraftingConfig) -> None:
        self.c = c

    def compute(self, epoch: int, current: float, m: dict[str, float]) -> float:
        return _clip(epoch / self.c.ramp_duration, self.c.min_alpha, self.c.max_alpha)


class RefDrift(RefLinear):
    def __init__(self, c: GraftingConfig) -> None:
        super().__init__(c)
        self.pause = 0

    def compute(self, epoch: int, current: float, m: dict[str, float]) -> float:
        if self.pause > 0:
            self.pause -= 1
            return current
        if m["drift"] > self.c.drift_threshold:
            self.pause = self.c.pause_duration
            return current
        return super().compute(epoch, current, m)


class RefMomentum(RefLinear):
    def __init__(self, c: GraftingConfig) -> None:
        super().__init__(c)
        self.velocity = 0.0

    def compute(self, epoch: int, current: float, m: dict[str, float]) -> float:
        self.velocity = self.c.momentum_factor * self.velocity + 0.01 * m["performance_delta"]
        low = max(self.c.min_alpha, current)
        return _clip(epoch / self.c.ramp_duration + self.velocity, low, self.c.max_alpha)


class RefAdaptive(RefLinear):
    def __init__(self, c: GraftingConfig) -> None:
        super().__init__(c)
        self.subs: dict[str, RefLinear] = {
            "drift": RefDrift(c),
            "momentum": RefMomentum(c),
            "linear": RefLinear(c),
        }
        self.scores = {"drift": 0.33, "momentum": 0.33, "linear": 0.34}

    def compute(self, epoch: int, current: float, m: dict[str, float]) -> float:
        if m["drift"] > 0.5 * self.c.drift_threshold:
            name = "drift"
        elif m["performance_delta"] > 0.01:
            name = "momentum"
        else:
            name = "linear"
        alpha = self.subs[name].compute(epoch, current, m)
        self.scores[name] += 0.1 if m["performance_score"] > 0 else -0.05
        total = sum(self.scores.values())
        if total > 0:
            self.scores = {k: v / total for k, v in self.scores.items()}
        return alpha


class RefStability(RefLinear):
    def __init__(self, c: GraftingConfig) -> None:
        super().__init__(c)
        self.unstable = 0
        self.last_stable = 0.0

    def compute(self, epoch: int, current: float, m: dict[str, float]) -> float:
        if epoch > 0 and epoch % self.c.stability_window == 0:
            stable = m["loss_variance"] < 0.1 and m["gradient_norm"] < 10.0 and m["accuracy_variance"] < 0.05
            if stable:
                self.last_stable, self.unstable = current, 0
            else:
                self.unstable += 1
                if self.unstable >= 3:
                    return self.last_stable
        progress = epoch / self.c.ramp_duration
        if self.unstable > 0:
            progress *= 0.5
        return _clip(progress, self.c.min_alpha, self.c.max_alpha)


REFERENCE = {
    GraftingStrategy.LINEAR: RefLinear,
    GraftingStrategy.DRIFT_CONTROLLED: RefDrift,
    GraftingStrategy.MOMENTUM: RefMomentum,
    GraftingStrategy.ADAPTIVE: RefAdaptive,
    GraftingStrategy.STABILITY: RefStability,
}

GRID = {
    "drift": (0.0, 0.002, 0.007, 0.03),
    "performance_delta": (-0.4, 0.0, 0.005, 0.05, 0.6),
    "performance_score": (-1.0, 0.0, 0.5),
    "loss_variance": (0.01, 0.05, 0.5),
    "gradient_norm": (1.0, 5.0, 30.0),
    "accuracy_variance": (0.0, 0.01, 0.2),
    "error_rate": (0.0, 0.2, 0.9),
}


def _facts(rng: random.Random, steps: int) -> list[dict[str, float]]:
    return [{name: rng.choice(GRID[name]) for name in FACTS} for _ in range(steps)]


def _reference(strategy: GraftingStrategy, c: GraftingConfig, facts: list[dict[str, float]]) -> list[float]:
    """Alpha per step of one seed, as esperlite's strategy object computes it."""
    ref, alpha, out = REFERENCE[strategy](c), 0.0, []
    for epoch, m in enumerate(facts):
        alpha = ref.compute(epoch, alpha, m)
        out.append(alpha)
    return out


def _vectorized(
    strategies: list[int], c: GraftingConfig, facts: list[list[dict[str, float]]]
) -> torch.Tensor:
    """Alpha per step of every seed at once: [steps, seeds]."""
    n, steps = len(strategies), len(facts[0])
    state, ids, out = GraftState.blank(n), torch.tensor(strategies), []
    for epoch in range(steps):
        table = torch.tensor([[facts[i][epoch][name] for name in FACTS] for i in range(n)])
        state = graft_step(state, table, torch.full((n,), epoch), ids, c)
        out.append(state.alpha)
    return torch.stack(out)


CONFIGS = [
    GraftingConfig(),
    GraftingConfig(
        ramp_duration=12, pause_duration=3, stability_window=2, momentum_factor=0.5, max_alpha=0.8
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["defaults", "short"])
def test_every_strategy_matches_the_transcription_in_one_vectorized_batch(config: GraftingConfig) -> None:
    """Seeds of all five strategies stepped together give each strategy's own sequence, step by step."""
    rng = random.Random(7)
    strategies = [int(s) for s in GraftingStrategy for _ in range(6)]
    facts = [_facts(rng, 70) for _ in strategies]
    got = _vectorized(strategies, config, facts)
    for i, strategy in enumerate(strategies):
        want = torch.tensor(_reference(GraftingStrategy(strategy), config, facts[i]))
        torch.testing.assert_close(got[:, i], want, atol=1e-6, rtol=0, msg=f"seed {i} ({strategy})")


def _quiet(**overrides: float) -> dict[str, float]:
    return {**dict.fromkeys(FACTS, 0.0), **overrides}


def test_the_default_config_is_esperlites() -> None:
    """GraftingConfig's defaults are esperlite's test_default_config values."""
    c = GraftingConfig()
    assert (c.ramp_duration, c.drift_threshold, c.pause_duration, c.momentum_factor) == (50, 0.01, 10, 0.1)
    assert (c.stability_window, c.min_alpha, c.max_alpha) == (5, 0.0, 1.0)


def test_a_drift_pause_holds_alpha_then_the_ramp_resumes() -> None:
    """Drift over the threshold holds alpha (0.5) while the pause counts down, then the ramp resumes (0.2)."""
    c = GraftingConfig(pause_duration=3)
    state = GraftState(**_fields(GraftState.blank(1), alpha=0.5))
    seen = []
    for epoch, drift in ((9, 0.5), (9, 0.0), (9, 0.0), (9, 0.0), (10, 0.0)):
        facts = torch.tensor([list(_quiet(drift=drift).values())])
        state = graft_step(state, facts, torch.tensor([epoch]), torch.tensor([1]), c)
        seen.append(round(float(state.alpha[0]), 6))
    assert seen == [0.5, 0.5, 0.5, 0.5, 0.2]


def _fields(state: GraftState, **values: float) -> dict[str, Any]:
    out = {
        name: getattr(state, name)
        for name in ("alpha", "pause", "velocity", "unstable", "last_stable", "scores")
    }
    out.update({k: torch.tensor([v]) for k, v in values.items()})
    return out


def test_stability_reverts_after_three_unstable_windows_and_halves_the_ramp_before() -> None:
    """An unstable window halves the ramp (52/100 * 0.5 = 0.26); a third in a row reverts alpha."""
    c = GraftingConfig(ramp_duration=100, stability_window=4)
    unstable = torch.tensor([list(_quiet(loss_variance=1.0).values())])
    strategy = torch.tensor([int(GraftingStrategy.STABILITY)])
    state = GraftState(**_fields(GraftState.blank(1), alpha=0.05))
    state = graft_step(state, torch.tensor([list(_quiet().values())]), torch.tensor([4]), strategy, c)
    assert float(state.last_stable[0]) == pytest.approx(0.05)
    state = graft_step(state, unstable, torch.tensor([48]), strategy, c)
    state = graft_step(state, unstable, torch.tensor([50]), strategy, c)  # no check: not a window end
    assert float(state.alpha[0]) == pytest.approx(0.25)
    state = graft_step(state, unstable, torch.tensor([52]), strategy, c)
    assert float(state.alpha[0]) == pytest.approx(0.26)  # 52/100 * 0.5
    state = graft_step(state, unstable, torch.tensor([56]), strategy, c)
    assert float(state.alpha[0]) == pytest.approx(0.05)


def test_should_abort_on_an_error_rate_above_one_half() -> None:
    """Rows whose recorded error_rate is above 0.5 abort; 0.5 itself does not."""
    facts = torch.tensor([list(_quiet(error_rate=r).values()) for r in (0.2, 0.5, 0.51, 0.9)])
    assert should_abort(facts).tolist() == [False, False, True, True]


def test_an_unknown_strategy_id_steps_as_linear() -> None:
    """A strategy id outside 0..4 in the state tensors is stepped with the linear ramp."""
    ids = torch.tensor([0, 9])
    state = graft_step(
        GraftState.blank(2), torch.zeros(2, len(FACTS)), torch.tensor([10, 10]), ids, GraftingConfig()
    )
    assert state.alpha.tolist() == pytest.approx([0.2, 0.2])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ramp_duration": 0}, "ramp_duration must be an int >= 1"),
        ({"pause_duration": 2.5}, "pause_duration must be an int >= 1"),
        ({"drift_threshold": float("nan")}, "drift_threshold must be a finite number"),
        ({"min_alpha": 0.6, "max_alpha": 0.5}, "0 <= min_alpha <= max_alpha <= 1"),
    ],
)
def test_grafting_config_refuses_bad_values(fields: dict[str, Any], message: str) -> None:
    """A GraftingConfig field out of range is refused at construction with a one-sentence ConfigError."""
    with pytest.raises(ConfigError, match=message):
        GraftingConfig(**fields)


def test_the_drift_meter_measures_weights_against_their_ema() -> None:
    """The first update reports 0 and sets the EMA; the next gives ||w - ema|| / ||ema|| and moves the EMA."""
    meter = DriftMeter()
    first, second = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert meter.update(first).tolist() == [0.0, 0.0]
    assert meter.update(second).tolist() == pytest.approx([0.0, 1.0])
    assert meter.ema is not None and meter.ema[1].tolist() == pytest.approx([1.0, 0.1])

"""The hybrid seed controller: the heuristic's prune or rollback on a clear regression stands,
otherwise the policy's confidence decides, and the blend's random draw comes from the
decision's seed, so the same run seed gives the same choices on every replay."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from lifecycle_es import ConfigError, Lifecycle
from lifecycle_es.controllers import (
    SEED_ACTIONS,
    HeuristicController,
    HybridConfig,
    HybridController,
    PolicyController,
    SeedAction,
    SeedDriver,
    SeedView,
)
from lifecycle_es.specs import ModuleState
from tests.seeds._control_walks import walk_to_blending

A, M = SeedAction, ModuleState


def constant(action: SeedAction, p: float) -> PolicyController:
    """A policy giving `action` probability `p` and sharing the rest evenly."""
    rest = (1 - p) / (len(SEED_ACTIONS) - 1)

    def policy(_: Sequence[float]) -> list[float]:
        return [p if a is action else rest for a in SEED_ACTIONS]

    return PolicyController(policy)


def blending_module() -> tuple[Lifecycle, SeedView]:
    lc = Lifecycle(run_id="hybrid")
    lc.start(seed=5)
    lc.register("m", "module", slot=0)
    walk_to_blending(lc, "m")
    e = lc.registry.get("m")
    return lc, SeedView(e, lc.registry.spec_of(e), 0, {"host_regression": 0.0}, 1234)


def with_metrics(view: SeedView, **metrics: float) -> SeedView:
    return SeedView(view.entity, view.spec, view.step, metrics, view.seed)


def test_the_safety_net_keeps_the_heuristic_prune_on_a_clear_regression() -> None:
    """With host_regression 0.11 > 0.1 the heuristic's prune wins over a 0.95-confident hold."""
    _, view = blending_module()
    hybrid = HybridController(HeuristicController(), constant(A.HOLD, 0.95))
    decision = hybrid.decide(with_metrics(view, host_regression=0.11))
    assert decision.action is A.PRUNE
    assert decision.details["chosen_by"] == "heuristic" and "safety net" in decision.reason
    # at exactly the safety threshold the confident policy decides
    assert hybrid.decide(with_metrics(view, host_regression=0.1)).action is A.HOLD


@pytest.mark.parametrize(
    ("confidence", "chosen_by", "action"),
    [(0.81, "policy", A.ROLLBACK), (0.29, "heuristic", A.ADVANCE)],
)
def test_confidence_above_high_takes_the_policy_below_low_the_heuristic(
    confidence: float, chosen_by: str, action: SeedAction
) -> None:
    """Above 0.8 the policy's action is taken, below 0.3 the heuristic's (here: advance)."""
    _, view = blending_module()
    hybrid = HybridController(HeuristicController(), constant(A.ROLLBACK, confidence))
    decision = hybrid.decide(with_metrics(view, contribution=0.5))
    assert (decision.action, decision.details["chosen_by"]) == (action, chosen_by)
    assert "draw" not in decision.details


def test_a_middling_confidence_draws_from_the_decision_seed() -> None:
    """Between the bounds the choice is the policy's iff the seeded draw is below blend."""
    _, view = blending_module()
    hybrid = HybridController(HeuristicController(), constant(A.ROLLBACK, 0.5), HybridConfig(blend=0.5))
    for seed in range(20):
        seeded = SeedView(view.entity, view.spec, view.step, {"contribution": 0.5}, seed)
        decision = hybrid.decide(seeded)
        draw = random.Random(f"hybrid-{seed}").random()
        assert decision.details["draw"] == draw
        assert decision.action is (A.ROLLBACK if draw < 0.5 else A.ADVANCE)


def run(seed: int) -> list[tuple[str, object]]:
    lc = Lifecycle(run_id="hybrid-run")
    lc.start(seed=seed)
    for i in range(8):
        lc.register(f"m{i}", "module", slot=i)
    hybrid = HybridController(HeuristicController(), constant(A.HOLD, 0.5))
    SeedDriver(hybrid).run(lc, step=0, metrics={f"m{i}": {"loss_delta": 0.0} for i in range(8)})
    made = [r for r in lc.log.read() if r["kind"] == "DecisionMade"]
    return [(r["entity"], r["metrics_at_decision"]["draw"]) for r in made]


def test_the_same_run_seed_gives_the_same_hybrid_choices() -> None:
    """Two runs from seed 3 record identical draws per entity; seed 4 records others."""
    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"high_confidence": 1.5}, "high_confidence must lie in"),
        ({"low_confidence": 0.9, "high_confidence": 0.5}, "low_confidence 0.9 is above"),
        ({"blend": float("nan")}, "blend must be a finite number"),
    ],
)
def test_bad_hybrid_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    """Each bad blend setting is a one-sentence ConfigError at construction."""
    with pytest.raises(ConfigError, match=message):
        HybridConfig(**kwargs)

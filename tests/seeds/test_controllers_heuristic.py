"""The heuristic seed controller: seeds/000's per-state rules decide the same way at and on either
side of each threshold, for `module` and `kasmina` entities (deterministic inputs only)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from lifecycle_es import ConfigError, GateMode, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import HeuristicConfig, HeuristicController, SeedAction, SeedView
from lifecycle_es.specs import KasminaState, ModuleState

A, K, M = SeedAction, KasminaState, ModuleState
H = HeuristicController(HeuristicConfig(min_training_steps=5, max_training_steps=40))

_PATHS: dict[str, list[str]] = {
    "module": [M.INSTANTIATED, M.TRAINING, M.BLENDING, M.HOLDING],
    "kasmina": [K.GERMINATED, K.TRAINING, K.GRAFTING, K.STABILIZATION, K.EVALUATING, K.FINE_TUNING],
}


def entity_in(spec: str, state: str) -> Lifecycle:
    """A lifecycle holding entity `e` of `spec`, walked into `state` at step 0 in permissive mode."""
    lc = Lifecycle(config=LifecycleConfig(mode=GateMode.PERMISSIVE), run_id="heuristic")
    lc.register("e", spec, slot=0)
    if state == "DORMANT":
        return lc
    for target in _PATHS[spec]:
        # Kasmina's minimum times are structural: skip them by walking with large steps.
        lc.transition("e", target, step=lc.step + 100, metrics={"available_slots": 1})
        if target == state:
            return lc
    raise AssertionError(state)


def decide(spec: str, state: str, spent: int, metrics: Mapping[str, float]) -> SeedAction:
    lc = entity_in(spec, state)
    entity = lc.registry.get("e")
    view = SeedView(entity, lc.registry.spec_of(entity), entity.entered_step + spent, metrics, 0)
    return H.decide(view).action


@pytest.mark.parametrize("spec", ["module", "kasmina"])
@pytest.mark.parametrize(
    ("delta", "action"),
    [(0.0, A.GROW), (0.00099, A.GROW), (-0.00099, A.GROW), (0.001, A.HOLD), (-0.002, A.HOLD)],
)
def test_dormant_grows_on_a_loss_plateau_only(spec: str, delta: float, action: SeedAction) -> None:
    """DORMANT grows when |loss_delta| < 0.001 (seeds/000's loss_plateau) and holds at or above it."""
    assert decide(spec, "DORMANT", 0, {"loss_delta": delta}) is action


def test_dormant_without_a_loss_delta_holds() -> None:
    """No observed loss_delta is no plateau: the seed stays dormant."""
    assert decide("module", "DORMANT", 0, {}) is A.HOLD


@pytest.mark.parametrize(
    ("spent", "delta", "action"),
    [
        (4, -1.0, A.HOLD),  # below min_training_steps nothing is judged
        (5, -0.0101, A.ADVANCE),
        (5, -0.01, A.HOLD),  # improvement must exceed the threshold
        (5, 0.05, A.HOLD),
        (5, 0.0501, A.PRUNE),
        (39, 0.0, A.HOLD),
        (40, 0.0, A.PRUNE),  # max_training_steps forces a prune
    ],
)
def test_module_training_rules_at_their_thresholds(spent: int, delta: float, action: SeedAction) -> None:
    """TRAINING: advance below -improvement_threshold, prune above regression_threshold, hold between."""
    assert decide("module", M.TRAINING, spent, {"loss_delta": delta}) is action


def test_kasmina_training_waits_for_the_spec_minimum_before_advancing() -> None:
    """A Kasmina seed improving after 99 steps holds (TRAINING's minimum is 100); at 100 it advances."""
    heuristic = HeuristicController(HeuristicConfig(min_training_steps=5))
    for spent, action in ((99, A.HOLD), (100, A.ADVANCE)):
        lc = entity_in("kasmina", K.TRAINING)
        e = lc.registry.get("e")
        view = SeedView(e, lc.registry.spec_of(e), e.entered_step + spent, {"loss_delta": -0.5}, 0)
        decision = heuristic.decide(view)
        assert decision.action is action, decision.reason


@pytest.mark.parametrize(
    ("state", "spent", "metrics", "action"),
    [
        (M.BLENDING, 0, {"host_regression": 0.0201}, A.PRUNE),
        (M.BLENDING, 0, {"host_regression": 0.02, "contribution": 0.001}, A.ADVANCE),
        (M.BLENDING, 0, {"host_regression": 0.02, "contribution": 0.0}, A.HOLD),
        (M.HOLDING, 9, {"contribution": 0.5}, A.HOLD),  # min_holding_steps 10
        (M.HOLDING, 10, {"contribution": 0.5}, A.ADVANCE),
        (M.HOLDING, 50, {"contribution": 0.5, "host_regression": 0.03}, A.PRUNE),
    ],
)
def test_module_blending_and_holding(
    state: str, spent: int, metrics: dict[str, float], action: SeedAction
) -> None:
    """Regression above max_regression prunes; contribution above min_contribution advances."""
    assert decide("module", state, spent, metrics) is action


@pytest.mark.parametrize(
    ("state", "spent", "metrics", "action"),
    [
        (K.GRAFTING, 10, {"host_regression": 0.0201}, A.ROLLBACK),  # rollback skips the minimum
        (K.GRAFTING, 49, {"host_regression": 0.0}, A.HOLD),
        (K.GRAFTING, 50, {"host_regression": 0.02}, A.ADVANCE),
        (K.STABILIZATION, 20, {"host_regression": 0.5}, A.ROLLBACK),
        (K.EVALUATING, 30, {"performance_delta": -0.0501}, A.PRUNE),
        (K.EVALUATING, 30, {"performance_delta": -0.05}, A.HOLD),
        (K.EVALUATING, 30, {"error_rate": 0.1001}, A.PRUNE),
        (K.EVALUATING, 30, {"performance_delta": 0.01, "stability_score": 0.8}, A.ADVANCE),
        (K.EVALUATING, 30, {"performance_delta": 0.01, "stability_score": 0.79}, A.HOLD),
        (K.EVALUATING, 29, {"performance_delta": 0.01, "stability_score": 0.9}, A.HOLD),
        (K.FINE_TUNING, 50, {}, A.ADVANCE),
    ],
)
def test_kasmina_graft_and_evaluation_rules(
    state: str, spent: int, metrics: dict[str, float], action: SeedAction
) -> None:
    """Grafted states roll back on regression and advance after the spec's minimum; EVALUATING
    culls on harm or errors and advances on a positive, stable evaluation."""
    assert decide("kasmina", state, spent, metrics) is action


def test_terminal_states_hold_and_failed_slots_embargo_then_release() -> None:
    """A FOSSILIZED seed holds; a PRUNED module asks for the embargo and an EMBARGOED one for release."""
    lc = Lifecycle(run_id="h")
    lc.register("m", "module", slot=0)
    lc.transition("m", M.INSTANTIATED, metrics={"available_slots": 1})
    lc.transition("m", M.TRAINING)
    lc.transition("m", M.PRUNED)
    m = lc.registry.get("m")
    assert H.decide(SeedView(m, lc.registry.spec_of(m), 0, {}, 0)).action is A.PRUNE
    lc.transition("m", M.EMBARGOED)
    m = lc.registry.get("m")
    assert H.decide(SeedView(m, lc.registry.spec_of(m), 0, {}, 0)).action is A.ADVANCE
    assert decide("module", "DORMANT", 0, {"loss_delta": 0.5}) is A.HOLD


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_training_steps": -1}, "min_training_steps must be an int >= 0"),
        ({"min_training_steps": 1.5}, "min_training_steps must be an int >= 0"),
        ({"max_regression": float("inf")}, "max_regression must be a finite number"),
        ({"plateau_threshold": -0.1}, "plateau_threshold must be >= 0"),
        ({"min_training_steps": 10, "max_training_steps": 5}, "max_training_steps 5 is below"),
    ],
)
def test_bad_heuristic_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    """Each bad threshold is a one-sentence ConfigError at construction."""
    with pytest.raises(ConfigError, match=message):
        HeuristicConfig(**kwargs)  # type: ignore[arg-type]

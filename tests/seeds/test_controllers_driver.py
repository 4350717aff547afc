"""`SeedDriver`: each decision is a `DecisionMade`, its action a controller-triggered request whose
gates are recorded, and its reward (seeds/000's `get_reward`) a `RewardRecorded`; hysteresis holds
back moves that come too soon or too often."""

from __future__ import annotations

import pytest

from lifecycle_es import ConfigError, Lifecycle, UsageError
from lifecycle_es.controllers import HeuristicConfig, HeuristicController, SeedAction, SeedDriver, get_reward
from lifecycle_es.policies import HysteresisConfig
from lifecycle_es.specs import ModuleState
from tests.seeds._control_walks import walk_to_blending

A, M = SeedAction, ModuleState


@pytest.mark.parametrize(
    ("metrics", "action", "reward", "terms"),
    [
        ({}, A.HOLD, 0.0, {}),
        ({"loss_improved": 1}, A.HOLD, 1.0, {"loss_improved": 1.0}),
        ({"host_regression": 0.01}, A.ADVANCE, -2.0, {"host_regression": -2.0}),
        ({"host_regression": 0.0, "over_budget": 1}, A.GROW, -1.0, {"over_budget": -1.0}),
        (
            {"integration_success": 1, "loss_improved": 1},
            A.ADVANCE,
            6.0,
            {"loss_improved": 1.0, "integration_success": 5.0},
        ),
        ({"integration_success": 1}, A.HOLD, 0.0, {}),
    ],
)
def test_get_reward_adds_seeds_000_terms(
    metrics: dict[str, float], action: SeedAction, reward: float, terms: dict[str, float]
) -> None:
    """+1 loss improved, -2 any regression, -1 over budget, +5 an advance that integrated."""
    assert get_reward(metrics, action) == (reward, terms)


def started(*modules: str) -> Lifecycle:
    lc = Lifecycle(run_id="driver")
    lc.start(seed=2)
    for i, name in enumerate(modules):
        lc.register(name, "module", slot=i)
    return lc


def test_each_decision_is_recorded_then_fired_then_rewarded() -> None:
    """A grow decision is followed by its gate checks, the move (triggered_by the controller,
    caused by the decision) and a RewardRecorded caused by the same decision."""
    lc = started("m")
    (done,) = SeedDriver(HeuristicController()).run(
        lc, step=0, metrics={"m": {"loss_delta": 0.0, "available_slots": 1, "loss_improved": 1}}
    )
    records = lc.log.read()
    kinds = [r["kind"] for r in records[-6:]]
    assert kinds == [
        "DecisionMade",
        "GateChecked",
        "GateChecked",
        "GateChecked",
        "TransitionApplied",
        "RewardRecorded",
    ]
    decision, applied, reward = records[-6], records[-2], records[-1]
    assert decision["event_id"] == done.decision_id
    assert (applied["triggered_by"], applied["causation"]) == ("controller:heuristic", done.decision_id)
    assert (reward["causation"], reward["reward"], reward["components"]) == (
        done.decision_id,
        1.0,
        {"loss_improved": 1.0},
    )
    assert done.fired is not None and done.fired.accepted
    assert lc.registry.get("m").state == M.INSTANTIATED


def test_an_advance_that_integrates_earns_the_integration_reward() -> None:
    """A HOLDING module whose advance passes the integration gates gets +5 (integration_success)."""
    lc = started("m")
    walk_to_blending(lc, "m")
    lc.transition("m", M.HOLDING, metrics={"host_accuracy_at_blend": 0.8, "current_accuracy": 0.8})
    for _ in range(10):
        lc.observe({"improvement": 0.02}, entity="m")
    (done,) = SeedDriver(HeuristicController(HeuristicConfig(min_holding_steps=10))).run(
        lc, step=10, metrics={"m": {"contribution": 0.2, "module_contribution": 0.2}}
    )
    assert lc.registry.get("m").state == M.INTEGRATED
    assert done.reward == 5.0


def test_a_refused_controller_request_is_recorded_and_earns_no_bonus() -> None:
    """A grow without a free slot metric fails slot_available: rejected on the log, reward 0."""
    lc = started("m")
    (done,) = SeedDriver(HeuristicController()).run(lc, step=0, metrics={"m": {"loss_delta": 0.0}})
    assert done.fired is not None and not done.fired.accepted
    assert done.fired.reasons == ("slot_available: metric available_slots was not observed",)
    assert [r["kind"] for r in lc.log.read()[-2:]] == ["TransitionRejected", "RewardRecorded"]
    assert done.reward == 0.0


def test_hysteresis_holds_a_move_that_comes_too_soon() -> None:
    """With a 10-step minimum, a module 5 steps into INSTANTIATED holds (recording the proposed
    advance and the reason); at 10 steps it starts training."""
    lc = started("m")
    lc.transition("m", M.INSTANTIATED, metrics={"available_slots": 1})
    driver = SeedDriver(
        HeuristicController(),
        hysteresis=HysteresisConfig(min_time_in_state=10, max_transitions_per_window=3, window_size=100),
    )
    (held,) = driver.run(lc, step=5)
    assert held.decision.action is A.HOLD and held.fired is None
    assert held.decision.reason == "hysteresis: Too soon since last transition: 5 < 10 steps"
    decision = [r for r in lc.log.read() if r["kind"] == "DecisionMade"][-1]
    assert (decision["action"], decision["metrics_at_decision"]["proposed"]) == ("HOLD", "advance")
    (moved,) = driver.run(lc, step=10)
    assert moved.decision.action is A.ADVANCE and lc.registry.get("m").state == M.TRAINING


def test_hysteresis_caps_moves_per_window_but_never_a_rollback() -> None:
    """After 2 moves in a 100-step window a third advance holds; rollback is an emergency exit."""
    lc = started("m")
    driver = SeedDriver(
        HeuristicController(),
        hysteresis=HysteresisConfig(min_time_in_state=0, max_transitions_per_window=2, window_size=100),
    )
    driver.run(lc, step=0, metrics={"m": {"loss_delta": 0.0, "available_slots": 1}})  # grow
    driver.run(lc, step=1)  # start training
    (held,) = driver.run(lc, step=10, metrics={"m": {"loss_delta": -0.5}})
    assert held.decision.action is A.HOLD
    assert held.decision.reason == "hysteresis: Too many transitions in window: 2 >= 2"
    assert lc.registry.get("m").state == M.TRAINING
    lc.register("s", "kasmina", slot=0)
    lc.transition("s", "GERMINATED", step=10)
    lc.transition("s", "TRAINING", step=10)
    lc.transition("s", "GRAFTING", step=110, metrics={"reconstruction_loss": 0.0})
    (rolled,) = driver.run(lc, entities=["s"], step=111, metrics={"s": {"host_regression": 0.5}})
    assert rolled.decision.action is A.ROLLBACK and lc.registry.get("s").state == "ROLLED_BACK"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_transitions_per_window": 33}, r"must lie in \[1, 32\]"),
        ({"max_transitions_per_window": 0}, r"must lie in \[1, 32\]"),
        ({"window_size": -1}, "window_size must be an int >= 0"),
    ],
)
def test_bad_hysteresis_settings_are_refused(kwargs: dict[str, int], message: str) -> None:
    """A window cap the registry's bounded history could never count is refused at construction."""
    with pytest.raises(ConfigError, match=message):
        HysteresisConfig(**kwargs)


def test_metrics_for_an_entity_the_driver_does_not_drive_are_refused() -> None:
    """Metrics naming a terminal or unknown entity raise before anything is recorded."""
    lc = started("m")
    before = lc.registry.seq
    with pytest.raises(UsageError, match=r"names entities this run does not drive: \['ghost'\]"):
        SeedDriver(HeuristicController()).run(lc, step=0, metrics={"ghost": {"loss_delta": 0.0}})
    assert lc.registry.seq == before

"""Triggers of seeds/000 (metric, time, budget) and the requests they fire: each request goes
through `Lifecycle.transition`, so its gate checks and the move or its refusal are on the log
with `triggered_by` naming the trigger."""

from __future__ import annotations

import pytest

from lifecycle_es import ConfigError, Lifecycle
from lifecycle_es.specs import KasminaState, ModuleState
from lifecycle_es.triggers import (
    BudgetTrigger,
    Comparator,
    MetricTrigger,
    TimeTrigger,
    TimeVerdict,
    TransitionRequest,
    TriggerSet,
    fire,
)

K, M = KasminaState, ModuleState


@pytest.mark.parametrize(
    ("comparator", "value", "fires"),
    [
        ("lt", 0.0009, True),
        ("lt", 0.001, False),
        ("lt", 0.0011, False),
        ("gt", 0.0011, True),
        ("gt", 0.001, False),
        ("eq", 0.001 + 5e-7, True),
        ("eq", 0.001 + 2e-6, False),
    ],
)
def test_a_metric_trigger_fires_only_past_its_threshold(comparator: str, value: float, fires: bool) -> None:
    """`lt` and `gt` are strict at the threshold and `eq` holds within 1e-6, as seeds/000 writes them."""
    trigger = MetricTrigger(
        metric="loss_delta", comparator=Comparator(comparator), threshold=0.001, fires="grow"
    )
    assert trigger.check({"loss_delta": value}) is fires
    assert (trigger.request("s", {"loss_delta": value}) is not None) is fires


def test_a_metric_never_observed_does_not_fire() -> None:
    """A missing metric is no signal: the trigger neither fires nor raises."""
    trigger = MetricTrigger(metric="loss_delta", comparator=Comparator.LT, threshold=0.001, fires="germinate")
    assert trigger.request("s", {"accuracy": 0.5}) is None


def started() -> Lifecycle:
    lc = Lifecycle(run_id="triggers")
    lc.start(seed=1)
    return lc


def test_time_blocks_below_the_minimum_and_forces_at_the_maximum() -> None:
    """With min 10 and max 20 steps in state: 9 blocks, 10..19 is neutral, 20 forces the move."""
    lc = started()
    seed = lc.register("s", "kasmina", step=0)
    trigger = TimeTrigger(min_steps=10, max_steps=20, fires="germinate")
    verdicts = {step: trigger.check(seed, step)[0] for step in (9, 10, 19, 20)}
    assert verdicts == {
        9: TimeVerdict.BLOCK,
        10: TimeVerdict.NEUTRAL,
        19: TimeVerdict.NEUTRAL,
        20: TimeVerdict.FORCE,
    }
    assert trigger.request(seed, 19) is None
    forced = trigger.request(seed, 20)
    assert forced is not None and forced.triggered_by == "time:max_steps"
    assert fire(lc, forced, step=20).accepted
    applied = lc.log.read()[-1]
    assert (applied["kind"], applied["to_state"], applied["triggered_by"]) == (
        "TransitionApplied",
        K.GERMINATED,
        "time:max_steps",
    )


def test_budget_prunes_when_over_and_lets_growth_that_fits() -> None:
    """Over 1000 parameters should_prune holds; can_grow accepts growth to exactly the budget."""
    budget = BudgetTrigger(param_budget=1000, prunes="cull")
    assert not budget.should_prune({"total_params": 1000})
    assert budget.should_prune({"total_params": 1001})
    assert budget.can_grow({"total_params": 900}, 100)
    assert not budget.can_grow({"total_params": 900}, 101)
    request = budget.request("s", {"total_params": 1200})
    assert request is not None and (request.trigger, request.triggered_by) == ("cull", "budget:should_prune")
    assert budget.request("s", {"total_params": 10}) is None


def test_a_refused_request_is_recorded_with_its_gates_and_trigger() -> None:
    """A budget cull before Kasmina's 100 steps in TRAINING is refused: GateChecked and
    TransitionRejected are appended, carrying triggered_by, and fire returns the reasons."""
    lc = started()
    lc.register("s", "kasmina", step=0)
    lc.transition("s", K.GERMINATED)
    lc.transition("s", K.TRAINING)
    request = BudgetTrigger(param_budget=10, prunes="cull").request("s", {"total_params": 20})
    assert request is not None
    fired = fire(lc, request, step=50)
    assert not fired.accepted
    assert fired.reasons == ("min_time_in_state: Insufficient time in TRAINING: 50 < 100 epochs",)
    checked, rejected = lc.log.read()[-2:]
    assert (checked["kind"], checked["gate"], checked["passed"]) == (
        "GateChecked",
        "min_time_in_state",
        False,
    )
    assert (rejected["kind"], rejected["triggered_by"]) == ("TransitionRejected", "budget:should_prune")
    assert lc.registry.get("s").state == K.TRAINING


def test_a_request_carries_its_metadata_and_causation() -> None:
    """The request's metadata and causation land on the applied event."""
    lc = started()
    lc.register("m", "module", slot=0)
    cause = lc.log.read()[-1]["event_id"]
    request = TransitionRequest(
        entity="m",
        trigger="instantiate",
        triggered_by="metric:loss_delta<0.001",
        metrics={"available_slots": 1},
        metadata={"why": "plateau"},
        causation=cause,
    )
    assert fire(lc, request).accepted
    applied = lc.log.read()[-1]
    assert (applied["to_state"], applied["metadata"], applied["causation"]) == (
        M.INSTANTIATED,
        {"why": "plateau"},
        cause,
    )


def test_a_trigger_set_asks_time_then_budget_then_metrics() -> None:
    """Below the minimum nothing fires; past the maximum time forces; between, an over-budget
    prune comes before a metric trigger, and the first metric trigger that fires wins."""
    lc = started()
    seed = lc.register("s", "kasmina", step=0)
    triggers = TriggerSet(
        time=TimeTrigger(min_steps=5, max_steps=50, fires="germinate"),
        budget=BudgetTrigger(param_budget=100, prunes="cancel"),
        metrics=(
            MetricTrigger(metric="loss_delta", comparator=Comparator.LT, threshold=0.001, fires="germinate"),
            MetricTrigger(metric="accuracy", comparator=Comparator.GT, threshold=0.9, fires="cancel"),
        ),
    )
    over = {"total_params": 200.0, "loss_delta": 0.0}

    def asked(step: int, metrics: dict[str, float]) -> tuple[str, str] | None:
        request = triggers.request(seed, step, metrics)
        return None if request is None else (request.trigger, request.triggered_by)

    assert asked(4, over) is None
    assert asked(50, over) == ("germinate", "time:max_steps")
    assert asked(10, over) == ("cancel", "budget:should_prune")
    assert asked(10, {"loss_delta": 0.0, "accuracy": 0.95}) == ("germinate", "metric:loss_delta<0.001")
    assert asked(10, {"loss_delta": 0.5, "accuracy": 0.95}) == ("cancel", "metric:accuracy>0.9")
    assert asked(10, {"loss_delta": 0.5}) is None
    with pytest.raises(ConfigError, match="metrics must be a tuple of MetricTrigger"):
        TriggerSet(metrics=[triggers.metrics[0]])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: MetricTrigger(metric="x", comparator="ge", threshold=1, fires="a"),  # type: ignore[arg-type]
            "comparator must be one of",
        ),
        (
            lambda: MetricTrigger(metric="x", comparator=Comparator.LT, threshold=float("nan"), fires="a"),
            "threshold must be a finite number",
        ),
        (lambda: TimeTrigger(min_steps=-1), "min_steps must be an int >= 0"),
        (lambda: TimeTrigger(max_steps=5), "fires must name the spec trigger"),
        (lambda: TimeTrigger(min_steps=10, max_steps=5, fires="a"), "max_steps 5 is below min_steps 10"),
        (lambda: BudgetTrigger(param_budget=-1), "param_budget must be >= 0"),
    ],
)
def test_bad_trigger_settings_are_refused_at_construction(build: object, message: str) -> None:
    """Each bad setting is a one-sentence ConfigError when the trigger is built."""
    with pytest.raises(ConfigError, match=message):
        build()  # type: ignore[operator]

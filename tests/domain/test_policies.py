"""Policies: embargo with exponential backoff, hysteresis, budgets, cooldowns and patience.

Every policy reads facts the registry folded from events, so the tests drive real transitions,
observations and `DecisionMade` events through a `Lifecycle`, and the last test rebuilds the
registry from the log and asks the policies again.
"""

from __future__ import annotations

from typing import Any

import pytest

from lifecycle_es import (
    Action,
    DecisionMade,
    InvalidTransitionError,
    Lifecycle,
    LifecycleConfig,
    Registry,
    SlotEmbargoedError,
    Spec,
    StateCategory,
    StateDef,
    TransitionDef,
    fold_record,
)
from lifecycle_es.policies import (
    action_budget_left,
    cooldown_elapsed,
    embargo_until,
    hysteresis,
    patience,
    population_budget_left,
    population_floor_left,
    streak,
)
from lifecycle_es.specs import ModuleState

M = ModuleState
GROW = {"available_slots": 1}


# -- embargo: cooldown per slot with exponential backoff -----------------------------------------


def fail_module(lc: Lifecycle, entity: str, step: int) -> None:
    """Grow the module from DORMANT, train it and prune it at `step`, then embargo its slot."""
    lc.advance(step)
    lc.transition(entity, to=M.INSTANTIATED, metrics=GROW)
    lc.transition(entity, to=M.TRAINING)
    lc.transition(entity, to=M.PRUNED)
    lc.transition(entity, to=M.EMBARGOED)


def embargo(lc: Lifecycle, entity: str, *, base: int = 100, exponential: bool = True) -> int:
    return embargo_until(lc.registry, lc.registry.get(entity), base=base, exponential=exponential)


def refused_release(lc: Lifecycle, entity: str, step: int) -> InvalidTransitionError:
    with pytest.raises(InvalidTransitionError) as caught:
        lc.transition(entity, to=M.DORMANT, step=step)
    assert lc.registry.get(entity).state == M.EMBARGOED
    return caught.value


def last_check(lc: Lifecycle, gate: str) -> dict[str, Any]:
    return [r for r in lc.log.read() if r["kind"] == "GateChecked" and r["gate"] == gate][-1]


def test_the_embargo_doubles_with_each_failure_in_a_row() -> None:
    """After the n-th failure the slot waits base * 2**(n-1) steps: 100, 200, 400."""
    lc = Lifecycle()
    lc.register("m", "module", slot=0, layer=0)
    for n, (failed_at, cooldown) in enumerate([(0, 100), (1_000, 200), (2_000, 400)], start=1):
        fail_module(lc, "m", failed_at)
        assert lc.registry.slot_failures(lc.registry.get("m")) == (n, failed_at)
        until = failed_at + cooldown
        assert embargo(lc, "m") == until
        error = refused_release(lc, "m", until - 1)
        assert error.reasons == (f"not_embargoed: slot is embargoed until step {until}",)
        check = last_check(lc, "not_embargoed")
        assert (check["passed"], check["observed"]) == (False, {"embargo_until": until})
        assert check["thresholds"] == {"base_cooldown": 100, "exponential": 1}
        assert lc.transition("m", to=M.DORMANT, step=until).state == M.DORMANT
        assert last_check(lc, "not_embargoed")["passed"] is True


def test_without_exponential_backoff_the_cooldown_stays_at_its_base() -> None:
    """With exponential=0 and base 50, the second failure's embargo is 50 steps, not 100."""
    params = {"not_embargoed": {"base_cooldown": 50, "exponential": 0}}
    lc = Lifecycle(config=LifecycleConfig(gate_params=params))
    lc.register("m", "module", slot=0)
    fail_module(lc, "m", 0)
    lc.transition("m", to=M.DORMANT, step=50)
    fail_module(lc, "m", 500)
    assert embargo(lc, "m", base=50, exponential=False) == 550
    assert embargo(lc, "m", base=50, exponential=True) == 600  # what backoff would have asked
    refused_release(lc, "m", 549)
    assert lc.transition("m", to=M.DORMANT, step=550).state == M.DORMANT


def test_a_slot_that_never_failed_is_not_embargoed() -> None:
    """A fresh slot's embargo ends at step 0."""
    lc = Lifecycle()
    lc.register("m", "module", slot=3)
    assert lc.registry.slot_failures(lc.registry.get("m")) is None
    assert embargo(lc, "m") == 0


def test_failures_belong_to_the_slot_and_a_success_resets_them() -> None:
    """A new module in a failed slot inherits its count; integrating a module clears it."""
    lc = Lifecycle()
    lc.register("m1", "module", slot=0)
    fail_module(lc, "m1", 0)
    with pytest.raises(SlotEmbargoedError):
        lc.register("m2", "module", slot=0, step=10)  # released, but on cooldown until 100
    lc.register("m2", "module", slot=0, step=100)
    assert embargo(lc, "m2") == 100
    lc.advance(100)
    integrate(lc, "m2")
    assert lc.registry.slot_failures(lc.registry.get("m2")) is None
    lc.register("m3", "module", slot=0, step=lc.step)  # INTEGRATED is terminal: slot free
    assert embargo(lc, "m3") == 0
    fail_module(lc, "m3", 5_000)
    assert lc.registry.slot_failures(lc.registry.get("m3")) == (1, 5_000)
    assert embargo(lc, "m3") == 5_100  # back to the base cooldown


def integrate(lc: Lifecycle, entity: str) -> None:
    """Walk a module from DORMANT to INTEGRATED through the real gates of seeds/000."""
    lc.transition(entity, to=M.INSTANTIATED, metrics=GROW)
    lc.transition(entity, to=M.TRAINING)
    lc.transition(
        entity,
        to=M.BLENDING,
        metrics={
            "epochs_trained": 5,
            "loss_at_instantiation": 2.0,
            "current_loss": 1.0,
            "module_grad_norm": 0.5,
        },
    )
    lc.transition(entity, to=M.HOLDING, metrics={"host_accuracy_at_blend": 0.8, "current_accuracy": 0.8})
    for _ in range(10):
        lc.observe({"improvement": 0.02}, entity=entity)
    lc.transition(entity, to=M.INTEGRATED, metrics={"module_contribution": 0.1})
    assert lc.registry.get(entity).state == M.INTEGRATED


# -- hysteresis ------------------------------------------------------------------------------------

TOGGLE = Spec(
    name="toggle",
    states=(
        StateDef(name="A", code=0, category=StateCategory.INITIAL),
        StateDef(name="B", code=1, category=StateCategory.ACTIVE),
    ),
    transitions=(
        TransitionDef(source="A", target="B", trigger="flip", gates=("hysteresis",)),
        TransitionDef(source="B", target="A", trigger="flop", gates=("hysteresis",)),
    ),
    initial=("A",),
)
"""A two-state spec whose both edges are debounced by the hysteresis gate."""
DEBOUNCE = {"hysteresis": {"min_time_in_state": 10, "max_transitions_per_window": 3, "window_size": 100}}


def toggler() -> Lifecycle:
    lc = Lifecycle(specs=[TOGGLE], config=LifecycleConfig(gate_params=DEBOUNCE))
    lc.register("t", "toggle")
    return lc


def flip(lc: Lifecycle, step: int) -> str:
    target = "B" if lc.registry.get("t").state == "A" else "A"
    return lc.transition("t", to=target, step=step).state


def test_hysteresis_refuses_a_move_before_the_minimum_time_in_state() -> None:
    """Leaving a state after 5 of the required 10 steps is refused with the reason."""
    lc = toggler()
    with pytest.raises(InvalidTransitionError) as caught:
        flip(lc, 5)
    assert caught.value.reasons == ("hysteresis: Too soon since last transition: 5 < 10 steps",)
    assert flip(lc, 10) == "B"


def test_hysteresis_allows_at_most_n_transitions_per_window() -> None:
    """With 3 moves in the last 100 steps a fourth waits until the oldest leaves the window."""
    lc = toggler()
    assert [flip(lc, s) for s in (10, 20, 30)] == ["B", "A", "B"]
    for step in (40, 109):
        with pytest.raises(InvalidTransitionError) as caught:
            flip(lc, step)
        assert caught.value.reasons == ("hysteresis: Too many transitions in window: 3 >= 3",)
    check = last_check(lc, "hysteresis")
    assert check["observed"] == {"recent_transitions": 3}
    assert check["thresholds"] == {
        "min_time_in_state": 10,
        "max_transitions_per_window": 3,
        "window_size": 100,
    }
    assert flip(lc, 110) == "A"
    assert last_check(lc, "hysteresis")["observed"] == {"recent_transitions": 2}


def test_hysteresis_defaults_are_those_of_seeds_000() -> None:
    """Without parameters the gate debounces with 50 steps in state, 3 moves per 100 steps."""
    lc = Lifecycle(specs=[TOGGLE])
    lc.register("t", "toggle")
    with pytest.raises(InvalidTransitionError, match="49 < 50 steps"):
        lc.transition("t", to="B", step=49)
    assert last_check(lc, "hysteresis")["thresholds"] == {
        "min_time_in_state": 50,
        "max_transitions_per_window": 3,
        "window_size": 100,
    }


def test_the_hysteresis_policy_reports_recent_transitions() -> None:
    """hysteresis() counts the entity's transitions inside the window as of a step."""
    lc = toggler()
    for s in (10, 20, 30):
        flip(lc, s)
    entity = lc.registry.get("t")
    assert hysteresis(entity, 50, min_time=10, max_transitions=5, window=100)[::2] == (True, 3)
    assert hysteresis(entity, 125, min_time=10, max_transitions=5, window=100)[::2] == (True, 1)
    assert hysteresis(entity, 35, min_time=10, max_transitions=5, window=100)[0] is False


# -- budgets and cooldowns ------------------------------------------------------------------------


def decide(lc: Lifecycle, action: Action, step: int, **fields: Any) -> None:
    lc.append([DecisionMade(run_id=lc.run_id, step=step, action=action, **fields)])


def test_population_budget_counts_entities_of_a_layer_in_the_given_states() -> None:
    """The layer's budget shrinks as experts enter active or cooling and grows as they leave."""
    lc = Lifecycle()

    def left() -> int:
        return population_budget_left(lc.registry, "expert", 0, ["active", "cooling"], cap=3)

    lc.register("x1", "expert", state="active", layer=0)
    assert left() == 2
    lc.register("x2", "expert", layer=0)  # pending_spawn does not count
    assert left() == 2
    lc.transition("x2", to="cooling")
    lc.register("x3", "expert", state="active", layer=1)  # another layer
    assert left() == 1
    lc.transition("x1", to="dormant")
    assert left() == 2


def test_population_floor_counts_how_many_a_layer_may_still_lose() -> None:
    """The floor's room is the layer's population in the given states minus the floor."""
    lc = Lifecycle()
    for n in range(3):
        lc.register(f"x{n}", "expert", state="active", layer=0)
    lc.register("y", "expert", state="active", layer=1)
    assert population_floor_left(lc.registry, "expert", 0, ["active", "dormant"], floor=2) == 1
    lc.transition("x0", to="dormant")
    lc.transition("x1", to="pending_prune")
    assert population_floor_left(lc.registry, "expert", 0, ["active", "dormant"], floor=2) == 0


def test_action_budget_counts_decisions_until_the_step_is_sealed() -> None:
    """Each DecisionMade uses one unit of its action's budget; StepSealed restores them all."""
    lc = Lifecycle()
    decide(lc, Action.SPAWN, 1, layer=0)
    decide(lc, Action.SPAWN, 1, layer=1)
    decide(lc, Action.PRUNE, 1, entity="x1")
    assert action_budget_left(lc.registry, Action.SPAWN, cap=3) == 1
    assert action_budget_left(lc.registry, Action.PRUNE, cap=3) == 2
    assert action_budget_left(lc.registry, Action.MERGE, cap=3) == 3
    lc.seal(1)
    assert action_budget_left(lc.registry, Action.SPAWN, cap=3) == 3
    assert action_budget_left(lc.registry, Action.PRUNE, cap=3) == 3


def test_cooldowns_are_kept_per_action_and_key() -> None:
    """A split of x1 at step 100 cools x1, its layer and the global key, not x2 or merges."""
    lc = Lifecycle()
    decide(lc, Action.SPLIT, 100, entity="x1", layer=0)

    def elapsed(step: int, key: str | int | None, action: Action = Action.SPLIT) -> bool:
        return cooldown_elapsed(lc.registry, action, step, 50, key=key)

    assert (elapsed(149, "x1"), elapsed(150, "x1")) == (False, True)
    assert elapsed(120, "x2") is True
    assert (elapsed(120, 0), elapsed(120, 1)) == (False, True)
    assert elapsed(120, None) is False
    assert elapsed(120, "x1", Action.MERGE) is True
    decide(lc, Action.SPLIT, 200, entity="x2", layer=1)
    assert lc.registry.last_decision_step(Action.SPLIT, "x1") == 100
    assert lc.registry.last_decision_step(Action.SPLIT) == 200
    assert (elapsed(220, "x1"), elapsed(220, None), elapsed(220, 1)) == (True, False, False)


# -- patience -------------------------------------------------------------------------------------


def test_patience_needs_the_signal_on_each_of_the_last_n_checkpoints() -> None:
    """A share of zero must persist over 3 observations; one recovery starts the count again."""
    lc = Lifecycle()
    lc.register("x", "expert", state="active")

    def dead() -> bool:
        return patience(lc.registry.metric_window("x", "share"), 3, lambda v: v < 0.01)

    held = []
    for share in (0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0):
        lc.observe({"share": share}, entity="x")
        held.append(dead())
    assert held == [False, False, True, False, False, False, True]
    assert patience(lc.registry.metric_window("x", "share"), 0, lambda v: True) is False


def test_streak_counts_the_latest_observations_in_a_row_where_the_signal_held() -> None:
    """The progress of a patience: it stops at the first older value where the signal failed."""

    def zero(v: float) -> bool:
        return v < 0.01

    assert streak((), zero) == 0
    assert streak((0.0, 0.3, 0.0, 0.0), zero) == 2
    assert streak((0.0, 0.0, 0.3), zero) == 0
    values = (0.0, 0.0, 0.0)
    assert (streak(values, zero), patience(values, 3, zero), patience(values, 4, zero)) == (3, True, False)


def test_patience_over_layer_metrics() -> None:
    """Layer-level windows feed patience the same way, separately per layer."""
    lc = Lifecycle()
    for step in range(3):
        lc.observe({"loss": 2.0}, layer=0, step=step)
        lc.observe({"loss": 0.5}, layer=1, step=step)
    high = [patience(lc.registry.metric_window(n, "loss", layer=True), 3, lambda v: v > 1.0) for n in (0, 1)]
    assert high == [True, False]


# -- replay -------------------------------------------------------------------------------------


def policy_answers(r: Registry) -> dict[str, Any]:
    """Every policy's answer over a run's facts, at a few steps."""
    m = r.get("m")
    t = r.get("t")
    return {
        "embargo": [embargo_until(r, m, base=100, exponential=e) for e in (True, False)],
        "failures": r.slot_failures(m),
        "hysteresis": [hysteresis(t, s, min_time=10, max_transitions=3, window=100) for s in (30, 105, 200)],
        "population": population_budget_left(r, "expert", 0, ["active", "cooling"], cap=4),
        "actions": [action_budget_left(r, a, cap=5) for a in Action],
        "cooldowns": [
            cooldown_elapsed(r, Action.SPLIT, s, 50, key=k)
            for s in (120, 160, 260)
            for k in ("x1", "x2", 0, None)
        ],
        "patience": patience(r.metric_window("x1", "share"), 3, lambda v: v < 0.01),
    }


def test_replaying_the_log_reproduces_every_policy_answer() -> None:
    """A Lifecycle rebuilt from the log, or a registry folded from its records, answers alike."""
    config = LifecycleConfig(gate_params=DEBOUNCE)
    specs = [TOGGLE, *Lifecycle().registry.specs.values()]
    lc = Lifecycle(specs=specs, config=config)
    lc.register("m", "module", slot=0)
    lc.register("t", "toggle")
    lc.register("x1", "expert", state="active", layer=0)
    lc.register("x2", "expert", layer=0)
    fail_module(lc, "m", 0)
    lc.transition("m", to=M.DORMANT, step=100)
    fail_module(lc, "m", 150)
    for step in (160, 170, 180):
        lc.transition("t", to="B" if lc.registry.get("t").state == "A" else "A", step=step)
    lc.transition("x2", to="cooling")
    decide(lc, Action.SPLIT, 200, entity="x1", layer=0)
    lc.seal(200)
    decide(lc, Action.PRUNE, 210, entity="x2", layer=0)
    for share in (0.0, 0.0, 0.0):
        lc.observe({"share": share}, entity="x1", step=210)
    live = policy_answers(lc.registry)

    reopened = Lifecycle(lc.log, specs=specs, config=config)
    folded = Registry(reopened.registry.specs, window=lc.registry.window)
    for record in lc.log.read():
        fold_record(folded, record)
    assert policy_answers(reopened.registry) == live
    assert policy_answers(folded) == live
    assert reopened.registry == lc.registry
    assert live["failures"] == (2, 150)
    assert live["patience"] is True

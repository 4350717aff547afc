"""Need spawns must pay off: a need that capacity does not reduce is hard data, not short capacity."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from lifecycle_es import Action, DecisionMade, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id
from lifecycle_es.errors import ConfigError
from lifecycle_es.events import EventBase
from replay.whatif import what_if
from tests.domain._coordinator_run import EVERY, CoordinatorRun, decisions, gate_checks

RUN, N, W = "payoff", 3, 4
GAP = "gap"
CONFIG = ExpertCoordinatorConfig.seeds_002(
    spawn_patience=N,
    cooling_period=1,
    spawn_cooldown_steps=0,
    basin_window_size=30,
    prune_init_grace=0,
    max_prunes_per_cycle=0,
    starvation_need_metric=GAP,
    starvation_need_threshold=0.5,
    need_payoff_fraction=0.2,
    need_payoff_window=W,
    need_floor_margin=0.5,
    need_floor_failures=1,
)
"""Starved while the gap is at least 0.5; a need spawn pays off when the gap falls by a fifth
within 4 checkpoints (judged on the last 3), else its level is a floor to beat by half of it."""
FIRST = expert_id(0, 4)
"""The first expert spawned into the layer of 4."""


def _drive(
    gaps: Sequence[float | None], config: ExpertCoordinatorConfig = CONFIG
) -> tuple[CoordinatorRun, list[list[EventBase]]]:
    """Run a checkpoint per gap (None: no need metric); return the run and each checkpoint's events."""
    run = CoordinatorRun(config, run_id=RUN)
    return run, [run.checkpoint(user=None if g is None else {GAP: g}) for g in gaps]


def _spawns(events: list[list[EventBase]]) -> list[DecisionMade]:
    return [d for each in events for d in decisions(each, Action.SPAWN)]


def _payoff_gates(events: list[EventBase]) -> list[tuple[bool, dict[str, float]]]:
    return [(o.passed, o.observed) for _, o in gate_checks(events, "spawn.need_payoff")]


def test_a_high_need_that_a_spawn_does_not_reduce_stops_further_spawns() -> None:
    """Hard data: the gap stays 2.0 after a need spawn, so its level is a floor and no spawn follows."""
    _, events = _drive([2.0] * 15)
    assert [d.step for d in _spawns(events)] == [N * EVERY]
    passed, observed = _payoff_gates(events[-1])[0]
    assert not passed and observed == {"need_level": 2.0, "need_floor": 2.0, "need_failures": 1}


def test_a_floor_waits_for_need_floor_failures_spawns_in_a_row() -> None:
    """With need_floor_failures 2, a failed spawn is tried again; the second failure's level is the floor."""
    _, events = _drive([2.0] * (N + 3 * W), dataclasses.replace(CONFIG, need_floor_failures=2))
    spawns = _spawns(events)
    assert [d.step for d in spawns] == [N * EVERY, (N + W) * EVERY]
    assert [d.metrics_at_decision["need_failures"] for d in spawns] == [0, 1]
    passed, observed = _payoff_gates(events[-1])[0]
    assert not passed and observed["need_floor"] == 2.0 and observed["need_failures"] == 2


def test_no_need_spawn_is_made_while_the_last_one_is_being_judged() -> None:
    """Within need_payoff_window checkpoints of a need spawn the gate holds the next back, saying how long."""
    _, events = _drive([2.0] * (N + 2))
    passed, observed = _payoff_gates(events[-1])[0]
    assert not passed and observed["checkpoints_to_verdict"] == W - 2


def test_a_need_that_falls_after_a_spawn_is_short_capacity_and_spawns_again() -> None:
    """Short capacity: the gap falls by over the fraction after a spawn, so another follows its verdict."""
    _, events = _drive([2.0] * N + [1.0] * (W + 3))
    assert [d.step for d in _spawns(events)] == [N * EVERY, (N + W) * EVERY]
    assert "need_floor" not in _spawns(events)[1].metrics_at_decision


def test_a_need_above_the_floor_by_the_margin_spawns_with_the_floor_as_evidence() -> None:
    """A gap above 1.5 times a failed spawn's level spawns again; decision and child record the floor."""
    run, events = _drive([2.0] * (N + W) + [3.2] * N)
    second = _spawns(events)[1]
    assert second.step == (2 * N + W) * EVERY
    metrics = second.metrics_at_decision
    assert (metrics["need_level"], metrics["need_floor"], metrics["need_floor_from"]) == (3.2, 2.0, FIRST)
    assert dict(run.lc.registry.get(second.children[0]).attrs) == {
        "need_level": 3.2,
        "need_failures": 1,
        "need_floor": 2.0,
        "need_floor_from": FIRST,
    }


def test_a_floor_is_carried_by_later_spawns_after_its_verdict_leaves_the_window() -> None:
    """A floor outlives its spawn's window, carried by the spawns that beat it: later ones need 1.5x it."""
    config = dataclasses.replace(CONFIG, basin_window_size=12)
    gaps = [2.0] * (N + W) + [3.2] * (N + W) + [2.9] * 20
    _, events = _drive(gaps, config)
    assert (
        len(_spawns(events)) == 2
    )  # the second failed too; once its verdict leaves the window, the floor it carried still holds
    _, events = _drive([2.0] * (N + W) + [3.2] * N + [1.0] * W + [3.1] * N, config)
    third = _spawns(events)[2]  # the second paid off, so the first one's floor, carried, is the bar
    assert third.metrics_at_decision["need_floor"] == 2.0


def test_without_the_need_metric_the_layer_spawns_as_before() -> None:
    """A loop that passes no losses gets no payoff gate or floor: the spread test spawns every checkpoint."""
    _, events = _drive([None] * (N + 2))
    assert [d.step for d in _spawns(events)] == [N * EVERY, (N + 1) * EVERY, (N + 2) * EVERY]
    assert all(not _payoff_gates(each) for each in events)


def test_seeds_002_settings_make_no_payoff_test() -> None:
    """seeds_002() turns the payoff test off: a constant high gap spawns at every checkpoint past patience."""
    config = dataclasses.replace(CONFIG, need_payoff_fraction=None)
    assert ExpertCoordinatorConfig.seeds_002().need_payoff_fraction is None
    _, events = _drive([2.0] * (N + 2), config)
    assert len(_spawns(events)) == 3


def test_replay_and_what_if_decide_the_payoff_as_the_live_run() -> None:
    """A registry folded from the log equals the live one; a what-if with no change repeats every decision."""
    run, _ = _drive([2.0] * (N + W) + [3.2] * N + [1.0] * W + [3.1] * N)
    rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
    assert rebuilt.registry == run.lc.registry
    assert what_if(run.lc.log, {"need_floor_margin": 0.5}).same
    assert not what_if(run.lc.log, {"need_payoff_fraction": None}).same


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"need_payoff_fraction": 1.0}, "need_payoff_fraction must lie in"),
        ({"need_floor_margin": -0.1}, "need_floor_margin must lie in"),
        ({"need_payoff_window": 31}, "need_payoff_window 31 exceeds basin_window_size 30"),
        ({"need_payoff_window": 0}, "need_payoff_window must be an int >= 1"),
        ({"need_floor_failures": 0}, "need_floor_failures must be an int >= 1"),
    ],
)
def test_bad_payoff_settings_are_refused_in_one_sentence(change: dict[str, object], message: str) -> None:
    """Each payoff setting out of range raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(CONFIG, **change)  # type: ignore[arg-type]


def test_the_payoff_window_may_exceed_the_basin_window_where_no_need_spawn_is_judged() -> None:
    """With the payoff test or spawns off, a need_payoff_window past basin_window_size is accepted."""
    for change in ({"need_payoff_fraction": None}, {"max_spawns_per_cycle": 0}):
        config = dataclasses.replace(CONFIG, need_payoff_window=31, **change)
        assert config.need_payoff_window == 31

"""A layer spawns nothing for `spawn_return_grace` checkpoints after a departed token type comes back.

Scripted shares and basins go through a real `Lifecycle` on a `MemoryLog`, checkpoint by
checkpoint (tests/domain/_coordinator_run.py): nothing here depends on floats a machine computes.
"""

from __future__ import annotations

import dataclasses

import pytest

from lifecycle_es import Action, ConfigError, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id
from lifecycle_es.controllers._basin_park import returned_types
from tests.domain._coordinator_run import CoordinatorRun, decisions, gate_checks

CONFIG = ExpertCoordinatorConfig(
    basin_window_size=20,
    park_patience=2,
    prune_init_grace=0,
    spawn_return_grace=3,
    max_spawns_per_cycle=1,
    spawn_patience=1,
    spawn_cooldown_steps=0,
    starvation_need_metric="gap",
    starvation_breadth_threshold=None,
    need_payoff_window=5,
    max_splits_per_cycle=0,
    max_merges_per_cycle=0,
)
"""Spawns for a user need of 1.0 at once, a grace of 3 checkpoints, no split or merge in the way."""
E0, E1, E2, E3 = (expert_id(0, i) for i in range(4))
NEED = {"gap": 1.0}
ALL = {E0: 0, E1: 1, E2: 2, E3: 3}
GONE = {E0: None, E1: 1, E2: 2, E3: 3}
"""Type 0 has left: E0, whose type it was, idles (and is kept: its inputs departed)."""


def _departed_run(config: ExpertCoordinatorConfig, name: str) -> CoordinatorRun:
    run = CoordinatorRun(config, run_id=name, slots=5, initial=4)
    for types in [ALL] * 2 + [GONE] * 3:
        assert not decisions(run.typed_checkpoint(types), Action.SPAWN)
    return run


def test_no_spawn_while_a_departed_type_comes_back() -> None:
    """Type 0 back with the need high: held for 3 checkpoints with the reason, then a spawn."""
    run = _departed_run(CONFIG, "grace")
    for since in range(1, CONFIG.spawn_return_grace + 1):
        events = run.typed_checkpoint(ALL, user=NEED)
        assert not decisions(events, Action.SPAWN)
        [(_, held)] = gate_checks(events, "spawn.return_grace")
        assert not held.passed
        assert held.reason.startswith(f"types [0] back for {since} checkpoint")
    events = run.typed_checkpoint(ALL, user=NEED)
    assert len(decisions(events, Action.SPAWN)) == 1 and not gate_checks(events, "spawn.return_grace")


def test_a_type_arriving_for_the_first_time_does_not_hold_a_spawn() -> None:
    """Type 3 new to the layer (never present before) is no return: the need spawns at once."""
    run = CoordinatorRun(CONFIG, run_id="grace-new", slots=5, initial=4)
    for _ in range(3):
        run.typed_checkpoint({E0: 0, E1: 1, E2: 2, E3: 2})
    events = run.typed_checkpoint(ALL, user=NEED)
    assert len(decisions(events, Action.SPAWN)) == 1 and not gate_checks(events, "spawn.return_grace")


def test_without_a_grace_the_spawn_is_made_at_once() -> None:
    """`spawn_return_grace=0` (seeds/002) spawns at the first checkpoint of the return."""
    run = _departed_run(dataclasses.replace(CONFIG, spawn_return_grace=0), "grace-off")
    events = run.typed_checkpoint(ALL, user=NEED)
    assert len(decisions(events, Action.SPAWN)) == 1 and not gate_checks(events, "spawn.return_grace")


def test_replaying_a_held_spawn_rebuilds_the_live_registry() -> None:
    """A registry folded from the log of held spawns and the spawn after equals the live one."""
    run = _departed_run(CONFIG, "grace-replay")
    for _ in range(CONFIG.spawn_return_grace + 1):
        run.typed_checkpoint(ALL, user=NEED)
    rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
    assert rebuilt.registry == run.lc.registry


@pytest.mark.parametrize(
    ("series", "found"),
    [
        ([{0: 0.5}, {0: 0.0}, {0: 0.0}, {0: 0.5}], {0: 1}),  # gone 2, back for 1 checkpoint
        ([{0: 0.5}, {0: 0.0}, {0: 0.5}, {0: 0.5}], {}),  # gone 1 < park_patience: never departed
        ([{0: 0.0}, {0: 0.0}, {0: 0.5}, {0: 0.5}], {}),  # never present before: arrived, not back
        ([{0: 0.5}, {0: 0.0}, {0: 0.0}, {0: 0.0}], {}),  # still gone
        ([{0: 0.5}, {0: 0.0}, {0: 0.0}, {0: 0.5}, {0: 0.5}, {0: 0.5}, {0: 0.5}], {}),  # back for 4 > 3
        ([{0: 0.5, 1: 0.5}, {1: 1.0}, {1: 1.0}, {0: 0.2, 1: 0.8}, {0: 0.2, 1: 0.8}], {0: 2}),
    ],
)
def test_returned_types_reads_the_layers_type_shares(
    series: list[dict[int, float]], found: dict[int, int]
) -> None:
    """A type is back when present now after `park_patience` absent checkpoints that followed presence."""
    assert returned_types(series, CONFIG, CONFIG.spawn_return_grace) == found


def test_a_negative_grace_is_refused() -> None:
    """`spawn_return_grace=-1` raises a one-sentence ConfigError naming the setting."""
    with pytest.raises(ConfigError, match="spawn_return_grace"):
        ExpertCoordinatorConfig(spawn_return_grace=-1)

"""A layer spawns nothing for `spawn_return_grace` checkpoints after a departed token type comes back.

Scripted shares and basins go through a real `Lifecycle` on a `MemoryLog`, checkpoint by
checkpoint (tests/domain/_coordinator_run.py): nothing here depends on floats a machine computes.
"""

from __future__ import annotations

import dataclasses

import pytest

from lifecycle_es import CODEC, Action, ConfigError, DecisionMade, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id
from lifecycle_es.controllers._basin_park import returned_types
from lifecycle_es.events import EventBase, GatesChecked, gate_results
from tests.domain._coordinator_run import CoordinatorRun

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


def _observe(
    run: CoordinatorRun, types: dict[str, int | None], user: dict[str, float] | None = None
) -> list[EventBase]:
    """One checkpoint: each expert answers its one type, or nothing (None), at even shares."""
    busy = [e for e, k in types.items() if k is not None]
    shares = {e: (1 / len(busy) if k is not None else 0.0) for e, k in types.items()}
    extra = {e: {f"token_type.{j}": float(j == k) for j in range(4)} for e, k in types.items()}
    return run.checkpoint(shares, extra=extra, user=user)


ALL = {E0: 0, E1: 1, E2: 2, E3: 3}
GONE = {E0: None, E1: 1, E2: 2, E3: 3}
"""Type 0 has left: E0, whose type it was, idles (and is kept: its inputs departed)."""


def _spawns(events: list[EventBase]) -> list[DecisionMade]:
    return [e for e in events if isinstance(e, DecisionMade) and e.action == Action.SPAWN]


def _held(events: list[EventBase]) -> list[tuple[bool, str]]:
    return [
        (g.passed, g.reason)
        for e in events
        if isinstance(e, GatesChecked)
        for g in gate_results(CODEC.to_record(e))
        if g.gate == "spawn.return_grace"
    ]


def _departed_run(config: ExpertCoordinatorConfig, name: str) -> CoordinatorRun:
    run = CoordinatorRun(config, run_id=name, slots=5, initial=4)
    for types in [ALL] * 2 + [GONE] * 3:
        assert not _spawns(_observe(run, types))
    return run


def test_no_spawn_while_a_departed_type_comes_back() -> None:
    """Type 0 back with the need high: held for 3 checkpoints with the reason, then a spawn."""
    run = _departed_run(CONFIG, "grace")
    for since in range(1, CONFIG.spawn_return_grace + 1):
        events = _observe(run, ALL, NEED)
        assert not _spawns(events)
        [(passed, reason)] = _held(events)
        assert not passed
        assert reason.startswith(f"types [0] back for {since} checkpoint")
    events = _observe(run, ALL, NEED)
    assert len(_spawns(events)) == 1 and not _held(events)


def test_a_type_arriving_for_the_first_time_does_not_hold_a_spawn() -> None:
    """Type 3 new to the layer (never present before) is no return: the need spawns at once."""
    run = CoordinatorRun(CONFIG, run_id="grace-new", slots=5, initial=4)
    for _ in range(3):
        _observe(run, {E0: 0, E1: 1, E2: 2, E3: 2})
    events = _observe(run, ALL, NEED)
    assert len(_spawns(events)) == 1 and not _held(events)


def test_without_a_grace_the_spawn_is_made_at_once() -> None:
    """`spawn_return_grace=0` (seeds/002) spawns at the first checkpoint of the return."""
    run = _departed_run(dataclasses.replace(CONFIG, spawn_return_grace=0), "grace-off")
    events = _observe(run, ALL, NEED)
    assert len(_spawns(events)) == 1 and not _held(events)


def test_replaying_a_held_spawn_rebuilds_the_live_registry() -> None:
    """A registry folded from the log of held spawns and the spawn after equals the live one."""
    run = _departed_run(CONFIG, "grace-replay")
    for _ in range(CONFIG.spawn_return_grace + 1):
        _observe(run, ALL, NEED)
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

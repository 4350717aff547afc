"""Basin-driven parking: an expert whose token types left is parked, and revived when they return.

Scripted shares and basins go through a real `Lifecycle` on a `MemoryLog`, checkpoint by
checkpoint (tests/domain/_coordinator_run.py): nothing here depends on floats a machine computes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from lifecycle_es import Action, ConfigError, DecisionMade, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id
from lifecycle_es.events import EventBase
from tests.domain._coordinator_run import CoordinatorRun, decisions, gate_checks

CONFIG = ExpertCoordinatorConfig(
    park_basin_gone_share=0.5,
    basin_window_size=10,
    park_patience=2,
    revive_patience=2,
    prune_init_grace=0,
    max_spawns_per_cycle=0,
    max_splits_per_cycle=0,
    max_merges_per_cycle=0,
)
"""The defaults with basin parking on, short windows and no spawn, split or merge in the way."""
E0, E1, E2, E3 = (expert_id(0, i) for i in range(4))
Basins = Mapping[str, tuple[float, ...]]
PRESENT: Basins = {E0: (0.8, 0.2, 0.0), E1: (0.0, 1.0, 0.0), E2: (0.0, 0.0, 1.0), E3: (0.0, 0.5, 0.5)}
"""Types 0-2 all present: type 0 is 0.2 of the layer's tokens, most of it routed to E0."""
GONE: Basins = {E0: (0.0, 1.0, 0.0), E1: (0.0, 1.0, 0.0), E2: (0.0, 0.0, 1.0), E3: (0.0, 0.5, 0.5)}
"""Type 0 left; a balancing loss keeps E0 busy on type 1 at the same share."""
RETURNED: Basins = {E1: (0.5, 0.5, 0.0), E2: (0.0, 0.0, 1.0), E3: (0.0, 0.5, 0.5)}
"""Type 0 back (a sixth of the tokens), while E0 is parked."""


def _observe(run: CoordinatorRun, basins: Basins) -> list[EventBase]:
    """One checkpoint with even shares over the routing experts and these basins."""
    extra = {e: {f"token_type.{k}": p for k, p in enumerate(types)} for e, types in basins.items()}
    return run.checkpoint(extra=extra)


def _parked_run() -> tuple[CoordinatorRun, DecisionMade]:
    """Two checkpoints with type 0 present, then type 0 gone until E0 is parked."""
    run = CoordinatorRun(CONFIG, run_id="basin-park", slots=4, initial=4)
    for _ in range(2):
        assert not decisions(_observe(run, PRESENT))
    decided: list[DecisionMade] = []
    for _ in range(CONFIG.park_patience):
        decided += decisions(_observe(run, GONE))
    assert len(decided) == 1
    return run, decided[0]


def test_an_expert_whose_token_types_left_is_parked_with_its_evidence() -> None:
    """Type 0 gone for `park_patience` checkpoints parks E0, whose basin it mostly was, with the evidence."""
    run, park = _parked_run()
    assert (park.action, park.entity, park.reason) == (Action.PRUNE, E0, "basin_gone")
    assert park.metrics_at_decision == {
        "departed_types": [0],
        "type_shares": [0.0],
        "basin_before": {"token_type.0": 0.8, "token_type.1": 0.2, "token_type.2": 0.0},
        "gone_fraction": 0.8,
        "checkpoints_gone": 2,
        "share": 0.25,
        "live_experts": 4,
    }
    assert run.lc.registry.get(E0).state == "pending_prune"
    _observe(run, {e: b for e, b in GONE.items() if e != E0})
    assert run.lc.registry.get(E0).state == "archived"


def test_no_expert_is_parked_while_its_types_are_still_in_the_input() -> None:
    """A type down to 2.5% of the tokens has not left: nothing is parked, no park gate is recorded."""
    run = CoordinatorRun(CONFIG, run_id="basin-stay", slots=4, initial=4)
    events: list[EventBase] = []
    for basins in [PRESENT] * 2 + [{**GONE, E0: (0.1, 0.9, 0.0)}] * 6:
        events += _observe(run, basins)
    assert not decisions(events)
    gates = [g.gate for _, g in gate_checks(events)]
    assert not [g for g in gates if g.startswith("park.")]
    assert run.lc.registry.get(E0).state == "active"


def test_a_basin_gone_expert_is_revived_into_its_slot_when_its_types_return() -> None:
    """Type 0 back at a sixth of the tokens for `revive_patience` checkpoints revives E0 in slot 0."""
    run, _ = _parked_run()
    _observe(run, {e: b for e, b in GONE.items() if e != E0})
    revived: list[DecisionMade] = []
    for _ in range(CONFIG.revive_patience):
        assert not revived
        revived += decisions(_observe(run, RETURNED))
    assert [(d.action, d.entity, d.reason) for d in revived] == [(Action.REVIVE, E0, "basin_returned")]
    metrics: dict[str, Any] = dict(revived[0].metrics_at_decision)
    assert metrics.pop("type_share") == pytest.approx(1 / 6)
    assert metrics == {"departed_types": [0], "checkpoints_returned": 2, "slot": 0}
    e0 = run.lc.registry.get(E0)
    assert (e0.state, e0.slot) == ("active", 0)


def test_replaying_a_park_and_its_revival_rebuilds_the_live_registry() -> None:
    """A registry folded from the log of a basin-gone park and its revival equals the live one."""
    run, _ = _parked_run()
    _observe(run, {e: b for e, b in GONE.items() if e != E0})
    for _ in range(CONFIG.revive_patience):
        _observe(run, RETURNED)
    assert run.lc.registry.get(E0).state == "active"
    rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
    assert rebuilt.registry == run.lc.registry


def test_a_spawn_leaves_a_parked_experts_slot_free_while_another_is() -> None:
    """With slot 0 parked and slot 4 free, a spawn takes slot 4, so E0 can come back to slot 0."""
    config = dataclasses.replace(
        CONFIG,
        max_spawns_per_cycle=1,
        spawn_patience=1,
        spawn_cooldown_steps=0,
        starvation_need_metric="gap",
        starvation_breadth_threshold=None,
        need_payoff_window=5,  # need spawns are judged within the short window
    )
    run = CoordinatorRun(config, run_id="basin-slot", slots=5, initial=4)
    for basins in [PRESENT] * 2 + [GONE] * 2:
        _observe(run, basins)
    assert run.lc.registry.get(E0).state == "pending_prune"
    extra = {e: {f"token_type.{k}": p for k, p in enumerate(b)} for e, b in GONE.items() if e != E0}
    spawned = decisions(run.checkpoint(extra=extra, user={"gap": 1.0}))
    assert [(d.action, d.metrics_at_decision["slot"]) for d in spawned] == [(Action.SPAWN, 4)]


def test_an_expert_is_parked_for_its_own_types_and_revived_only_by_them() -> None:
    """Types 0 and 1 leave: E0 is parked for [0] and E1 for [1]; type 1 back revives E1 alone."""
    own = {e: tuple(float(k == i) for k in range(4)) for i, e in enumerate((E0, E1, E2, E3))}
    busy = {E0: (0.0, 0.0, 1.0, 0.0), E1: (0.0, 0.0, 0.0, 1.0), E2: own[E2], E3: own[E3]}
    run = CoordinatorRun(CONFIG, run_id="basin-own", slots=4, initial=4)
    decided: list[DecisionMade] = []
    for basins in [own] * 2 + [busy] * (CONFIG.park_patience + 1):
        decided += decisions(_observe(run, basins))
    parks = {d.entity: d.metrics_at_decision["departed_types"] for d in decided}
    assert parks == {E0: [0], E1: [1]}
    back = {E2: (0.0, 0.5, 0.5, 0.0), E3: (0.0, 0.0, 0.0, 1.0)}
    revived: list[DecisionMade] = []
    for _ in range(CONFIG.revive_patience + 3):
        revived += decisions(_observe(run, back if not revived else {**back, E1: own[E1]}))
    assert [(d.action, d.entity) for d in revived] == [(Action.REVIVE, E1)]
    assert run.lc.registry.get(E0).state == "archived"


@pytest.mark.parametrize(
    "bad",
    [
        {"park_basin_gone_share": 0.0},
        {"park_basin_gone_share": 1.5},
        {"park_type_share_epsilon": 1.0},
        {"park_patience": 0},
        {"park_patience": 60},
        {"revive_type_share_threshold": 0.0},
    ],
)
def test_bad_park_settings_are_refused_at_construction(bad: dict[str, Any]) -> None:
    """Each out-of-range park setting raises a one-sentence ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=next(iter(bad))):
        ExpertCoordinatorConfig(**bad)

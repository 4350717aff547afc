"""A dormant expert whose token types left is kept in routing, not pruned, within a budget.

Scripted shares and basins go through a real `Lifecycle` on a `MemoryLog`, checkpoint by
checkpoint (tests/domain/_coordinator_run.py): nothing here depends on floats a machine computes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lifecycle_es import Action, ConfigError, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id
from lifecycle_es.events import EventBase
from tests.domain._coordinator_run import CoordinatorRun, decisions, gate_checks

CONFIG = ExpertCoordinatorConfig(
    basin_window_size=10,
    park_patience=2,
    prune_patience=2,
    prune_init_grace=0,
    max_spawns_per_cycle=0,
    max_splits_per_cycle=0,
    max_merges_per_cycle=0,
)
"""The defaults (keeping on, parking off) with short windows and no spawn, split or merge."""
E0, E1, E2, E3 = (expert_id(0, i) for i in range(4))
OWN = {E0: 0, E1: 1, E2: 2, E3: 3}
"""Each expert's basin is its own token type: E0 answers type 0, E1 type 1, and so on."""


def _observe(run: CoordinatorRun, idle: tuple[str, ...] = ()) -> list[EventBase]:
    """One checkpoint: the `idle` experts get no tokens (their types are gone), the others even shares."""
    routing = [e.entity for e in run.lc.registry.live() if e.state in ("cooling", "active", "dormant")]
    return run.typed_checkpoint({e: None if e in idle else OWN[e] for e in routing})


def _run(config: ExpertCoordinatorConfig, name: str) -> CoordinatorRun:
    run = CoordinatorRun(config, run_id=name, slots=4, initial=4)
    for _ in range(2):
        assert not decisions(_observe(run))
    return run


def test_a_dormant_expert_whose_types_left_is_kept_with_the_reason() -> None:
    """E0's one type gone: it goes dormant and stays, each prune refused by `prune.inputs_departed`."""
    run = _run(CONFIG, "keep")
    events: list[EventBase] = []
    for _ in range(3 * CONFIG.prune_patience):
        events += _observe(run, idle=(E0,))
    assert not decisions(events)
    assert run.lc.registry.get(E0).state == "dormant"
    kept = gate_checks(events, "prune.inputs_departed")
    assert kept and all(entity == E0 and not g.passed for entity, g in kept)
    assert kept[-1][1].reason.startswith("types [0] left 6 checkpoints ago with 1 of its basin")


def test_a_kept_expert_takes_its_types_back_when_they_return() -> None:
    """Once type 0 is back E0 receives tokens again and is active, as it was before they left."""
    run = _run(CONFIG, "keep-return")
    for _ in range(2 * CONFIG.prune_patience):
        _observe(run, idle=(E0,))
    assert run.lc.registry.get(E0).state == "dormant"
    assert not decisions(_observe(run))
    assert run.lc.registry.get(E0).state == "active"


def test_beyond_the_budget_the_oldest_kept_expert_is_pruned_as_dead() -> None:
    """Budget 1: E0 went dormant first and E1 after it, so E0 is pruned and E1 kept."""
    run = _run(dataclasses.replace(CONFIG, keep_departed_budget=1), "keep-budget")
    events = _observe(run, idle=(E0,))
    for _ in range(2 * CONFIG.prune_patience):
        events += _observe(run, idle=(E0, E1))
    assert [(d.action, d.entity, d.reason) for d in decisions(events)] == [
        (Action.PRUNE, E0, "confirmed_dead")
    ]
    assert {e for e, g in gate_checks(events, "prune.inputs_departed") if g.passed} == {E0}
    assert {e for e, g in gate_checks(events, "prune.inputs_departed") if not g.passed} == {E0, E1}
    assert run.lc.registry.get(E1).state == "dormant"


def test_seeds_002_settings_prune_it_as_dead() -> None:
    """With `keep_departed_share=None` the same idle expert is pruned once its patience holds."""
    run = _run(dataclasses.replace(CONFIG, keep_departed_share=None), "keep-off")
    events: list[EventBase] = []
    for _ in range(2 * CONFIG.prune_patience):
        events += _observe(run, idle=(E0,))
    assert [(d.action, d.entity) for d in decisions(events)] == [(Action.PRUNE, E0)]
    assert not gate_checks(events, "prune.inputs_departed")


def test_an_expert_idle_while_its_types_are_still_in_the_input_is_pruned() -> None:
    """E0 idle while type 0 goes to E1 instead: nothing left the input, so it is dead and pruned."""
    run = _run(CONFIG, "keep-dead")
    events: list[EventBase] = []
    for _ in range(2 * CONFIG.prune_patience):
        extra = {E1: {"token_type.0": 0.5, "token_type.1": 0.5}, E0: {"token_type.0": 0.0}}
        events += run.checkpoint({E0: 0.0, E1: 1 / 3, E2: 1 / 3, E3: 1 / 3}, extra=extra)
    assert [(d.action, d.entity) for d in decisions(events)] == [(Action.PRUNE, E0)]
    assert not gate_checks(events, "prune.inputs_departed")


def test_an_expert_idle_before_its_types_left_is_dead_whatever_leaves_later() -> None:
    """E0 idle for 3 checkpoints while E1 serves type 0, then type 0 leaves: E0 is dead, not kept."""
    run = _run(dataclasses.replace(CONFIG, prune_patience=6), "keep-dead-first")
    served = {E0: {"token_type.0": 0.0}, E1: {"token_type.0": 0.5, "token_type.1": 0.5}}
    events: list[EventBase] = []
    for _ in range(3):
        events += run.checkpoint({E0: 0.0, E1: 1 / 3, E2: 1 / 3, E3: 1 / 3}, extra=served)
    for _ in range(4):  # dormant from the first of the 3 above: patience 6 holds at the 7th
        events += _observe(run, idle=(E0,))
    assert [(d.action, d.entity, d.reason) for d in decisions(events)] == [
        (Action.PRUNE, E0, "confirmed_dead")
    ]
    assert not gate_checks(events, "prune.inputs_departed")


def test_replaying_a_kept_expert_rebuilds_the_live_registry() -> None:
    """A registry folded from the log of a kept expert, pruned beyond the budget, equals the live one."""
    run = _run(dataclasses.replace(CONFIG, keep_departed_budget=1), "keep-replay")
    _observe(run, idle=(E0,))
    for _ in range(2 * CONFIG.prune_patience):
        _observe(run, idle=(E0, E1))
    rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
    assert rebuilt.registry == run.lc.registry


@pytest.mark.parametrize(
    "bad", [{"keep_departed_share": 0.0}, {"keep_departed_share": 1.5}, {"keep_departed_budget": -1}]
)
def test_bad_keep_settings_are_refused_at_construction(bad: dict[str, Any]) -> None:
    """Each out-of-range keep setting raises a one-sentence ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=next(iter(bad))):
        ExpertCoordinatorConfig(**bad)


def test_help_describes_the_keep_and_return_settings() -> None:
    """The three settings are documented where help() shows them."""
    doc = ExpertCoordinatorConfig.__doc__ or ""
    assert all(name in doc for name in ("keep_departed_share", "keep_departed_budget", "spawn_return_grace"))

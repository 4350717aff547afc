"""Failed splits judged by what the split was for: load on one token type, or breadth over several.

Scripted metrics go through a real `Lifecycle` on a `MemoryLog`, checkpoint by checkpoint, as
tests/domain/test_expert_coordinator.py drives the coordinator: nothing here depends on floats
a machine computes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from lifecycle_es import Action, ConfigError, DecisionMade, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import ExpertCoordinator, expert_id
from lifecycle_es.controllers._basin_math import effective_types, load_balance
from lifecycle_es.events import gate_results
from tests.domain._coordinator_run import SPLIT_CONFIG

RUN, EVERY = "failed-split", 10
CONFIG = SPLIT_CONFIG
AFTER_SPLIT = CONFIG.cooling_period + CONFIG.split_divergence_window + 1
"""Checkpoints after the split by which a pair that never divided is undone."""
E0, E1, E2 = (expert_id(0, i) for i in range(3))
ONE_TYPE, TWO_TYPES, OTHER_TYPE = (1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.0, 0.0, 1.0)
"""Token-type distributions: E0's basin for a load split, for a breadth split, and E1's."""

Types = tuple[float, ...]


class _Run:
    """A lifecycle with its coordinator over a four-slot layer of two initial experts."""

    def __init__(self) -> None:
        self.lc = Lifecycle(run_id=RUN, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
        self.lc.start()
        self.coordinator = ExpertCoordinator(CONFIG, {0: 4})
        self.coordinator.register_initial(self.lc, 0, 2)
        self.lc.seal(0)
        self.step = 0
        self.decided: list[DecisionMade] = []

    def checkpoint(self, observed: Mapping[str, tuple[float, Types]]) -> None:
        """Observe each expert's (share, token-type distribution), then decide and seal."""
        self.step += EVERY
        experts = {
            e: {"share": share, **{f"token_type.{k}": p for k, p in enumerate(types)}}
            for e, (share, types) in observed.items()
        }
        layers = {0: {"entropy": 0.5, "n_eff": 1.6, "top2_share": 1.0, "dead_count": 0.0, "n_active": 2.0}}
        self.lc.append(
            self.coordinator.observations(run_id=RUN, step=self.step, experts=experts, layers=layers)
        )
        events = self.coordinator.decide(self.lc.registry, run_id=RUN, step=self.step)
        self.lc.append(events)
        self.lc.seal(self.step)
        self.decided += [e for e in events if isinstance(e, DecisionMade)]


def _split_then(parent: Types, child: Types, child_share: float) -> _Run:
    """Overload E0 (serving `parent`) until it splits into E2, then let E2 serve `child` with
    `child_share` of E0's former 0.6 for long enough to be judged."""
    run = _Run()
    while not run.decided:
        run.checkpoint({E0: (0.6, parent), E1: (0.4, OTHER_TYPE)})
    assert [(d.action, d.children) for d in run.decided] == [(Action.SPLIT, [E2])]
    for _ in range(AFTER_SPLIT):
        run.checkpoint({E0: (0.6 - child_share, parent), E1: (0.4, OTHER_TYPE), E2: (child_share, child)})
    return run


def _undone(run: _Run) -> list[dict[str, Any]]:
    return [
        {"entity": d.entity, "parent": d.parent, **d.metrics_at_decision}
        for d in run.decided
        if d.action == Action.PRUNE and d.reason == "failed_split"
    ]


def test_a_load_split_whose_twins_share_the_load_is_kept_though_their_types_overlap() -> None:
    """A one-type expert's split stays when the twins split its tokens evenly, types identical."""
    run = _split_then(ONE_TYPE, ONE_TYPE, child_share=0.3)
    assert [d.action for d in run.decided] == [Action.SPLIT]
    assert run.lc.registry.get(E2).state == "active"


def test_a_load_split_whose_child_takes_almost_none_of_the_load_is_undone() -> None:
    """A one-type expert's split is undone when the child keeps under a fifth of the pair's tokens."""
    run = _split_then(ONE_TYPE, ONE_TYPE, child_share=0.05)
    [undo] = _undone(run)
    assert (undo["entity"], undo["parent"], undo["purpose"]) == (E2, E0, "load")
    assert undo["checkpoints_unbalanced"] == CONFIG.split_divergence_window
    assert undo["balance"] == pytest.approx(load_balance(0.55, 0.05))
    assert undo["parent_types"] == pytest.approx(1.0)
    assert run.lc.registry.get(E2).state == "archived"


def test_a_breadth_split_whose_twins_keep_the_same_types_is_undone_though_they_share_the_load() -> None:
    """A two-type expert's split is undone when both twins keep both types, however even the load."""
    run = _split_then(TWO_TYPES, TWO_TYPES, child_share=0.3)
    [undo] = _undone(run)
    assert (undo["entity"], undo["purpose"]) == (E2, "breadth")
    assert undo["checkpoints_overlapping"] == CONFIG.split_divergence_window
    assert undo["parent_types"] == pytest.approx(2.0)
    assert "balance" not in undo


def test_a_breadth_split_whose_twins_take_different_types_is_kept() -> None:
    """A split of a two-type expert stays when parent and child each take one of its types."""
    run = _split_then(TWO_TYPES, (0.0, 1.0, 0.0), child_share=0.3)
    assert [d.action for d in run.decided] == [Action.SPLIT]
    assert run.lc.registry.get(E2).state == "active"


def test_replaying_a_load_split_undo_rebuilds_the_live_registry() -> None:
    """A registry folded from the log of a load split and its undo equals the live one."""
    run = _split_then(ONE_TYPE, ONE_TYPE, child_share=0.05)
    rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
    assert rebuilt.registry == run.lc.registry


def test_the_undo_records_the_check_its_purpose_names_with_the_measure() -> None:
    """A load undo passes `split.load_sharing` with its balance, a breadth undo `split.divergence`."""
    for child_share, parent, gate, measure in (
        (0.05, ONE_TYPE, "split.load_sharing", "balance"),
        (0.3, TWO_TYPES, "split.divergence", "overlap"),
    ):
        run = _split_then(parent, parent, child_share)
        found = [
            g
            for record in run.lc.log.read()
            if record.get("entity") == E2 and record.get("to_state") == "pending_prune"
            for g in gate_results(record)
            if g.gate == gate
        ]
        assert found[-1].passed and measure in found[-1].observed, found


@pytest.mark.parametrize(
    "bad", [{"split_load_types": 0.5}, {"split_load_balance": 1.5}, {"split_load_balance": "half"}]
)
def test_bad_load_split_settings_are_refused_at_construction(bad: dict[str, Any]) -> None:
    """split_load_types below one type, or a balance outside [0, 1], is a ConfigError."""
    with pytest.raises(ConfigError):
        dataclasses.replace(CONFIG, **bad)


def test_effective_types_and_load_balance_are_exp_entropy_and_twice_the_smaller_part() -> None:
    """One type counts 1, two equal types 2; an even pair balances 1, a pair with one idle twin 0."""
    assert effective_types([3.0, 0.0]) == pytest.approx(1.0)
    assert effective_types([1.0, 1.0]) == pytest.approx(2.0)
    assert effective_types([0.0, 0.0]) == 1.0
    assert (load_balance(0.3, 0.3), load_balance(0.4, 0.0), load_balance(0.0, 0.0)) == (1.0, 0.0, 0.0)
    assert load_balance(0.1, 0.3) == pytest.approx(0.5)


def _child_takes_the_load() -> _Run:
    """Split E0, then let its child E2 take nearly all of E0's tokens (kept under the split
    threshold, so E2 is not split itself) for long enough to be judged."""
    run = _Run()
    while not run.decided:
        run.checkpoint({E0: (0.6, ONE_TYPE), E1: (0.4, OTHER_TYPE)})
    for _ in range(AFTER_SPLIT):
        run.checkpoint({E0: (0.02, ONE_TYPE), E1: (0.4, OTHER_TYPE), E2: (0.38, ONE_TYPE)})
    return run


def test_a_load_split_whose_child_took_almost_all_of_the_load_prunes_the_parent_instead() -> None:
    """When the child of a failed load split carries the load, the parent is pruned and the child stays."""
    run = _child_takes_the_load()
    [undo] = _undone(run)
    assert (undo["entity"], undo["parent"], undo["purpose"]) == (E0, E2, "load")
    assert undo["share"] == pytest.approx(0.02)
    assert run.lc.registry.get(E0).state == "archived"
    assert run.lc.registry.get(E2).state == "active"


def test_the_twin_kept_after_an_undo_waits_a_whole_split_cooldown() -> None:
    """After an undo that kept the child, the child's split is refused by split.failed_split_cooldown."""
    run = _child_takes_the_load()
    for _ in range(CONFIG.split_patience + 2):
        run.checkpoint({E1: (0.2, OTHER_TYPE), E2: (0.8, ONE_TYPE)})
    assert [d.action for d in run.decided] == [Action.SPLIT, Action.PRUNE]
    [last] = [r for r in run.lc.log.read() if r["kind"] == "GatesChecked" and r["step"] == run.step]
    gates = {gate[0]: gate[1] for gate in last["gates"]}
    assert (last["entity"], gates["split.failed_split_cooldown"], gates["split.overload_patience"]) == (
        E2,
        False,
        True,
    )


def test_a_load_split_whose_twins_diverged_by_type_is_kept_though_unbalanced() -> None:
    """A one-type expert's split stays when the twins took different types, whatever their balance."""
    run = _split_then(ONE_TYPE, (0.0, 1.0, 0.0), child_share=0.05)
    assert _undone(run) == []
    assert run.lc.registry.get(E2).state == "active"

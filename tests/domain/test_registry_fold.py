"""The registry fold: deterministic, copyable, bounded, and keeping slots as the specs say."""

from __future__ import annotations

from typing import Any

import pytest

from lifecycle_es import (
    BUILTIN_SPECS,
    CODEC,
    Action,
    DecisionMade,
    GateLibrary,
    InconsistentEventError,
    InvalidTransitionError,
    Lifecycle,
    LifecycleConfig,
    Registry,
    fold,
    fold_record,
)
from lifecycle_es.registry import HISTORY_LIMIT, fold_records


def busy_run() -> Lifecycle:
    """A run with registrations, transitions, a rejection, metrics, a decision and a seal."""
    lc = Lifecycle(run_id="fold")
    lc.start(config={"lr": 0.1})
    lc.register("m", "module", slot=0, layer=0)
    lc.register("x", "expert", state="active", layer=1, attrs={"width": 64})
    lc.transition("m", to="INSTANTIATED", metrics={"available_slots": 1}, step=5)
    lc.observe({"share": 0.2}, entity="x", step=5)
    lc.observe({"loss": 1.5}, layer=1, step=5)
    lc.observe({"tokens": 1e6}, step=6)
    with pytest.raises(InvalidTransitionError):
        lc.transition("x", to="archived", step=6)
    lc.transition("x", to="dormant", step=7)
    lc.seal(7)
    return lc


def fold_all(records: list[dict[str, Any]], *, window: int = 50) -> Registry:
    registry = Registry(BUILTIN_SPECS, window=window)
    for record in records:
        fold_record(registry, record)
    return registry


def test_the_fold_is_deterministic() -> None:
    """The same records folded twice, or as decoded events, give equal registries."""
    lc = busy_run()
    records = lc.log.read()
    first, second = fold_all(records), fold_all(records)
    decoded = Registry(BUILTIN_SPECS)
    for record in records:
        fold(decoded, CODEC.from_record(record))
    assert first == second == decoded == lc.registry
    assert first.seq == len(records)
    assert first.run_state == "running"
    assert first.get("x").state == "dormant"


def test_registries_differing_in_one_fact_are_not_equal() -> None:
    """Equality sees every folded fact: one more observation makes registries differ."""
    lc = busy_run()
    before = lc.registry.copy()
    lc.observe({"share": 0.0}, entity="x")
    assert lc.registry != before
    assert fold_all(lc.log.read()) == lc.registry


def test_a_copy_is_independent_of_its_original() -> None:
    """Folding into the original leaves a copy as it was, and folding into a copy leaves the
    original."""
    lc = busy_run()
    snapshot = lc.registry.copy()
    frozen = fold_all(lc.log.read())
    assert snapshot == frozen
    lc.observe({"share": 0.9}, entity="x", step=8)
    lc.transition("x", to="active", step=8)
    lc.register("m2", "module", slot=1, layer=0, step=8)
    lc.append([DecisionMade(run_id=lc.run_id, step=8, action=Action.SPAWN, layer=0)])
    assert snapshot == frozen
    assert snapshot.metric_window("x", "share") == (0.2,)
    assert snapshot.get("x").state == "dormant"
    assert snapshot.slot_holder("module", 0, 1) is None

    branch = lc.registry.copy()
    original = fold_all(lc.log.read())
    fold(
        branch,
        CODEC.from_record(
            {
                **CODEC.to_record(DecisionMade(run_id=lc.run_id, step=9, action=Action.PRUNE, entity="x")),
                "seq": branch.seq + 1,
            }
        ),
    )
    assert branch.decisions_this_cycle(Action.PRUNE) == 1
    assert lc.registry == original
    assert lc.registry.decisions_this_cycle(Action.PRUNE) == 0


def test_history_keeps_only_the_latest_transitions() -> None:
    """After 40 moves an entity's history holds the last HISTORY_LIMIT, oldest first."""
    lc = Lifecycle()
    lc.register("x", "expert", state="active")
    moves = 40
    for step in range(1, moves + 1):
        lc.transition("x", to="dormant" if step % 2 else "active", step=step)
    x = lc.registry.get("x")
    assert x.transitions == moves
    assert len(x.history) == HISTORY_LIMIT == 32
    assert x.history[0] == (moves - HISTORY_LIMIT + 1, "active", "dormant")
    assert x.history[-1] == (moves, "dormant", "active")
    assert fold_all(lc.log.read()) == lc.registry


def test_a_slot_is_released_when_its_module_fails_and_taken_again_when_recycled() -> None:
    """PRUNED frees the slot (another module may register there); recycling takes it back."""
    lc = Lifecycle()
    lc.register("m", "module", slot=0)
    assert lc.registry.slot_holder("module", None, 0) == "m"
    for target in ("INSTANTIATED", "TRAINING", "PRUNED"):
        lc.transition("m", to=target, metrics={"available_slots": 1})
    assert lc.registry.slot_holder("module", None, 0) is None
    lc.transition("m", to="DORMANT")
    assert lc.registry.slot_holder("module", None, 0) == "m"


def test_a_recycled_entity_cannot_take_back_a_slot_another_entity_now_holds() -> None:
    """Once a freed slot goes to a new entity, the old one's recycle is refused and recorded."""
    lc = Lifecycle()
    lc.register("m1", "module", slot=0)
    for target in ("INSTANTIATED", "TRAINING", "PRUNED"):
        lc.transition("m1", to=target, metrics={"available_slots": 1})
    lc.register("m2", "module", slot=0)
    with pytest.raises(InvalidTransitionError, match="slot 0 of layer None is now held by 'm2'"):
        lc.transition("m1", to="DORMANT")
    assert lc.log.read()[-1]["kind"] == "TransitionRejected"
    assert lc.registry.get("m1").state == "PRUNED"
    assert lc.registry.slot_holder("module", None, 0) == "m2"


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ("kasmina", ["GERMINATED", "TRAINING", "CULLED"]),
        ("kasmina", ["GERMINATED", "CANCELLED"]),
        ("module", ["INSTANTIATED", "TRAINING", "PRUNED", "EMBARGOED"]),
        ("expert", ["dormant", "pending_prune", "archived"]),
        ("agent", ["deleted"]),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v),
)
def test_a_slot_is_released_in_failure_and_terminal_states(
    spec: str, path: list[str], passing_gates: GateLibrary
) -> None:
    """Entering a failure state, or a terminal one, frees the slot for a new registration."""
    lc = Lifecycle(gates=passing_gates)
    start = "active" if spec == "expert" else None
    lc.register("a", spec, slot=4, layer=2, state=start)
    for target in path:
        lc.advance(lc.registry.step + 1_000)
        lc.transition("a", to=target)
    assert lc.registry.slot_holder(spec, 2, 4) is None
    lc.register("b", spec, slot=4, layer=2, state=start)
    assert lc.registry.slot_holder(spec, 2, 4) == "b"


def test_a_slot_is_released_on_success_and_on_rollback(passing_gates: GateLibrary) -> None:
    """FOSSILIZED (success, terminal) and ROLLED_BACK (error, terminal) free the seed's slot."""
    lc = Lifecycle(gates=passing_gates)
    walk = ["GERMINATED", "TRAINING", "GRAFTING", "STABILIZATION", "EVALUATING", "FINE_TUNING"]
    for name, last in (("s1", "FOSSILIZED"), ("s2", "ROLLED_BACK")):
        lc.register(name, "kasmina", slot=0)
        for target in [*walk, last]:
            lc.advance(lc.registry.step + 1_000)
            lc.transition(name, to=target)
        assert lc.registry.slot_holder("kasmina", None, 0) is None


def test_slots_are_separate_per_spec_and_layer() -> None:
    """Slot 0 of layer 0, of layer 1, and of another spec are three different slots."""
    lc = Lifecycle()
    lc.register("a", "module", slot=0, layer=0)
    lc.register("b", "module", slot=0, layer=1)
    lc.register("c", "kasmina", slot=0, layer=0)
    assert [lc.registry.slot_holder(s, n, 0) for s, n in (("module", 0), ("module", 1), ("kasmina", 0))] == [
        "a",
        "b",
        "c",
    ]


def test_metric_windows_keep_the_last_metric_window_values() -> None:
    """With metric_window=3, entity, layer and run windows keep their 3 latest values."""
    lc = Lifecycle(config=LifecycleConfig(metric_window=3))
    lc.register("x", "expert", state="active")
    for i in range(5):
        lc.observe({"share": float(i)}, entity="x")
        lc.observe({"loss": float(10 + i)}, layer=0)
        lc.observe({"tokens": float(100 + i)})
    assert lc.registry.metric_window("x", "share") == (2.0, 3.0, 4.0)
    assert lc.registry.metric_window(0, "loss", layer=True) == (12.0, 13.0, 14.0)
    assert lc.registry.metric_window(None, "tokens") == (102.0, 103.0, 104.0)
    assert lc.registry.latest_metrics("x") == {"share": 4.0}
    assert lc.registry.metric_window("x", "never") == ()
    assert fold_all(lc.log.read(), window=3) == lc.registry
    assert fold_all(lc.log.read(), window=4) != lc.registry


def test_counters_follow_transitions_and_rejections() -> None:
    """transitions counts applied moves, rejections refused ones, entered_step the last move."""
    lc = busy_run()
    x = lc.registry.get("x")
    assert (x.transitions, x.rejections, x.entered_step, x.born_step) == (1, 1, 7, 0)
    assert x.attrs == {"width": 64}
    assert lc.registry.population("expert", 1, "dormant") == 1
    assert lc.registry.population("expert", 1, "active") == 0


def test_refusals_folded_in_one_batch_count_as_folded_one_by_one() -> None:
    """Refusals counted within one `fold_records` call (settled when the entity next moves or
    the call ends) give the counts and histories that folding each record alone gives, also
    when a later record of the batch is refused."""
    lc = Lifecycle(run_id="refusals")
    lc.start()
    lc.register("x", "expert", state="active", layer=1)
    lc.register("y", "expert", state="active", layer=1)
    for step in range(3):
        for name in "xy":
            with pytest.raises(InvalidTransitionError):
                lc.transition(name, to="archived", step=step)
    lc.transition("x", to="dormant", step=4)
    with pytest.raises(InvalidTransitionError):
        lc.transition("x", to="archived", step=5)
    records = lc.log.read()
    batched = fold_records(Registry(BUILTIN_SPECS), records)
    assert batched == fold_all(records) == lc.registry
    assert (batched.get("x").rejections, batched.get("y").rejections) == (4, 3)
    bad = {**records[-1], "seq": len(records) + 1, "entity": "nobody"}
    refused = Registry(BUILTIN_SPECS)
    with pytest.raises(InconsistentEventError):
        fold_records(refused, [*records, bad])
    assert refused == batched


# -- bounded state: only live entities keep windows -----------------------------------------------


def _three_experts() -> Lifecycle:
    """Experts a, b, c, active in layer 0, each observed with per-peer metrics about the others."""
    lc = Lifecycle(run_id="bounded")
    for slot, name in enumerate("abc"):
        lc.register(name, "expert", state="active", layer=0, slot=slot)
    for name in "abc":
        peers = {f"{kind}.{p}": 0.5 for p in "abc" if p != name for kind in ("coact", "cosine")}
        lc.observe({"share": 0.3, "token_type.0": 1.0, **peers}, entity=name, step=1)
    lc.observe({"coact.a": 0.2, "entropy": 1.0}, layer=0, step=1)
    return lc


def _archive(lc: Lifecycle, name: str, step: int = 2) -> None:
    for target in ("dormant", "pending_prune", "archived"):
        lc.transition(name, to=target, step=step)


def test_archiving_an_expert_drops_its_windows_and_the_windows_about_it() -> None:
    """Archived a's windows go, and so do b's, c's and the layer's `*.a` windows; the rest stay."""
    lc = _three_experts()
    _archive(lc, "a")
    r = lc.registry
    assert r.latest_metrics("a") == {}
    assert r.latest_metrics("b") == {"share": 0.3, "token_type.0": 1.0, "coact.c": 0.5, "cosine.c": 0.5}
    assert r.metric_window(0, "coact.a", layer=True) == ()
    assert r.metric_window(0, "entropy", layer=True) == (1.0,)
    assert not r.is_live("a") and r.is_live("b")
    assert fold_all(lc.log.read()) == r


def test_a_pending_prune_expert_keeps_its_windows_until_it_is_archived() -> None:
    """pending_prune still holds its slot, so it and the windows about it stay until archived."""
    lc = _three_experts()
    for target in ("dormant", "pending_prune"):
        lc.transition("a", to=target, step=2)
    assert lc.registry.is_live("a")
    assert lc.registry.metric_window("a", "share") == (0.3,)
    assert lc.registry.metric_window("b", "coact.a") == (0.5,)


def test_metrics_of_or_about_an_archived_expert_are_recorded_but_not_kept() -> None:
    """Later metrics of archived a, and `*.a` metrics of others, reach the log, not the registry."""
    lc = _three_experts()
    _archive(lc, "a")
    lc.observe({"share": 0.0}, entity="a", step=3)
    lc.observe({"share": 0.4, "coact.a": 0.1, "coact.nobody": 0.2}, entity="b", step=3)
    r = lc.registry
    assert r.latest_metrics("a") == {}
    assert r.metric_window("b", "coact.a") == ()
    assert r.metric_window("b", "coact.nobody") == (0.2,)  # not an entity: an ordinary metric
    assert r.metric_window("b", "share") == (0.3, 0.4)
    assert [rec["kind"] for rec in lc.log.read()[-2:]] == ["MetricsObserved", "MetricsObserved"]
    assert fold_all(lc.log.read()) == r


def test_a_revived_expert_starts_with_empty_windows() -> None:
    """archived -> active brings an expert back live with no history of metrics, then it collects them."""
    lc = _three_experts()
    _archive(lc, "a")
    lc.transition("a", to="active", step=3)
    assert lc.registry.is_live("a") and lc.registry.latest_metrics("a") == {}
    lc.observe({"share": 0.1}, entity="a", step=4)
    lc.observe({"coact.a": 0.3}, entity="b", step=4)
    assert lc.registry.metric_window("a", "share") == (0.1,)
    assert lc.registry.metric_window("b", "coact.a") == (0.3,)
    assert fold_all(lc.log.read()) == lc.registry


def test_the_decision_keys_of_an_archived_expert_are_dropped() -> None:
    """An archived expert's cooldown keys go; the run's and the layer's stay; later ones are not kept."""
    lc = _three_experts()
    lc.append([DecisionMade(run_id="bounded", step=2, action=Action.SPLIT, entity="a", layer=0, parent="b")])
    _archive(lc, "a", step=3)
    r = lc.registry
    assert r.last_decision_step(Action.SPLIT, "a") is None
    assert r.last_decision_step(Action.SPLIT, "b") == 2
    assert r.last_decision_step(Action.SPLIT, 0) == r.last_decision_step(Action.SPLIT) == 2
    lc.append([DecisionMade(run_id="bounded", step=4, action=Action.MERGE, entity="b", layer=0, parent="a")])
    assert lc.registry.last_decision_step(Action.MERGE, "a") is None
    assert lc.registry.last_decision_step(Action.MERGE, "b") == 4
    assert fold_all(lc.log.read()) == lc.registry


def test_a_pruned_module_slot_is_recycled_without_the_old_modules_metrics() -> None:
    """PRUNED takes the module out of the live set: back in DORMANT its windows start empty."""
    lc = Lifecycle()
    lc.register("m", "module", slot=0)
    lc.transition("m", to="INSTANTIATED", metrics={"available_slots": 1})
    lc.observe({"loss": 2.0}, entity="m")
    lc.transition("m", to="TRAINING")
    lc.transition("m", to="PRUNED")
    assert lc.registry.latest_metrics("m") == {}
    lc.transition("m", to="DORMANT")
    lc.observe({"loss": 1.0}, entity="m")
    assert lc.registry.metric_window("m", "loss") == (1.0,)


def test_a_snapshot_holding_windows_of_archived_experts_restores_without_them() -> None:
    """A snapshot written before windows followed the live set restores to the replayed registry."""
    lc = _three_experts()
    _archive(lc, "a")
    state = lc.registry.to_state()
    stale = [["entity", "a", "share", [0.3]], ["entity", "b", "coact.a", [0.5]]]
    restored = Registry.from_state(BUILTIN_SPECS, {**state, "windows": [*state["windows"], *stale]})
    assert restored == lc.registry


def test_an_observation_without_metrics_leaves_no_empty_window_owner() -> None:
    """Empty metrics create no window owner, so a restored snapshot equals the live registry."""
    lc = _three_experts()
    lc.observe({}, layer=5, step=2)
    assert Registry.from_state(BUILTIN_SPECS, lc.registry.to_state()) == lc.registry


def test_transitional_counts_come_from_the_populations() -> None:
    """count_transitional counts every layer's transitional entities of a spec, less `exclude`."""
    lc = _three_experts()
    lc.register("d", "expert", state="active", layer=1, slot=0)
    lc.transition("a", to="dormant", step=2)
    lc.transition("d", to="dormant", step=2)
    _archive(lc, "b", step=3)
    r = lc.registry
    assert r.count_transitional("expert") == 2  # a and d dormant; archived b is a failure state
    assert r.count_transitional("expert", exclude="a") == 1
    assert r.count_transitional("expert", exclude="c") == 2
    assert r.count_transitional("expert", exclude="ghost") == 2
    assert r.count_transitional("module") == 0


def _live_names(registry: Registry) -> list[str]:
    return sorted(e.entity for e in registry.live())


def test_live_iterates_the_entities_that_can_still_act() -> None:
    """live() follows registrations, archiving and revival, in copies and restored snapshots too."""
    lc = _three_experts()
    lc.register("m", "module", slot=0)
    _archive(lc, "a")
    for target in ("INSTANTIATED", "TRAINING", "PRUNED"):
        lc.transition("m", to=target, metrics={"available_slots": 1}, step=3)
    assert _live_names(lc.registry) == ["b", "c"]
    lc.transition("a", to="active", step=4)
    lc.transition("m", to="DORMANT", step=4)
    assert _live_names(lc.registry) == ["a", "b", "c", "m"]
    for other in (
        lc.registry.copy(),
        Registry.from_state(BUILTIN_SPECS, lc.registry.to_state()),
        fold_all(lc.log.read()),
    ):
        assert _live_names(other) == _live_names(lc.registry)
    assert [e.entity for e in lc.registry if lc.registry.is_live(e.entity)] == ["a", "b", "c", "m"]

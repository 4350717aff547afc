"""The state tensors equal the registry, row by row, however the log is batched, snapshotted or replayed."""

from __future__ import annotations

import contextlib
import io
import itertools
import struct
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle_es import (
    BUILTIN_SPECS,
    Gate,
    GateCategory,
    GateLibrary,
    GateResult,
    InconsistentEventError,
    InvalidTransitionError,
    Lifecycle,
    Registry,
    SchemaError,
    SequenceGapError,
    SpecError,
    UnknownStateError,
    fold_record,
)
from lifecycle_es.gates import MIN_TIME_GATE
from projections import Snapshot
from projections.state_tensors import (
    BYTES_PER_ROW,
    COLUMNS,
    EPOCHS_IN_STATE,
    HISTORY_DEPTH,
    METRIC_NAMES,
    StateTensors,
)

SPECS = dict(BUILTIN_SPECS)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
PROPERTY = settings(max_examples=30, deadline=None)
_INT32 = (-(2**31), 2**31 - 1)
_INT_METRICS = ("checkpoint_id", "evaluation_score", "error_count")

Records = list[dict[str, Any]]


# -- building logs through a real Lifecycle ---------------------------------------------------


def _always_passing_gates() -> GateLibrary:
    names = set().union(*(spec.gate_names for spec in SPECS.values())) | {MIN_TIME_GATE}
    return GateLibrary(
        [
            Gate(name, GateCategory.STRUCTURAL, lambda i, p: GateResult(True, "ok", {}))
            for name in sorted(names)
        ]
    )


_value = st.one_of(st.floats(-1e4, 1e4, allow_nan=False), st.sampled_from([3e6, -5e9, 1e12, 0.0005]))
_metrics = st.dictionaries(st.sampled_from([*METRIC_NAMES, *_INT_METRICS, "improvement"]), _value, max_size=5)
_attr = st.one_of(st.none(), st.integers(-(2**33), 2**33), st.booleans(), st.text(max_size=2))
_pick = st.integers(0, 1_000)
_KINDS = ("move",) * 5 + ("observe",) * 2 + ("register", "layer", "seal")
"""Command kinds by weight: moves dominate so entities walk deep into their specs."""
_op = st.tuples(
    st.sampled_from(_KINDS),
    st.one_of(st.integers(0, 2), _pick),  # the entity: a few of them get long histories
    st.sampled_from([True, True, True, False]),  # a move along an edge, or to any state
    _pick,  # the target, or the initial state
    _metrics,
    st.sampled_from(list(SPECS)),
    _attr,
    _attr,
)
ops = st.lists(st.tuples(_op, st.integers(0, 40)), min_size=20, max_size=100)
"""Commands for a lifecycle, each with the steps the clock advances before it."""


def _run(lc: Lifecycle, op: tuple[Any, ...]) -> None:
    kind, who, valid, pick, metrics, spec_name, blueprint, strategy = op
    entities = list(lc.registry.entities)
    if kind == "register":
        spec = SPECS[spec_name]
        attrs = {
            k: v for k, v in (("blueprint", blueprint), ("grafting_strategy", strategy)) if v is not None
        }
        lc.register(f"e{len(entities)}", spec.name, state=spec.initial[pick % len(spec.initial)], attrs=attrs)
    elif kind == "layer":
        lc.observe(metrics, layer=0)
    elif kind == "seal":
        lc.seal()
    elif entities and kind == "observe":
        lc.observe(metrics, entity=entities[who % len(entities)])
    elif entities and kind == "move":
        _move(lc, entities[who % len(entities)], valid=valid, pick=pick)


def _move(lc: Lifecycle, entity: str, *, valid: bool, pick: int) -> None:
    spec = lc.registry.spec_of(lc.registry.get(entity))
    exits = spec.exits(lc.registry.get(entity).state)
    target = exits[pick % len(exits)].target if valid and exits else spec.states[pick % len(spec.states)].name
    with contextlib.suppress(InvalidTransitionError):  # the rejection is in the log: good input
        lc.transition(entity, target)


def build_log(commands: list[tuple[tuple[Any, ...], int]]) -> tuple[Registry, Records]:
    """Run the commands through a real Lifecycle; return its registry and its log's records."""
    lc = Lifecycle(specs=SPECS, gates=_always_passing_gates())
    lc.start()
    for op, dt in commands:
        lc.advance(lc.step + dt)
        _run(lc, op)
    return lc.registry, lc.log.read()


def fold_all(records: Records) -> Registry:
    """Fold records into a fresh registry with the registry's own fold."""
    registry = Registry(SPECS)
    for record in records:
        fold_record(registry, record)
    return registry


# -- what the tensors must hold, from the registry -----------------------------------------------


def _f32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _saturate(x: float) -> float:
    return min(max(x, float(_INT32[0])), float(_INT32[1]))


def _int_attr(attrs: Mapping[str, Any], name: str, default: int) -> int:
    value = attrs.get(name)
    return value if type(value) is int and _INT32[0] <= value <= _INT32[1] else default


def expected_rows(registry: Registry) -> list[dict[str, Any]]:
    """Return each entity's row as the registry defines it, in registration order."""
    return [_expected_row(registry, e.entity) for e in registry]


def _expected_row(registry: Registry, entity: str) -> dict[str, Any]:
    e = registry.get(entity)
    latest = registry.latest_metrics(entity)
    spec = registry.spec_of(e)
    return {
        "entity": entity,
        "spec": e.spec,
        "state_code": spec.state(e.state).code,
        "state": e.state,
        "blueprint": _int_attr(e.attrs, "blueprint", -1),
        "epochs_in_state": e.time_in_state(registry.step),
        "grafting_strategy": _int_attr(e.attrs, "grafting_strategy", 0),
        "parent_state": e.history[-1][1] if e.history else None,
        "checkpoint_id": int(_saturate(latest["checkpoint_id"])) if "checkpoint_id" in latest else -1,
        "evaluation_score": round(_saturate(latest.get("evaluation_score", 0.0) * 1000)),
        "error_count": int(_saturate(latest.get("error_count", 0.0))),
        "history": [(a, b) for _, a, b in reversed(e.history)][:HISTORY_DEPTH],
        "metrics": {name: _f32(latest.get(name, 0.0)) for name in METRIC_NAMES},
    }


def assert_matches(tensors: StateTensors, registry: Registry) -> None:
    """Assert the projection holds the registry's entities, row for row, at the same seq."""
    assert tensors.seq == registry.seq
    assert tensors.entities() == list(registry.entities)
    assert tensors.as_rows() == expected_rows(registry)


def live_tensors(tensors: StateTensors) -> tuple[torch.Tensor, ...]:
    """Return the live rows of every tensor the projection holds, on the CPU."""
    n = len(tensors)
    return tuple(t[:n].cpu() for t in (tensors.state, tensors.history, tensors.metrics, tensors.state_keys))


def assert_same_tensors(a: StateTensors, b: StateTensors) -> None:
    """Assert two projections hold identical rows, bit for bit."""
    assert a.entities() == b.entities()
    for x, y in zip(live_tensors(a), live_tensors(b), strict=True):
        assert torch.equal(x, y)


def through_torch(snapshot: Snapshot) -> Snapshot:
    """Write a snapshot with torch.save and read it back with torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save({"kind": snapshot.kind, "seq": snapshot.seq, "state": snapshot.state}, buffer)
    buffer.seek(0)
    return Snapshot(**torch.load(buffer, weights_only=True))


def _split(records: Records, cuts: list[int]) -> list[Records]:
    points = sorted({0, len(records), *(c % (len(records) + 1) for c in cuts)})
    return [records[a:b] for a, b in itertools.pairwise(points)]


# -- properties --------------------------------------------------------------------------------


@PROPERTY
@given(ops)
def test_one_batch_of_the_whole_log_matches_the_registry(commands: list[Any]) -> None:
    """Applying the whole log as one batch gives every entity's registry state, row by row."""
    registry, records = build_log(commands)
    tensors = StateTensors(SPECS, capacity=1)
    assert tensors.apply(records) == len(records)
    assert_matches(tensors, registry)


@PROPERTY
@given(ops)
def test_one_by_one_apply_matches_the_registry_after_every_record(commands: list[Any]) -> None:
    """Applying records one at a time matches a registry folded to the same seq after each one."""
    _, records = build_log(commands)
    tensors, registry = StateTensors(SPECS, capacity=2), Registry(SPECS)
    for record in records:
        tensors.apply([record])
        fold_record(registry, record)
        assert_matches(tensors, registry)


@PROPERTY
@given(ops, st.lists(st.integers(0, 10_000), max_size=6))
def test_random_batches_match_the_registry_after_every_batch(commands: list[Any], cuts: list[int]) -> None:
    """Whatever the batch boundaries, the tensors equal the registry after each batch."""
    _, records = build_log(commands)
    tensors, registry = StateTensors(SPECS, capacity=1), Registry(SPECS)
    for batch in _split(records, cuts):
        tensors.apply(batch)
        for record in batch:
            fold_record(registry, record)
        assert_matches(tensors, registry)


@PROPERTY
@given(ops, st.lists(st.integers(0, 10_000), max_size=6), st.lists(st.integers(0, 30), max_size=6))
def test_time_in_state_owed_over_batches_and_advances_equals_reading_after_each(
    commands: list[Any], cuts: list[int], gains: list[int]
) -> None:
    """Steps owed over many batches, advances and growths, added at one read, give the rows that
    reading the tensors after every batch gives."""
    _, records = build_log(commands)
    unread, read = StateTensors(SPECS, capacity=1), StateTensors(SPECS, capacity=1)
    for batch, gain in zip(_split(records, cuts), itertools.cycle(gains or [0])):
        for tensors in (unread, read):
            tensors.apply(batch)
            tensors.advance(tensors.clock + gain)
        live_tensors(read)  # reading brings the rows up to the clock
    assert_same_tensors(unread, read)
    assert unread.clock == read.clock


@PROPERTY
@given(ops, st.integers(0, 10_000))
def test_snapshot_then_resume_matches_the_registry(commands: list[Any], cut: int) -> None:
    """A snapshot through torch.save/load(weights_only) plus the rest of the log equals a full replay."""
    registry, records = build_log(commands)
    cut %= len(records) + 1
    before = StateTensors(SPECS, capacity=1)
    before.apply(records[:cut])
    resumed = StateTensors(SPECS, capacity=4)
    resumed.restore(through_torch(before.snapshot()))
    assert_matches(resumed, fold_all(records[:cut]))
    resumed.apply(records)
    assert_matches(resumed, registry)
    full = StateTensors(SPECS)
    full.apply(records)
    assert_same_tensors(resumed, full)


@PROPERTY
@given(ops)
def test_replaying_twice_gives_identical_tensors_and_reapplying_changes_nothing(commands: list[Any]) -> None:
    """Two replays of one log are bit-identical, and applying the same batch again is a no-op."""
    _, records = build_log(commands)
    first, second = StateTensors(SPECS, capacity=1), StateTensors(SPECS, capacity=64)
    first.apply(records)
    second.apply(records)
    assert_same_tensors(first, second)
    before = live_tensors(first)
    assert first.apply(records) == 0
    assert all(torch.equal(x, y) for x, y in zip(before, live_tensors(first), strict=True))


@CUDA
@PROPERTY
@given(ops, st.lists(st.integers(0, 10_000), max_size=4))
def test_on_cuda_the_tensors_match_the_registry(commands: list[Any], cuts: list[int]) -> None:
    """On a CUDA device the same batches give the registry's rows and masks live on the device."""
    _, records = build_log(commands)
    tensors, registry = StateTensors(SPECS, capacity=1, device="cuda"), Registry(SPECS)
    for batch in _split(records, cuts):
        tensors.apply(batch)
        for record in batch:
            fold_record(registry, record)
        assert_matches(tensors, registry)
    assert tensors.state.is_cuda and tensors.mask("kasmina", ["TRAINING"]).is_cuda
    resumed = StateTensors(SPECS, device="cuda")
    resumed.restore(through_torch(tensors.snapshot()))
    assert_same_tensors(resumed, tensors)


# -- examples ------------------------------------------------------------------------------------


def _lifecycle() -> Lifecycle:
    lc = Lifecycle(specs=SPECS, gates=_always_passing_gates())
    lc.start()
    return lc


def test_duplicate_writes_within_one_batch_resolve_to_the_last() -> None:
    """An entity moved and measured many times in one batch keeps the last values, history in order."""
    lc = _lifecycle()
    lc.register("x", "expert", state="pending_spawn")
    path = ["cooling", *(["active", "cooling"] * 7)]
    for step, target in enumerate(path, start=1):
        lc.transition("x", target, step=step)
        lc.observe({"loss": float(step), "error_count": float(step)}, entity="x", step=step)
    tensors = StateTensors(SPECS)
    tensors.apply(lc.log.read())
    (row,) = tensors.as_rows()
    assert (row["state"], row["parent_state"], row["epochs_in_state"]) == ("cooling", "active", 0)
    assert row["metrics"]["loss"] == row["error_count"] == len(path)
    assert row["history"] == [("active", "cooling"), ("cooling", "active")] * 5
    assert_matches(tensors, lc.registry)


def test_an_archived_row_has_blank_metric_cells_however_the_log_is_cut() -> None:
    """Archiving blanks a row's metric cells and later metrics of it are not written, as in the
    registry; a snapshot keeps that, and a revived expert takes metrics again."""
    lc = _lifecycle()
    lc.register("x", "expert", state="active")
    lc.register("y", "expert", state="active", slot=1)
    lc.observe({"loss": 1.5, "evaluation_score": 0.9, "checkpoint_id": 7.0}, entity="x", step=1)
    for target in ("dormant", "pending_prune", "archived"):
        lc.transition("x", target, step=2)
    lc.observe({"loss": 2.5, "error_count": 3.0}, entity="x", step=3)
    lc.observe({"loss": 0.5}, entity="y", step=3)
    records = lc.log.read()
    for cut in range(len(records) + 1):
        tensors = StateTensors(SPECS)
        tensors.apply(records[:cut])
        resumed = StateTensors(SPECS)
        resumed.restore(through_torch(tensors.snapshot()))
        resumed.apply(records[cut:])
        assert_matches(resumed, lc.registry)
    x = {r["entity"]: r for r in resumed.as_rows()}["x"]
    assert (x["checkpoint_id"], x["evaluation_score"], x["error_count"]) == (-1, 0, 0)
    assert set(x["metrics"].values()) == {0.0}
    lc.transition("x", "active", step=4)
    lc.observe({"loss": 4.0}, entity="x", step=4)
    resumed.apply(lc.log.read())
    assert_matches(resumed, lc.registry)
    assert {r["entity"]: r for r in resumed.as_rows()}["x"]["metrics"]["loss"] == 4.0


def test_a_batch_split_anywhere_fills_the_history_ring_in_order() -> None:
    """The ring holds the latest ten transitions newest first, whether they came in one batch or two."""
    lc = _lifecycle()
    lc.register("x", "expert", state="pending_spawn")
    for step, target in enumerate(["cooling", *(["active", "cooling"] * 6)], start=1):
        lc.transition("x", target, step=step)
    records = lc.log.read()
    for cut in range(len(records) + 1):
        tensors = StateTensors(SPECS)
        tensors.apply(records[:cut])
        tensors.apply(records[cut:])
        assert_matches(tensors, lc.registry)


def test_growth_doubles_capacity_and_keeps_every_row() -> None:
    """Registering past the capacity doubles it and leaves the rows already there untouched."""
    lc = _lifecycle()
    for i in range(5):
        lc.register(f"s{i}", "kasmina", attrs={"blueprint": i}, step=i)
        lc.transition(f"s{i}", "GERMINATED", step=i)
    records = lc.log.read()
    small, large = StateTensors(SPECS, capacity=1), StateTensors(SPECS, capacity=64)
    small.apply(records[:6])
    kept = live_tensors(small)
    assert small.capacity == len(small) == 2
    small.apply(records[6:])
    assert small.capacity == 8 and len(small) == 5
    grown = live_tensors(small)
    fixed = [c for c in range(len(COLUMNS)) if c != EPOCHS_IN_STATE]  # the clock moved on
    assert torch.equal(grown[0][:2, fixed], kept[0][:, fixed])
    assert all(torch.equal(x[:2], y) for x, y in zip(grown[1:], kept[1:], strict=True))
    large.apply(records)
    assert_same_tensors(small, large)
    assert_matches(small, lc.registry)


def test_masks_select_rows_of_one_spec_in_a_state_set() -> None:
    """A mask is True exactly for the rows of the named spec whose state is in the set."""
    lc = _lifecycle()
    lc.register("k", "kasmina")
    lc.register("m", "module")
    lc.register("a", "expert", state="active")
    lc.register("p", "expert", state="pending_spawn")
    lc.transition("k", "GERMINATED")
    lc.transition("m", "INSTANTIATED")
    tensors = StateTensors(SPECS)
    tensors.apply(lc.log.read())
    routes = tensors.mask("expert", ["active", "cooling"])
    assert routes.dtype == torch.bool and routes.device == tensors.device
    assert routes.tolist() == [False, False, True, False]
    # kasmina GERMINATED and module INSTANTIATED share code 1: the spec tells them apart
    assert tensors.mask("kasmina", ["GERMINATED"]).tolist() == [True, False, False, False]
    assert tensors.codes().tolist() == [1, 1, 2, 0]
    assert tensors.mask("agent", []).tolist() == [False] * 4


def test_a_gap_raises_and_leaves_the_tensors_as_they_were() -> None:
    """A batch that skips a seq raises SequenceGapError before anything changes."""
    lc = _lifecycle()
    lc.register("k", "kasmina")
    lc.transition("k", "GERMINATED", step=3)
    records = lc.log.read()
    tensors = StateTensors(SPECS)
    tensors.apply(records[:2])
    before = live_tensors(tensors)
    with pytest.raises(SequenceGapError):
        tensors.apply(records[3:])
    assert tensors.seq == 2
    assert all(torch.equal(x, y) for x, y in zip(before, live_tensors(tensors), strict=True))


def test_an_inconsistent_record_raises_before_any_change() -> None:
    """A transition of an unknown entity raises InconsistentEventError and changes nothing."""
    lc = _lifecycle()
    lc.register("k", "kasmina")
    records = lc.log.read()
    tensors = StateTensors(SPECS)
    tensors.apply(records)
    ghost = {
        **records[-1],
        "seq": len(records) + 2,
        "kind": "TransitionApplied",
        "entity": "ghost",
        "from_state": "DORMANT",
        "to_state": "GERMINATED",
        "step": 9,
    }
    register = {**records[-1], "seq": len(records) + 1, "entity": "new"}
    with pytest.raises(InconsistentEventError):
        tensors.apply([register, ghost])
    assert tensors.entities() == ["k"] and tensors.seq == len(records)


def test_a_hand_built_record_lacking_a_required_field_is_refused_with_a_typed_error() -> None:
    """A MetricsObserved mapping without its metrics is a SchemaError naming the field, and the
    tensors keep what they had, whether or not the entity has a row."""
    lc = _lifecycle()
    lc.register("k", "kasmina")
    records = lc.log.read()
    tensors = StateTensors(SPECS)
    tensors.apply(records)
    for entity in ("k", "ghost"):
        bare = {**records[-1], "seq": len(records) + 1, "kind": "MetricsObserved", "entity": entity}
        bare.pop("metrics", None)
        with pytest.raises(SchemaError, match="metrics"):
            tensors.apply([bare])
        assert tensors.entities() == ["k"] and tensors.seq == len(records)


@pytest.mark.parametrize("field", ["entity", "step", "kind"])
def test_a_registration_lacking_a_required_field_is_refused_by_tensors_and_registry_alike(field: str) -> None:
    """A hand-built EntityRegistered without its entity, step or kind is a SchemaError naming the
    field in the state tensors and in the registry fold, and neither keeps any of it."""
    lc = _lifecycle()
    lc.register("k", "kasmina")
    records = lc.log.read()
    tensors, registry = StateTensors(SPECS), Registry(SPECS)
    tensors.apply(records)
    for record in records:
        fold_record(registry, record)
    fresh = {**records[-1], "seq": len(records) + 1, "entity": "new"}
    del fresh[field]
    with pytest.raises(SchemaError, match=field):
        tensors.apply([fresh])
    with pytest.raises(SchemaError, match=field):
        fold_record(registry, fresh)
    assert tensors.entities() == ["k"] and tensors.seq == len(records)
    assert sorted(registry.entities) == ["k"] and registry.seq == len(records)


def test_each_row_holds_exactly_128_bytes_of_kasmina_state() -> None:
    """The state, history and metrics tensors together take 128 bytes per row."""
    tensors = StateTensors(SPECS, capacity=10)
    per_row = sum(t.element_size() * t[0].numel() for t in (tensors.state, tensors.history, tensors.metrics))
    assert per_row == BYTES_PER_ROW == 128


def test_masks_refuse_unknown_specs_and_states() -> None:
    """A mask naming a spec the projection lacks, or a state its spec lacks, raises a domain error."""
    tensors = StateTensors(SPECS)
    with pytest.raises(SpecError):
        tensors.mask("nope", ["TRAINING"])
    with pytest.raises(UnknownStateError):
        tensors.mask("kasmina", ["TRAINNG"])


def test_restore_refuses_a_snapshot_with_specs_the_projection_lacks() -> None:
    """A snapshot whose rows follow a spec this projection was not built with raises SpecError."""
    lc = _lifecycle()
    lc.register("a", "agent")
    source = StateTensors(SPECS)
    source.apply(lc.log.read())
    target = StateTensors({name: spec for name, spec in SPECS.items() if name != "agent"})
    with pytest.raises(SpecError):
        target.restore(through_torch(source.snapshot()))
    assert len(target) == 0 and target.seq == 0


@PROPERTY
@given(ops, st.lists(st.integers(0, 10_000), max_size=6))
def test_the_flat_and_round_layouts_write_identical_tensors(commands: list[Any], cuts: list[int]) -> None:
    """A batch written with host-built indices (small batches) equals the same batch written by rounds."""
    _, records = build_log(commands)
    flat, by_rounds = StateTensors(SPECS, capacity=1), StateTensors(SPECS, capacity=1)
    flat.small_batch, by_rounds.small_batch = len(records), -1
    for batch in _split(records, cuts):
        flat.apply(batch)
        by_rounds.apply(batch)
        assert_same_tensors(flat, by_rounds)
        assert flat.clock == by_rounds.clock

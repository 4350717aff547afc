"""Bad input gets a typed error with a clear one-sentence message and changes nothing.

Each case runs a command (or folds a record) against a small populated run, checks the error's
class and message, and checks that the registry and the log are as they were. Refused
transitions are not bad input: they append their rejection by design (test_transitions.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from lifecycle_es import (
    CODEC,
    BusError,
    ConfigError,
    DuplicateEntityError,
    EntityRegistered,
    GateLibrary,
    InconsistentEventError,
    InvalidMetricError,
    Lifecycle,
    LifecycleConfig,
    LifecycleError,
    SchemaError,
    SequenceGapError,
    SpecError,
    StepSealed,
    TransitionApplied,
    UnknownEntityError,
    UnknownStateError,
    UsageError,
    default_gates,
    fold_record,
    get_spec,
)

NAN, INF = float("nan"), float("inf")


@pytest.fixture
def lc() -> Lifecycle:
    """A started run with a module in slot 0 of layer 0, an active expert and a Kasmina seed."""
    lc = Lifecycle(run_id="bad-input")
    lc.start()
    lc.register("m", "module", slot=0, layer=0)
    lc.register("x", "expert", state="active", layer=0)
    lc.register("k", "kasmina")
    lc.observe({"loss": 1.0}, entity="m")
    lc.advance(10)
    lc.seal()
    return lc


def record(lc: Lifecycle, event: Any, *, seq: int | None = None) -> dict[str, Any]:
    """The event as the log would hold it, at the registry's next seq unless told otherwise."""
    rec = CODEC.to_record(event)
    rec["seq"] = lc.registry.seq + 1 if seq is None else seq
    return rec


def applied(lc: Lifecycle, entity: str, source: str, target: str) -> TransitionApplied:
    return TransitionApplied(
        run_id=lc.run_id, step=lc.step, entity=entity, from_state=source, to_state=target, trigger="t"
    )


Case = tuple[str, Callable[[Lifecycle], Any], type[LifecycleError | BusError], str]

CASES: list[Case] = [
    # unknown entity, state, trigger, spec
    (
        "transition-unknown-entity",
        lambda lc: lc.transition("ghost", to="TRAINING"),
        UnknownEntityError,
        "no entity 'ghost' in run 'bad-input'",
    ),
    (
        "observe-unknown-entity",
        lambda lc: lc.observe({"loss": 1.0}, entity="ghost"),
        UnknownEntityError,
        "no entity 'ghost'",
    ),
    (
        "transition-unknown-state",
        lambda lc: lc.transition("m", to="FLYING"),
        UnknownStateError,
        "spec 'module' has no state 'FLYING'",
    ),
    (
        "transition-state-of-another-spec",
        lambda lc: lc.transition("m", to="active"),
        UnknownStateError,
        "spec 'module' has no state 'active'",
    ),
    (
        "transition-unknown-trigger",
        lambda lc: lc.transition("m", trigger="fly"),
        UnknownStateError,
        "spec 'module' has no trigger 'fly'",
    ),
    (
        "register-unknown-state",
        lambda lc: lc.register("n", "module", state="FLYING"),
        UnknownStateError,
        "spec 'module' has no state 'FLYING'",
    ),
    (
        "register-non-initial-state",
        lambda lc: lc.register("n", "module", state="TRAINING"),
        UnknownStateError,
        "module entities cannot start in 'TRAINING'",
    ),
    ("register-unknown-spec", lambda lc: lc.register("n", "dragon"), SpecError, "unknown spec 'dragon'"),
    # metrics that are not finite real numbers
    (
        "observe-nan",
        lambda lc: lc.observe({"loss": NAN}, entity="m"),
        InvalidMetricError,
        "metric 'loss' must be finite, got nan",
    ),
    (
        "observe-inf",
        lambda lc: lc.observe({"loss": INF}),
        InvalidMetricError,
        "metric 'loss' must be finite, got inf",
    ),
    (
        "observe-minus-inf",
        lambda lc: lc.observe({"loss": -INF}, layer=0),
        InvalidMetricError,
        "metric 'loss' must be finite, got -inf",
    ),
    (
        "observe-str",
        lambda lc: lc.observe({"loss": "0.5"}, entity="m"),
        InvalidMetricError,
        "metric 'loss' must be a number, got str",
    ),
    (
        "observe-bool",
        lambda lc: lc.observe({"loss": True}, entity="m"),
        InvalidMetricError,
        "metric 'loss' must be a number, got bool",
    ),
    (
        "observe-none",
        lambda lc: lc.observe({"loss": None}, entity="m"),
        InvalidMetricError,
        "metric 'loss' must be a number, got NoneType",
    ),
    (
        "observe-empty-name",
        lambda lc: lc.observe({"": 1.0}),
        InvalidMetricError,
        "metric names must be non-empty strings",
    ),
    (
        "observe-not-a-mapping",
        lambda lc: lc.observe([1.0]),  # type: ignore[arg-type]
        InvalidMetricError,
        "metrics must be a mapping of names to numbers, got list",
    ),
    (
        "transition-nan-metric",
        lambda lc: lc.transition("m", to="INSTANTIATED", metrics={"available_slots": NAN}),
        InvalidMetricError,
        "metric 'available_slots' must be finite",
    ),
    (
        "transition-inf-metric",
        lambda lc: lc.transition("k", to="GERMINATED", metrics={"reconstruction_loss": INF}),
        InvalidMetricError,
        "metric 'reconstruction_loss' must be finite",
    ),
    (
        "transition-bool-metric",
        lambda lc: lc.transition("m", to="INSTANTIATED", metrics={"available_slots": False}),
        InvalidMetricError,
        "metric 'available_slots' must be a number, got bool",
    ),
    # wrong types and out-of-range values
    (
        "step-as-str",
        lambda lc: lc.register("n", "module", step="3"),  # type: ignore[arg-type]
        UsageError,
        "step must be an int, got str",
    ),
    (
        "step-as-bool",
        lambda lc: lc.transition("m", to="INSTANTIATED", step=True),
        UsageError,
        "step must be an int, got bool",
    ),
    (
        "step-before-the-run",
        lambda lc: lc.observe({"loss": 1.0}, step=3),
        UsageError,
        "step 3 is before the run's latest step 10",
    ),
    ("advance-backwards", lambda lc: lc.advance(-1), UsageError, "step -1 is before"),
    (
        "slot-as-str",
        lambda lc: lc.register("n", "module", slot="0"),  # type: ignore[arg-type]
        UsageError,
        "slot must be an int or None, got str",
    ),
    (
        "slot-as-bool",
        lambda lc: lc.register("n", "module", slot=True),
        UsageError,
        "slot must be an int or None, got bool",
    ),
    (
        "layer-as-str",
        lambda lc: lc.register("n", "module", layer="0"),  # type: ignore[arg-type]
        UsageError,
        "layer must be an int or None, got str",
    ),
    (
        "negative-slot",
        lambda lc: lc.register("n", "module", slot=-1),
        SchemaError,
        "cannot register 'n': slot: Input should be greater than or equal to 0",
    ),
    (
        "attrs-with-a-set",
        lambda lc: lc.register("n", "module", attrs={"tags": {"a"}}),
        SchemaError,
        r"cannot register 'n': attrs take JSON values with str keys only, but attrs\['tags'\] is of type set",
    ),
    (
        "attrs-with-nan",
        lambda lc: lc.register("n", "module", attrs={"lr": NAN}),
        SchemaError,
        r"cannot register 'n': attrs take JSON values with str keys only, but attrs\['lr'\] is nan",
    ),
    (
        "parent-as-int",
        lambda lc: lc.register("n", "module", parent=3),  # type: ignore[arg-type]
        SchemaError,
        "cannot register 'n': parent: Input should be a valid string",
    ),
    (
        "entity-as-int",
        lambda lc: lc.register(3, "module"),  # type: ignore[arg-type]
        UsageError,
        "entity must be a str, got int",
    ),
    (
        "entity-empty",
        lambda lc: lc.register("", "module"),
        SchemaError,
        "cannot register '': entity: String should have at least 1 character",
    ),
    (
        "observe-negative-layer",
        lambda lc: lc.observe({"loss": 1.0}, layer=-1),
        UsageError,
        "layer must be a non-negative int, got -1",
    ),
    (
        "reason-as-int",
        lambda lc: lc.transition("x", to="dormant", reason=3),  # type: ignore[arg-type]
        UsageError,
        "reason must be a str, got int",
    ),
    (
        "causation-not-an-event-id",
        lambda lc: lc.transition("x", to="dormant", causation="e-1"),
        UsageError,
        "causation must be an event id",
    ),
    (
        "both-to-and-trigger",
        lambda lc: lc.transition("x", to="dormant", trigger="go_dormant"),
        UsageError,
        "name exactly one of `to` and `trigger`",
    ),
    (
        "neither-to-nor-trigger",
        lambda lc: lc.transition("x"),
        UsageError,
        "name exactly one of `to` and `trigger`",
    ),
    (
        "event-of-another-run",
        lambda lc: lc.append([StepSealed(run_id="another-run", step=10)]),
        UsageError,
        "event of run 'another-run' cannot go to run 'bad-input'",
    ),
    # duplicates
    (
        "duplicate-entity",
        lambda lc: lc.register("m", "expert"),
        DuplicateEntityError,
        "entity 'm' is already registered",
    ),
    (
        "occupied-slot",
        lambda lc: lc.register("n", "module", slot=0, layer=0),
        DuplicateEntityError,
        "slot 0 of layer 0 is held by 'm'",
    ),
    # records the fold refuses
    (
        "seq-gap",
        lambda lc: fold_record(
            lc.registry, record(lc, StepSealed(run_id=lc.run_id, step=10), seq=lc.registry.seq + 2)
        ),
        SequenceGapError,
        r"event seq \d+ does not follow the registry's last seq \d+",
    ),
    (
        "seq-repeated",
        lambda lc: fold_record(
            lc.registry, record(lc, StepSealed(run_id=lc.run_id, step=10), seq=lc.registry.seq)
        ),
        SequenceGapError,
        "does not follow the registry's last seq",
    ),
    (
        "unknown-kind",
        lambda lc: fold_record(
            lc.registry, {**record(lc, StepSealed(run_id=lc.run_id, step=10)), "kind": "Teleported"}
        ),
        SchemaError,
        "unknown kind 'Teleported'",
    ),
    (
        "applied-from-the-wrong-state",
        lambda lc: fold_record(lc.registry, record(lc, applied(lc, "m", "TRAINING", "BLENDING"))),
        InconsistentEventError,
        "'m' cannot move TRAINING->BLENDING",
    ),
    (
        "applied-along-no-edge",
        lambda lc: fold_record(lc.registry, record(lc, applied(lc, "m", "DORMANT", "INTEGRATED"))),
        InconsistentEventError,
        "'m' cannot move DORMANT->INTEGRATED",
    ),
    (
        "applied-to-an-unknown-entity",
        lambda lc: fold_record(lc.registry, record(lc, applied(lc, "ghost", "DORMANT", "INSTANTIATED"))),
        InconsistentEventError,
        "'ghost' cannot move",
    ),
    (
        "registered-twice",
        lambda lc: fold_record(
            lc.registry,
            record(lc, EntityRegistered(run_id=lc.run_id, entity="m", spec="module", state="DORMANT")),
        ),
        InconsistentEventError,
        "cannot register 'm' as module/DORMANT",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_raises_a_typed_error_and_changes_nothing(
    lc: Lifecycle,
    call: Callable[[Lifecycle], Any],
    error: type[LifecycleError | BusError],
    message: str,
) -> None:
    """The call raises the typed error with a one-sentence message; registry and log are as before."""
    before, seq = lc.registry.copy(), lc.log.last_seq()
    with pytest.raises(error) as caught:
        call(lc)
    text = str(caught.value)
    assert re.search(message, text), text
    assert "\n" not in text
    assert lc.registry == before
    assert lc.log.last_seq() == seq
    # The run still works afterwards.
    lc.observe({"loss": 0.5}, entity="m")
    assert lc.registry.seq == seq + 1


def test_a_newer_schema_is_refused_naming_seq_kind_and_versions() -> None:
    """A record at schema 2 of a kind this code reads at 1 is a SchemaError saying so."""
    rec = {**CODEC.to_record(StepSealed(run_id="r", step=1)), "seq": 7, "schema": 2}
    with pytest.raises(SchemaError) as caught:
        CODEC.from_record(rec)
    assert str(caught.value) == (
        "record seq 7 (kind 'StepSealed'): schema 2 is newer than version 1, the newest this code reads"
    )
    with pytest.raises(SchemaError, match="schema 2 is newer than version 1"):
        CODEC.from_record(rec, trusted=True)
    with pytest.raises(SchemaError, match="schema 2 is newer"):
        CODEC.check(rec)


def test_a_writer_catching_up_refuses_a_newer_schema_and_keeps_its_registry(lc: Lifecycle) -> None:
    """catch_up() meets a record from a newer version: SchemaError, registry unchanged."""
    before = lc.registry.copy()
    newer = {**CODEC.to_record(StepSealed(run_id=lc.run_id, step=20)), "schema": 9}
    lc.log.append([newer], expected_seq=lc.registry.seq)
    with pytest.raises(SchemaError, match=r"record seq \d+ \(kind 'StepSealed'\): schema 9 is newer"):
        lc.catch_up()
    assert lc.registry == before
    with pytest.raises(SchemaError, match="schema 9 is newer"):
        Lifecycle(lc.log)


@pytest.mark.parametrize(
    ("record_", "message"),
    [
        ({"kind": "Teleported", "run_id": "r"}, "unknown kind 'Teleported'"),
        ({"run_id": "r"}, "unknown kind None"),
        ({"kind": "StepSealed", "run_id": "r", "schema": 0}, "schema must be a positive int, got 0"),
        ({"kind": "StepSealed", "run_id": "r", "schema": "1"}, "schema must be a positive int"),
        ({"kind": "StepSealed", "run_id": "bad id!"}, "invalid fields: run_id"),
        ({"kind": "StepSealed", "run_id": "r", "step": -1}, "invalid fields: step"),
        ({"kind": "StepSealed", "run_id": "r", "colour": "red"}, "invalid fields: colour"),
        ({"kind": "MetricsObserved", "run_id": "r", "metrics": {"a": NAN}}, "invalid fields: metrics.a"),
    ],
    ids=str,
)
def test_the_codec_refuses_bad_records_with_a_schema_error(record_: dict[str, Any], message: str) -> None:
    """Unknown kinds, bad schema numbers and invalid fields are SchemaErrors naming the problem."""
    with pytest.raises(SchemaError) as caught:
        CODEC.from_record({"seq": 4, **record_})
    assert message in str(caught.value)
    assert str(caught.value).startswith("record seq 4 (kind ")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric_window": 0}, "metric_window must be an int >= 1, got 0"),
        ({"metric_window": "3"}, "metric_window must be an int >= 1, got '3'"),
        ({"metric_window": 2.5}, "metric_window must be an int >= 1, got 2.5"),
        ({"mode": "lenient"}, "mode must be one of ['strict', 'permissive'], got 'lenient'"),
    ],
    ids=str,
)
def test_a_bad_lifecycle_config_is_a_config_error(kwargs: dict[str, Any], message: str) -> None:
    """LifecycleConfig validates at construction with a one-sentence ConfigError."""
    with pytest.raises(ConfigError) as caught:
        LifecycleConfig(**kwargs)
    assert str(caught.value) == message


def test_a_gate_library_missing_a_spec_gate_is_refused_at_construction() -> None:
    """A Lifecycle whose library lacks a gate its specs need fails at once, naming the gates."""
    with pytest.raises(
        ConfigError,
        match=r"spec 'kasmina' names gates missing from the library: "
        r"\['kasmina.improvement', .*'min_time_in_state'\]",
    ):
        Lifecycle(gates=GateLibrary(), specs=[get_spec("kasmina")])


def test_a_gate_library_answers_membership_and_get_and_refuses_an_unknown_name() -> None:
    """`in` and `get` answer for a missing gate; indexing with one is a ConfigError naming it."""
    library = default_gates()
    assert "min_time_in_state" in library and "no_such_gate" not in library
    assert library.get("no_such_gate") is None
    assert library.get("min_time_in_state") is library["min_time_in_state"]
    with pytest.raises(ConfigError, match="no gate named 'no_such_gate'"):
        library["no_such_gate"]


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"lr": object()}, "config['lr'] is of type object"),
        ({"model": {"dims": (4, 8)}}, "config['model']['dims'] is of type tuple"),
        ({"layers": [1, {2}]}, "config['layers'][1] is of type set"),
        ({"loss": NAN}, "config['loss'] is nan"),
        ({3: "x"}, "config has the key 3 of type int"),
    ],
)
def test_start_refuses_a_config_that_is_not_json_naming_where(config: dict[Any, Any], where: str) -> None:
    """start(config=...) with a value JSON cannot hold is a one-sentence ConfigError naming its key;
    nothing is recorded, and a JSON config starts the run afterwards."""
    lc = Lifecycle(run_id="not-json")
    with pytest.raises(ConfigError) as caught:
        lc.start(config=config)
    assert str(caught.value) == f"start(config=...) takes JSON values with str keys only, but {where}"
    assert (lc.log.last_seq(), lc.registry.run_id) == (0, None)
    lc.start(config={"ok": [1, 2.5, None, {"a": "b"}], "flag": True})
    assert lc.registry.run_id == "not-json"


def test_start_refuses_a_seed_of_the_wrong_type_naming_the_argument() -> None:
    """A seed that is not an int is a ConfigError naming `seed`, not a raw pydantic error."""
    lc = Lifecycle(run_id="bad-seed")
    with pytest.raises(ConfigError, match=r"^start\(seed=\.\.\.\) must be a 64-bit int, got 'zero'$"):
        lc.start(seed="zero")  # type: ignore[arg-type]
    assert lc.log.last_seq() == 0

"""The codec: every event kind to a flat record and back, schema versions, upcasters, event ids."""

from __future__ import annotations

import json
import multiprocessing
import uuid
from typing import Any, ClassVar, Literal

import pydantic
import pytest

from lifecycle_es import (
    CODEC,
    Action,
    ActionsVerified,
    CheckpointRecorded,
    CheckpointRestored,
    CheckpointSaved,
    Codec,
    DecisionMade,
    DivergenceDetected,
    EntityRegistered,
    GateCategory,
    GateChecked,
    GateMode,
    GateOutcome,
    GatesChecked,
    MetricsObserved,
    RewardRecorded,
    RunStarted,
    RunStateChanged,
    SchemaError,
    StepSealed,
    TransitionApplied,
    TransitionRejected,
    new_event_id,
)
from lifecycle_es.events import EVENT_TYPES, EventBase

CAUSE = new_event_id()
ENVELOPE: dict[str, Any] = {"run_id": "run-1", "seq": 3, "step": 40, "rank": 1, "causation": CAUSE}

SAMPLES: list[EventBase] = [
    RunStarted(
        **ENVELOPE,
        config={"lr": 0.1, "layers": [1, 2], "opt": {"name": "adam"}},
        specs=["expert", "kasmina"],
        world_size=4,
        torch_version="2.13.0",
        seed=7,
    ),
    RunStateChanged(**ENVELOPE, from_state="running", to_state="stopping", reason="manual"),
    EntityRegistered(
        **ENVELOPE,
        entity="seed-1",
        spec="kasmina",
        state="DORMANT",
        slot=2,
        layer=1,
        parent="host",
        attrs={"channels": 64, "tags": ["a", "b"]},
    ),
    GateChecked(
        **ENVELOPE,
        entity="seed-1",
        from_state="TRAINING",
        to_state="GRAFTING",
        gate="kasmina.reconstruction",
        category=GateCategory.PERFORMANCE,
        passed=False,
        blocking=False,
        reason="reconstruction loss 0.5 > 0.01",
        observed={"reconstruction_loss": 0.5},
        thresholds={"reconstruction_threshold": 0.01},
        mode=GateMode.PERMISSIVE,
    ),
    GatesChecked(
        **ENVELOPE,
        entity="L0_E4",
        from_state="",
        to_state="pending_spawn",
        gates=[
            GateOutcome(
                "spawn.layer_cap", True, {"live_experts": 4.0}, {"max_experts_per_layer": 16.0}
            ).stored(),
            GateOutcome(
                "spawn.cooldown", False, {"steps_since": 10.0}, {"cooldown_steps": 50.0}, "too soon"
            ).stored(),
        ],
    ),
    TransitionApplied(
        **ENVELOPE,
        entity="seed-1",
        from_state="TRAINING",
        to_state="GRAFTING",
        trigger="graft",
        reason="ready",
    ),
    TransitionRejected(
        **ENVELOPE,
        entity="seed-1",
        from_state="TRAINING",
        to_state="GRAFTING",
        trigger="graft",
        reasons=["too soon", "loss too high"],
    ),
    MetricsObserved(**ENVELOPE, layer=1, metrics={"loss": 0.25, "share": 0.0}),
    DecisionMade(
        **ENVELOPE,
        entity="expert-3",
        action=Action.SPLIT,
        layer=1,
        parent="expert-3",
        children=["expert-3a", "expert-3b"],
        reason="overloaded",
        metrics_at_decision={"share": 0.4},
        config_snapshot={"patience": 3},
        apply_at_step=41,
        seed=12345,
    ),
    StepSealed(**ENVELOPE),
    ActionsVerified(**ENVELOPE, digest="0123456789abcdef", world_size=4),
    DivergenceDetected(
        **ENVELOPE, digests={"0": "0123456789abcdef", "1": "0123456789abcdee"}, ranks=[1], repaired=True
    ),
    CheckpointSaved(
        **ENVELOPE, checkpoint_id="ckpt-40", path="runs/run-1/ckpt-40.pt", sha256="ab" * 32, upto_seq=120
    ),
    CheckpointRestored(
        **ENVELOPE, checkpoint_id="ckpt-40", path="runs/run-1/ckpt-40.pt", sha256="ab" * 32, upto_seq=120
    ),
    CheckpointRecorded(
        **ENVELOPE,
        action="archive",
        checkpoint_id="layer1_seed0_1706115234567_0a1b2c3d",
        layer=1,
        seed=0,
        priority="high",
        path="ckpt/archive/layer1_seed0_1706115234567_0a1b2c3d.pt",
        sha256="cd" * 32,
        reason="over the 5 kept for layer 1, seed 0",
    ),
    RewardRecorded(**ENVELOPE, entity="seed-1", reward=-1.0, components={"host_regression": -2.0}),
]
KIND_IDS = [type(e).__name__ for e in SAMPLES]


def test_there_is_a_sample_of_every_event_kind() -> None:
    """The round-trip samples cover every kind of the event union, once each."""
    assert sorted(KIND_IDS) == sorted(t.__name__ for t in EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=KIND_IDS)
def test_a_record_is_one_flat_mapping_with_schema(event: EventBase) -> None:
    """A record holds envelope and payload side by side, the version under `schema`."""
    record = CODEC.to_record(event)
    fields = {"schema" if name == "schema_version" else name for name in type(event).model_fields}
    assert set(record) == fields
    assert record["kind"] == type(event).__name__
    assert record["schema"] == 1
    assert not any(isinstance(v, pydantic.BaseModel) for v in record.values())
    assert json.loads(json.dumps(record)) == record  # plain values only


@pytest.mark.parametrize("event", SAMPLES, ids=KIND_IDS)
def test_every_kind_round_trips_on_the_validated_and_the_trusted_path(event: EventBase) -> None:
    """Decoding a record, directly or after JSON, validated or trusted, gives the event back."""
    record = CODEC.to_record(event)
    from_json = json.loads(json.dumps(record))
    for source in (record, from_json):
        for trusted in (False, True):
            decoded = CODEC.from_record(source, trusted=trusted)
            assert type(decoded) is type(event)
            assert decoded == event
            assert CODEC.to_record(decoded) == record
    assert CODEC.from_record({**record, "step": 41}) != event


def test_the_trusted_path_still_checks_kind_and_schema() -> None:
    """trusted=True skips field validation, never the kind and schema checks."""
    record = CODEC.to_record(StepSealed(run_id="r"))
    with pytest.raises(SchemaError, match="unknown kind 'Nope'"):
        CODEC.from_record({**record, "kind": "Nope"}, trusted=True)
    with pytest.raises(SchemaError, match="schema 5 is newer"):
        CODEC.from_record({**record, "schema": 5}, trusted=True)


# -- schema versions and upcasters ---------------------------------------------------------------


class Widget(EventBase):
    """A test kind at schema 3: v1 had `size_mm` and `color`, v2 `size_cm` and `color`."""

    SCHEMA: ClassVar[int] = 3
    kind: Literal["Widget"] = "Widget"
    size_cm: int
    colour: str


def widget_codec(calls: list[int], *, second: bool = True) -> Codec:
    """A codec for the built-in kinds plus Widget, whose upcasters log their version in `calls`."""

    def mm_to_cm(record: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        record["size_cm"] = record.pop("size_mm") // 10
        return record

    def color_to_colour(record: dict[str, Any]) -> dict[str, Any]:
        calls.append(2)
        record["colour"] = record.pop("color")
        return record

    codec = Codec([*EVENT_TYPES, Widget], upcasters={("Widget", 1): mm_to_cm})
    if second:
        codec.register_upcaster("Widget", 2, color_to_colour)
    return codec


V1 = {
    "kind": "Widget",
    "run_id": "r",
    "event_id": CAUSE,
    "seq": 5,
    "schema": 1,
    "ts": 1.0,
    "size_mm": 120,
    "color": "red",
}
V2 = {**V1, "schema": 2, "size_cm": 12, "color": "red"}
del V2["size_mm"]


def test_upcasters_run_in_a_chain_from_the_records_version_to_the_current_one() -> None:
    """A v1 record goes through 1->2 then 2->3; a v2 record only through 2->3."""
    calls: list[int] = []
    codec = widget_codec(calls)
    lifted = codec.upcast(V1)
    assert calls == [1, 2]
    assert lifted == {
        "kind": "Widget",
        "run_id": "r",
        "event_id": CAUSE,
        "seq": 5,
        "schema": 3,
        "ts": 1.0,
        "size_cm": 12,
        "colour": "red",
    }
    calls.clear()
    assert codec.upcast(V2) == lifted
    assert calls == [2]
    assert V1["size_mm"] == 120 and "size_cm" not in V1  # the caller's record is untouched


def test_a_decoded_old_record_equals_the_current_event() -> None:
    """Upcast v1 decodes, validated and trusted, to the Widget at schema 3 with the lifted fields."""
    codec = widget_codec([])
    expected = Widget(run_id="r", event_id=CAUSE, seq=5, ts=1.0, size_cm=12, colour="red")
    assert expected.schema_version == 3
    assert codec.from_record(V1) == expected
    assert codec.from_record(V1, trusted=True) == expected


def test_a_current_event_is_written_at_its_kinds_schema_and_needs_no_upcast() -> None:
    """A Widget built now is stored as schema 3, validated or trusted, and reads back as is."""
    calls: list[int] = []
    codec = widget_codec(calls)
    for widget in (
        Widget(run_id="r", size_cm=3, colour="blue"),
        Widget.trusted(run_id="r", size_cm=3, colour="blue"),
    ):
        record = codec.to_record(widget)
        assert record["schema"] == 3
        assert codec.from_record(record) == widget
    assert calls == []


def test_a_missing_upcaster_is_a_schema_error_naming_the_version() -> None:
    """Without an upcaster from 2 to 3, a v1 record stops after its first lift with a SchemaError."""
    calls: list[int] = []
    codec = widget_codec(calls, second=False)
    with pytest.raises(SchemaError) as caught:
        codec.from_record(V1)
    assert calls == [1]
    assert str(caught.value) == "record seq 5 (kind 'Widget'): no upcaster from schema 2"


def test_registering_an_upcaster_for_an_unknown_kind_is_a_schema_error() -> None:
    """register_upcaster refuses a kind the codec does not hold."""
    with pytest.raises(SchemaError, match="cannot register an upcaster for unknown kind 'Gadget'"):
        Codec().register_upcaster("Gadget", 1, lambda record: record)


def test_the_default_codec_does_not_know_test_kinds() -> None:
    """Kinds are given to a codec explicitly; defining an event class registers nothing."""
    record = Widget(run_id="r", size_cm=1, colour="c")
    with pytest.raises(SchemaError, match="unknown kind 'Widget'"):
        CODEC.from_record(CODEC.to_record(record))


# -- immutability and event ids ------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        SAMPLES[4],
        TransitionApplied.trusted(run_id="r", entity="e", from_state="a", to_state="b", trigger="t"),
    ],
    ids=["validated", "trusted"],
)
def test_events_are_frozen(event: EventBase) -> None:
    """Assigning to an event's field, or adding one, raises; the event is unchanged."""
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        event.step = 99  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        event.extra_field = 1  # type: ignore[attr-defined]
    assert event.step != 99


def assert_valid_ids(ids: list[str]) -> None:
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical lowercase 8-4-4-4-12
        assert parsed.variant == uuid.RFC_4122


def test_event_ids_are_unique_canonical_uuid_text() -> None:
    """Ids minted by validated and trusted construction are valid UUID text, all distinct."""
    ids = [StepSealed(run_id="r").event_id for _ in range(5_000)]
    ids += [StepSealed.trusted(run_id="r").event_id for _ in range(5_000)]
    assert_valid_ids(ids)
    assert len(set(ids)) == len(ids)


def _mint(n: int) -> list[str]:
    return [new_event_id() for _ in range(n)]


def _mint_into(conn: Any, n: int) -> None:
    conn.send(_mint(n))
    conn.close()


def test_event_ids_stay_distinct_across_forked_processes() -> None:
    """Two children forked from one parent mint ids that neither the parent nor each other mint."""
    parent_before = _mint(10)  # the parent's counter has moved before the fork
    ctx = multiprocessing.get_context("fork")
    children = []
    for _ in range(2):
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_mint_into, args=(send, 1_000))
        child.start()
        send.close()
        children.append((child, receive))
    batches = [parent_before + _mint(1_000)]
    for child, receive in children:
        batches.append(receive.recv())
        child.join()
        assert child.exitcode == 0
    for batch in batches:
        assert_valid_ids(batch)
    everything = [i for batch in batches for i in batch]
    assert len(set(everything)) == len(everything)


# -- the version an event at a newer SCHEMA writes -----------------------------------------------


class Hooked(EventBase):
    """A kind at schema 2 with its own post-init hook, which counts its calls."""

    SCHEMA: ClassVar[int] = 2
    kind: Literal["Hooked"] = "Hooked"
    calls: ClassVar[list[str]] = []

    def model_post_init(self, context: Any, /) -> None:
        type(self).calls.append(self.run_id)


class HookedChild(Hooked):
    """A subclass at the same schema: the parent's hook, once."""


class Plain(EventBase):
    """A schema-1 kind with a hook of its own."""

    kind: Literal["Plain"] = "Plain"
    seen: ClassVar[list[int]] = []

    def model_post_init(self, context: Any, /) -> None:
        Plain.seen.append(self.schema_version)


class PlainLater(Plain):
    """A subclass of a schema-1 kind that moves to schema 3 and inherits the hook."""

    SCHEMA: ClassVar[int] = 3


def test_a_kind_at_a_newer_schema_writes_it_and_keeps_its_own_post_init_hook() -> None:
    """Built without a version, an event of a kind at SCHEMA > 1 carries that SCHEMA, built or
    validated; an explicit version is kept; the kind's own hook, or its parent's, still runs once
    per event, and sees the version already written."""
    Hooked.calls.clear()
    assert Hooked(run_id="a").schema_version == 2
    assert Hooked.model_validate({"run_id": "b"}).schema_version == 2
    assert Hooked.model_validate({"run_id": "c", "schema": 1}).schema_version == 1
    assert Hooked.calls == ["a", "b", "c"]
    assert HookedChild(run_id="d").schema_version == 2
    assert Hooked.calls == ["a", "b", "c", "d"]
    Plain.seen.clear()
    assert Plain(run_id="e").schema_version == 1
    assert PlainLater(run_id="f").schema_version == 3
    assert Plain.seen == [1, 3]

"""The codec refuses records whose fields hold the wrong JSON type, on the trusted path too."""

from __future__ import annotations

from typing import Any

import pytest

from lifecycle_es import CODEC, SchemaError

STEP = {"seq": 4, "run_id": "r", "kind": "StepSealed", "step": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": "3"}, "step must be a int, got str"),
        ({"kind": ["StepSealed"]}, "unknown kind ['StepSealed']"),
        ({"kind": "MetricsObserved", "entity": "x", "metrics": [1, 2]}, "metrics must be a dict, got list"),
        (
            {"kind": "EntityRegistered", "entity": "x", "spec": "s", "state": "A", "attrs": [1]},
            "attrs must be a dict",
        ),
        ({"rank": 1.5}, "rank must be a int, got float"),
        ({"entity": 7}, "entity must be a str, got int"),
    ],
)
def test_a_wrongly_typed_field_is_a_schema_error_on_every_path(change: dict[str, Any], message: str) -> None:
    """check (the trusted fold path) and from_record (trusted or not) raise SchemaError
    naming the field, never a TypeError or KeyError."""
    record = {**STEP, **change}
    for decode in (CODEC.check, CODEC.from_record, lambda r: CODEC.from_record(r, trusted=True)):
        with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
            decode(record)


def test_a_well_typed_record_passes_unchanged() -> None:
    """A record whose fields have the right types comes back from check as it is."""
    assert CODEC.check(STEP) is STEP

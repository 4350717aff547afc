"""`Log.append(plain=True)`: records handed over without the checking copy read back as the
checked append's do, the size limit still holds, and `Lifecycle` hands over only plain values."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from bus import JsonlLog, Log, MemoryLog, RecordTooLargeError
from lifecycle_es import InvalidTransitionError, Lifecycle
from lifecycle_es.events import Action, DecisionMade

RECORDS: list[dict[str, Any]] = [
    {"event_id": "a", "kind": "X", "n": 1, "x": 0.5, "ok": True, "none": None},
    {"event_id": "b", "kind": "Y", "nested": {"list": [1, "two", {"three": 3.0}]}},
]


def _logs(tmp_path: Path) -> list[tuple[Log, Log]]:
    return [
        (MemoryLog("checked"), MemoryLog("plain")),
        (JsonlLog(tmp_path, "checked"), JsonlLog(tmp_path, "plain")),
    ]


def test_handed_over_records_read_back_as_checked_ones_do(tmp_path: Path) -> None:
    """On memory and JSONL logs, a plain append stores exactly what the checked append stores."""
    for checked, plain in _logs(tmp_path):
        with checked, plain:
            checked.append([dict(r) for r in RECORDS], expected_seq=0)
            plain.append([dict(r) for r in RECORDS], expected_seq=0, plain=True)
            assert plain.read() == checked.read() == [{"seq": i, **r} for i, r in enumerate(RECORDS, 1)]


def test_a_handed_over_record_over_the_size_limit_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    """The size check stays on the plain path: an oversize record raises before anything is stored."""
    for _, plain in _logs(tmp_path):
        with plain:
            plain.max_record_bytes = 64
            with pytest.raises(RecordTooLargeError):
                plain.append([{"kind": "X"}, {"kind": "X", "text": "x" * 100}], plain=True)
            assert plain.last_seq() == 0


def test_records_that_each_fit_are_stored_though_the_batch_together_passes_the_limit() -> None:
    """The limit is per record: a memory log measures the batch at once only to skip measuring
    each record, and a batch over the limit whose records all fit is stored whole."""
    log = MemoryLog("plain", max_record_bytes=64)
    batch = [{"kind": "X", "text": "x" * 40} for _ in range(3)]
    assert log.append([dict(r) for r in batch], plain=True) == 1
    assert [r["text"] for r in log.read()] == [r["text"] for r in batch]
    with pytest.raises(RecordTooLargeError, match="record 1 of the batch"):
        log.append([{"kind": "X"}, {"kind": "X", "text": "x" * 100}], plain=True)
    assert log.last_seq() == 3


def test_the_lifecycle_hands_over_plain_values_only() -> None:
    """Enum fields reach a memory log as plain str, as a JSON or Redis log gives them back."""
    lc = Lifecycle()
    lc.register("seed", "kasmina")
    lc.transition("seed", "GERMINATED")
    lc.transition("seed", "TRAINING")
    with contextlib.suppress(InvalidTransitionError):  # refused or not, its gate checks are recorded
        lc.transition("seed", "GRAFTING", metrics={"reconstruction_loss": 0.5})
    lc.append([DecisionMade(run_id=lc.run_id, action=Action.SPAWN, entity="seed")])
    records = lc.log.read()
    gate = next(r for r in records if r["kind"] == "GateChecked")
    decision = records[-1]
    assert type(gate["category"]) is str and type(gate["mode"]) is str
    assert type(decision["action"]) is str and decision["action"] == "SPAWN"

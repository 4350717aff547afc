"""The typed line decode of the trusted replay path (`Codec.decode_lines`, `JsonlLog.read_lines`):
it gives the records a plain parse gives, declines what it does not check as `Codec.check` does
(and the runner then parses and checks those lines), and a damaged log is refused with the same
error class by the trusted and the validated path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _runs import three_seeds  # a sibling module

from bus import CorruptLogError, InvalidArgumentError, JsonlLog
from lifecycle_es import (
    CODEC,
    InconsistentEventError,
    Lifecycle,
    SchemaError,
    SequenceGapError,
)
from lifecycle_es.registry import Registry, fold_lines
from lifecycle_es.specs import BUILTIN_SPECS
from projections import MetricsProjection, RegistryProjection, Runner, StateTensors

Record = dict[str, Any]
RUN = "typed"


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    """A short run of three seeds written by the real Lifecycle (batches of several records)."""
    with JsonlLog(tmp_path_factory.mktemp("run"), RUN) as log:
        lc = Lifecycle(log)
        three_seeds(lc)
        return log.read()


def _write(directory: Path, records: list[Record]) -> JsonlLog:
    """The records in a fresh log, appended in batches of five (a batch's first line holds its marker)."""
    log = JsonlLog(directory, RUN)
    for start in range(0, len(records), 5):
        log.append(records[start : start + 5])
    return log


def _replay(log: JsonlLog, *, validate: bool) -> tuple[RegistryProjection, StateTensors]:
    registry, tensors = RegistryProjection(BUILTIN_SPECS), StateTensors(BUILTIN_SPECS)
    Runner(log, [registry, tensors], validate=validate, batch_size=7).catch_up()
    return registry, tensors


def test_the_typed_decode_gives_the_records_of_a_plain_parse(records: list[Record], tmp_path: Path) -> None:
    """Decoding a log's lines typed gives, record for record, what reading the log gives."""
    with _write(tmp_path, records) as log:
        text, count = log.read_lines(0)
        assert text.count(f'"{log.BATCH_KEY}"'.encode()) > 3  # the bus's, not the records'
        assert count == len(records) > 20
        assert CODEC.decode_lines(text, 1, count) is None  # a key no record holds
        assert CODEC.decode_lines(text, 1, count, ignore=log.BATCH_KEY) == log.read()


def test_read_lines_continues_where_the_previous_read_stopped(records: list[Record], tmp_path: Path) -> None:
    """Pages of lines read one after another hold the log's records in order, none twice."""
    with _write(tmp_path, records) as log:
        decoded: list[Record] = []
        while True:
            text, count = log.read_lines(len(decoded), 5)
            if not count:
                break
            decoded += CODEC.decode_lines(text, len(decoded) + 1, count, ignore=log.BATCH_KEY) or []
        assert decoded == records


def _drop_optional(r: list[Record]) -> None:
    del r[_first(r, "TransitionApplied")]["causation"]


def _int_timestamp(r: list[Record]) -> None:
    r[_first(r, "MetricsObserved")]["ts"] = 1_700_000_000


@pytest.mark.parametrize(
    ("change", "typed"),
    [(_drop_optional, False), (_int_timestamp, True)],
    ids=["absent optional field", "int for a float"],
)
def test_lines_the_typed_decode_declines_still_replay_like_the_validated_path(
    records: list[Record], tmp_path: Path, change: Callable[[list[Record]], None], typed: bool
) -> None:
    """A record `Codec.check` admits replays on the trusted path as on the validated one, whether
    the typed decode takes its line or leaves it to the parse-and-check path."""
    changed = [dict(r) for r in records]
    change(changed)
    with _write(tmp_path, changed) as log:
        text, count = log.read_lines(0)
        assert (CODEC.decode_lines(text, 1, count, ignore=log.BATCH_KEY) is not None) is typed
        fast_registry, fast_tensors = _replay(log, validate=False)
        slow_registry, slow_tensors = _replay(log, validate=True)
    assert fast_registry.registry == slow_registry.registry
    assert fast_registry.seq == len(records)
    for name in ("state", "history", "metrics", "state_keys"):
        assert torch.equal(getattr(fast_tensors, name), getattr(slow_tensors, name)), name


def _first(records: list[Record], kind: str) -> int:
    return next(i for i, r in enumerate(records) if r["kind"] == kind)


def _set(kind: str, field: str, value: Any) -> Callable[[list[Record]], None]:
    def change(r: list[Record]) -> None:
        r[_first(r, kind)][field] = value

    return change


RECORD_DAMAGE = {
    "unknown kind": _set("TransitionApplied", "kind", "TransitionTeleported"),
    "kind not a string": _set("TransitionApplied", "kind", 7),
    "bool for an int": _set("MetricsObserved", "step", True),
    "string for a float": _set("MetricsObserved", "ts", "noon"),
    "list for a string": _set("EntityRegistered", "spec", ["kasmina"]),
    "null in a folded float map": _set("MetricsObserved", "metrics", {"loss": None}),
    "null for a required map": _set("MetricsObserved", "metrics", None),
}


@pytest.mark.parametrize("damage", RECORD_DAMAGE)
def test_a_badly_typed_record_is_a_schema_error_on_both_paths(
    records: list[Record], tmp_path: Path, damage: str
) -> None:
    """A record of an unknown kind or with a wrongly typed field is a SchemaError on both paths,
    and the typed decode declines its page."""
    changed = [dict(r) for r in records]
    RECORD_DAMAGE[damage](changed)
    with _write(tmp_path, changed) as log:
        text, count = log.read_lines(0)
        assert CODEC.decode_lines(text, 1, count, ignore=log.BATCH_KEY) is None
        for validate in (False, True):
            with pytest.raises(SchemaError):
                _replay(log, validate=validate)


def _two_records_on_a_line(lines: list[bytes]) -> None:
    lines[4] = lines[4] + lines[5]
    del lines[5]


def _truncated(lines: list[bytes]) -> None:
    lines[6] = lines[6][:25]


def _repeated_seq(lines: list[bytes]) -> None:
    lines[7] = lines[6]


LINE_DAMAGE = {
    "two records on a line": _two_records_on_a_line,
    "truncated line": _truncated,
    "repeated seq": _repeated_seq,
}


@pytest.mark.parametrize("damage", LINE_DAMAGE)
def test_a_damaged_line_is_a_corrupt_log_error_on_both_paths(
    records: list[Record], tmp_path: Path, damage: str
) -> None:
    """A line that is not one whole record with the next seq is a CorruptLogError on both paths
    (when the log is opened, or when the line is read)."""
    _write(tmp_path, records).close()
    path = tmp_path / f"{RUN}.jsonl"
    lines = path.read_bytes().split(b"\n")
    LINE_DAMAGE[damage](lines)
    path.write_bytes(b"\n".join(lines))
    for validate in (False, True):
        with pytest.raises(CorruptLogError), JsonlLog(tmp_path, RUN, readonly=True) as log:
            _replay(log, validate=validate)


def test_a_lenient_log_refuses_to_hand_out_raw_lines(records: list[Record], tmp_path: Path) -> None:
    """`read_lines` of a lenient log is an InvalidArgumentError (it skips bad lines record by
    record), and the runner replays such a log through its records."""
    _write(tmp_path, records).close()
    with JsonlLog(tmp_path, RUN, lenient=True, readonly=True) as log:
        with pytest.raises(InvalidArgumentError):
            log.read_lines(0)
        registry, _ = _replay(log, validate=False)
    assert registry.seq == len(records)


def _tensors_equal(a: StateTensors, b: StateTensors) -> bool:
    return all(
        torch.equal(getattr(a, n), getattr(b, n)) for n in ("state", "history", "metrics", "state_keys")
    )


def test_an_inconsistent_line_is_refused_as_on_the_validated_path(
    records: list[Record], tmp_path: Path
) -> None:
    """A well-shaped line the registry cannot apply (a move from a state the entity is not in) is
    an InconsistentEventError on the typed path too, with the registry at the line before it."""
    changed = [dict(r) for r in records]
    at = next(i for i, r in enumerate(changed) if r["kind"] == "TransitionApplied" and i > 10)
    changed[at]["from_state"] = "FOSSILIZED"
    with _write(tmp_path, changed) as log:
        text, count = log.read_lines(0)
        assert CODEC.decode_typed_lines(text, 1, count, ignore=log.BATCH_KEY) is not None
        registries = []
        for validate in (False, True):
            registry = RegistryProjection(BUILTIN_SPECS)
            with pytest.raises(InconsistentEventError):
                Runner(log, [registry], validate=validate, batch_size=7).catch_up()
            registries.append(registry)
    fast, slow = registries
    assert fast.seq == slow.seq == at
    assert fast.registry == slow.registry


def test_projections_at_other_seqs_and_record_readers_replay_typed_lines_alike(
    records: list[Record], tmp_path: Path
) -> None:
    """Pages of typed lines reach a projection ahead of the page (part applied) and one that
    reads records rather than lines (`MetricsProjection`) as the validated path's records do."""
    with _write(tmp_path, records) as log:
        ahead = RegistryProjection(BUILTIN_SPECS)
        ahead.apply(log.read(limit=10))
        fast = (ahead, StateTensors(BUILTIN_SPECS), MetricsProjection())
        slow = (RegistryProjection(BUILTIN_SPECS), StateTensors(BUILTIN_SPECS), MetricsProjection())
        Runner(log, fast, batch_size=7).catch_up()
        Runner(log, slow, batch_size=7, validate=True).catch_up()
    assert fast[0].registry == slow[0].registry
    assert _tensors_equal(fast[1], slow[1])
    assert fast[2].snapshot() == slow[2].snapshot()
    assert fast[2].seq == len(records)


def test_a_page_of_typed_lines_that_does_not_follow_on_is_a_gap(
    records: list[Record], tmp_path: Path
) -> None:
    """Folding a page of typed lines that starts past the registry's next seq is a
    SequenceGapError, and leaves the registry as it was."""
    with _write(tmp_path, records) as log:
        text, count = log.read_lines(3, 5)
        lines = CODEC.decode_typed_lines(text, 4, count, ignore=log.BATCH_KEY)
    assert lines is not None
    registry = Registry(BUILTIN_SPECS)
    with pytest.raises(SequenceGapError):
        fold_lines(registry, lines)
    assert registry == Registry(BUILTIN_SPECS)

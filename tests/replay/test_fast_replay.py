"""The trusted replay path against the validated one: equal state on demo logs, the same refusals.

The trusted path (`Runner`'s default) checks each record's kind, schema and shape and folds it
as read; the validated path (`Runner(validate=True)`) decodes every record through its pydantic
model first. On the logs the demos write both must build the same registry and state tensors,
and on a damaged log both must refuse with the same error class.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import bus
from bus import CorruptLogError, JsonlLog
from lifecycle_es import SchemaError
from lifecycle_es.specs import BUILTIN_SPECS
from projections import RegistryProjection, Runner, StateTensors
from replay.demo import DemoOptions, DemoRun
from replay.demo.seeds import SeedsOptions, SeedsRun
from tests._expert_actions import install

Record = dict[str, Any]
RUN = "fast"


def _moe(directory: Path) -> list[Record]:
    """A short MoE demo whose decisions come from the seeded decider (the same on any machine)."""
    with bus.open(f"jsonl://{directory}", RUN) as log:
        demo = DemoRun(DemoOptions(steps=200), log)
        install(demo, every=20)
        demo.run()
        return log.read()


def _seeds(directory: Path) -> list[Record]:
    """A short seeds demo with the always-advancing policy, so seeds move through their spec."""
    with bus.open(f"jsonl://{directory}", RUN) as log:
        SeedsRun(SeedsOptions(controller="policy", steps=300), log).run()
        return log.read()


@pytest.fixture(scope="module", params=["moe", "seeds"])
def demo_log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    """The records of a demo run written to a JSONL log."""
    torch.set_num_threads(1)
    make: Callable[[Path], list[Record]] = _moe if request.param == "moe" else _seeds
    return make(tmp_path_factory.mktemp(request.param))


def _replay(log: bus.Log, *, validate: bool) -> tuple[RegistryProjection, StateTensors]:
    registry, tensors = RegistryProjection(BUILTIN_SPECS), StateTensors(BUILTIN_SPECS)
    Runner(log, [registry, tensors], validate=validate, batch_size=97).catch_up()
    return registry, tensors


def _write(directory: Path, records: list[Record]) -> JsonlLog:
    log = JsonlLog(directory, RUN)
    log.append(records)
    return log


def test_the_trusted_path_builds_the_validated_paths_registry_and_tensors(
    demo_log: list[Record], tmp_path: Path
) -> None:
    """On a demo's log, trusted and validated replays give equal registries and equal tensors."""
    with _write(tmp_path, demo_log) as log:
        fast_registry, fast_tensors = _replay(log, validate=False)
        slow_registry, slow_tensors = _replay(log, validate=True)
    assert fast_registry.seq == len(demo_log) > 100
    assert fast_registry.registry == slow_registry.registry
    assert len(fast_registry.registry) > 0
    assert fast_tensors.entities() == slow_tensors.entities()
    for name in ("state", "history", "metrics", "state_keys"):
        assert torch.equal(getattr(fast_tensors, name), getattr(slow_tensors, name)), name


def _first(records: list[Record], kind: str) -> int:
    return next(i for i, r in enumerate(records) if r["kind"] == kind)


def _unknown_kind(r: list[Record]) -> None:
    r[_first(r, "TransitionApplied")]["kind"] = "TransitionTeleported"


def _missing_field(r: list[Record]) -> None:
    del r[_first(r, "TransitionApplied")]["trigger"]  # a field no fold reads


def _unknown_field(r: list[Record]) -> None:
    r[_first(r, "TransitionApplied")]["surprise"] = 1


def _wrong_type(r: list[Record]) -> None:
    r[_first(r, "TransitionApplied")]["to_state"] = 5


def _wrong_metric_type(r: list[Record]) -> None:
    r[_first(r, "MetricsObserved")]["metrics"] = {"loss": "low"}


def _newer_schema(r: list[Record]) -> None:
    r[_first(r, "TransitionApplied")]["schema"] = 99


DAMAGE = {
    "unknown kind": _unknown_kind,
    "missing field": _missing_field,
    "unknown field": _unknown_field,
    "wrong type": _wrong_type,
    "wrong metric type": _wrong_metric_type,
    "newer schema": _newer_schema,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_record_is_refused_by_both_paths_with_the_same_error(
    demo_log: list[Record], damage: str, tmp_path: Path
) -> None:
    """A record with a bad kind, field set, type or schema is a SchemaError on both paths."""
    records = [dict(r) for r in demo_log]
    DAMAGE[damage](records)
    with _write(tmp_path, records) as log:
        for validate in (False, True):
            with pytest.raises(SchemaError):
                _replay(log, validate=validate)


def test_a_truncated_line_is_refused_by_both_paths_with_the_same_error(
    demo_log: list[Record], tmp_path: Path
) -> None:
    """A line cut short in the middle of the log is a CorruptLogError on both paths."""
    _write(tmp_path, demo_log).close()
    path = tmp_path / f"{RUN}.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[len(lines) // 2] = lines[len(lines) // 2][:40]
    path.write_bytes(b"\n".join(lines))
    with JsonlLog(tmp_path, RUN, readonly=True) as log:
        for validate in (False, True):
            with pytest.raises(CorruptLogError):
                _replay(log, validate=validate)

"""The expert coordinator's gate checks in their old single form, for tests and benchmarks.

Before `GatesChecked`, the coordinator recorded one `GateChecked` per gate per attempt, each
with the full envelope. `single_form()` puts that writer back for the length of a `with`
block, so a test can record an old-form log with today's code; `old_form()` also records the
metrics at full precision, as the log-volume benchmark's "before"; `expand` rewrites a compact
record into the single records it stands for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from unittest import mock

from lifecycle_es import CODEC, GateCategory, GateChecked, GateMode
from lifecycle_es.controllers import expert as coordinator_module
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.events import gate_results


def _single_checks(self: Batch, entity: str, from_state: str, to_state: str, checks: Iterable[Check]) -> bool:
    passed = True
    for check in checks:
        self.add(
            GateChecked.trusted(
                **self.attempt(entity, from_state, to_state),
                gate=check.gate,
                category=check.category,
                passed=check.passed,
                blocking=True,
                reason=check.reason,
                observed={k: float(v) for k, v in check.observed.items()},
                thresholds={k: float(v) for k, v in check.thresholds.items()},
                mode=GateMode.STRICT,
            )
        )
        passed = passed and check.passed
    return passed


@contextmanager
def single_form() -> Iterator[None]:
    """Within the block, the coordinator records one `GateChecked` per gate, as it used to."""
    with mock.patch.object(Batch, "checks", _single_checks):
        yield


def _unrounded(values: Mapping[str, float], digits: int) -> dict[str, float]:
    return dict(values)


@contextmanager
def old_form() -> Iterator[None]:
    """Within the block, the coordinator writes as before issue 18: one `GateChecked` per gate,
    and its metric observations at full float precision with both halves of each pair metric."""
    with (
        single_form(),
        mock.patch.object(coordinator_module, "rounded_all", _unrounded),
        mock.patch.object(coordinator_module, "_pairs_once", dict),
    ):
        yield


def expand(record: Mapping[str, Any], categories: Mapping[str, str]) -> list[dict[str, Any]]:
    """The single-form records a `GatesChecked` record stands for (seq 0; renumber them), or
    the record itself for any other kind. `categories` gives each gate's category by name."""
    if record["kind"] != "GatesChecked":
        return [dict(record)]
    return [
        CODEC.to_record(
            GateChecked(
                run_id=record["run_id"],
                step=record["step"],
                rank=record["rank"],
                entity=record["entity"],
                from_state=record["from_state"],
                to_state=record["to_state"],
                gate=outcome.gate,
                category=GateCategory(categories.get(outcome.gate, GateCategory.STRUCTURAL)),
                passed=outcome.passed,
                reason=outcome.reason,
                observed=outcome.observed,
                thresholds=outcome.thresholds,
            )
        )
        for outcome in gate_results(record)
    ]


def renumbered(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records with seqs 1, 2, 3, ... in order, ready to append to an empty log."""
    return [{**r, "seq": n} for n, r in enumerate(records, start=1)]

"""Both forms of a gate check read alike: one `GateChecked` per gate (old logs) and one
`GatesChecked` per attempt (what the coordinator writes now), alone or mixed in one log.

Two 300-step demo runs are recorded, one with the coordinator's old single-form writer
(`tests._gate_forms.single_form`) and one with today's; a third log is the compact run with
the gate checks of its first half rewritten into the single form. Every reader must give
the same answers on all three.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import bus
from lifecycle_es import CODEC, Registry
from lifecycle_es.controllers import CHECKPOINT_STEP, ExpertCoordinatorConfig
from lifecycle_es.events import GateOutcome, gate_results
from projections.metrics import MetricsProjection
from replay import decision_lines, gate_pass_rates, replay, what_if
from replay._controllers import ExpertCoordinatorKind
from replay._tail import Printer
from replay.demo import DemoOptions, DemoRun
from tests._gate_forms import expand, renumbered, single_form

RUN = "gate-forms"
STEPS = 300
_IDS = ("event_id", "ts", "seq", "causation")


def _train(directory: Path) -> list[dict[str, Any]]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with bus.open(f"jsonl://{directory}", RUN) as log:
            DemoRun(DemoOptions(steps=STEPS), log).run()
            return log.read()
    finally:
        torch.set_num_threads(before)


def _write(directory: Path, records: list[dict[str, Any]]) -> bus.Log:
    log = bus.open(f"jsonl://{directory}", RUN)
    log.append([{k: v for k, v in r.items() if k != "seq"} for r in records])
    return log


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The single-form run, the compact run, and the compact run half rewritten (`mixed`)."""
    with single_form():
        single = _train(tmp_path_factory.mktemp("single"))
    compact = _train(tmp_path_factory.mktemp("compact"))
    categories = {r["gate"]: r["category"] for r in single if r["kind"] == "GateChecked"}
    middle = STEPS // 2
    mixed = renumbered(
        rewritten for r in compact for rewritten in (expand(r, categories) if r["step"] <= middle else [r])
    )
    return {"single": single, "compact": compact, "mixed": mixed}


@pytest.fixture(scope="module")
def opened(
    logs: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bus.Log]:
    """Each of the three logs on a JSONL file of its own."""
    return {name: _write(tmp_path_factory.mktemp(name), records) for name, records in logs.items()}


def _kinds(records: list[dict[str, Any]]) -> set[str]:
    return {r["kind"] for r in records if "Gate" in r["kind"]}


def _decisions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in _IDS} for r in records if r["kind"] == "DecisionMade"]


def test_the_logs_hold_the_forms_they_should(logs: dict[str, list[dict[str, Any]]]) -> None:
    """The old writer writes only `GateChecked`, today's only `GatesChecked`, the mixed log both."""
    assert _kinds(logs["single"]) == {"GateChecked"}
    assert _kinds(logs["compact"]) == {"GatesChecked"}
    assert _kinds(logs["mixed"]) == {"GateChecked", "GatesChecked"}


def test_the_compact_form_changes_no_decision(logs: dict[str, list[dict[str, Any]]]) -> None:
    """The demo decides the same with either writer (ids and timestamps aside), and some."""
    assert _decisions(logs["compact"]) == _decisions(logs["single"])
    assert _decisions(logs["compact"])


def _flat(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (r["step"], r["entity"], r["from_state"], r["to_state"], o) for r in records for o in gate_results(r)
    ]


def test_every_gate_check_is_kept_in_order(logs: dict[str, list[dict[str, Any]]]) -> None:
    """The compact log holds each check the old one did, in order, with the same verdict."""

    def verdicts(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(*where, o.gate, o.passed) for *where, o in _flat(records)]

    assert verdicts(logs["compact"]) == verdicts(logs["single"]) == verdicts(logs["mixed"])
    assert len(verdicts(logs["single"])) > len([r for r in logs["compact"] if r["kind"] == "GatesChecked"])


def test_a_compact_check_keeps_its_evidence_and_a_failed_one_its_reason(
    logs: dict[str, list[dict[str, Any]]],
) -> None:
    """Each compact check has the old one's observed values to 4 significant digits; a failed
    check also its thresholds and reason, a passed one neither (they are the run's settings)."""
    pairs = list(zip(_flat(logs["single"]), _flat(logs["compact"]), strict=True))
    for (*_, old), (*_, new) in pairs:
        assert new.observed == {k: float(f"{v:.4g}") for k, v in old.observed.items()}
        if new.passed:
            assert (new.thresholds, new.reason) == ({}, "")
        else:
            assert (new.thresholds, new.reason) == (old.thresholds, old.reason) != ({}, "")
    assert {new.passed for _, (*_, new) in pairs} == {True, False}  # both kinds were checked


def test_every_record_of_either_form_decodes(logs: dict[str, list[dict[str, Any]]]) -> None:
    """The codec validates both kinds, and a compact record survives a round trip unchanged."""
    for record in logs["mixed"]:
        event = CODEC.from_record(record)
        assert json.loads(json.dumps(CODEC.to_record(event))) == record


def _entities(registry: Registry) -> dict[str, Any]:
    return dict(registry.entities)


def test_the_registry_folds_alike(opened: dict[str, bus.Log]) -> None:
    """Replay reaches the same entities from every log, and the mixed log the compact one's state."""
    folded = {name: replay(log) for name, log in opened.items()}
    assert folded["mixed"].reached_end
    states = {name: _entities(r.registry.registry) for name, r in folded.items()}
    assert states["mixed"] == states["compact"] == states["single"]


def test_gate_pass_rates_and_prometheus_counters_agree(opened: dict[str, bus.Log]) -> None:
    """Gate statistics count a compact record's gates one by one, as the single records were."""
    rates = {name: gate_pass_rates(replay(log, tensors=False)) for name, log in opened.items()}
    assert rates["mixed"] == rates["compact"] == rates["single"]
    assert sum(row["checked"] for row in rates["mixed"]) > 0

    def gate_lines(log: bus.Log) -> list[str]:
        metrics = MetricsProjection()
        metrics.apply(log.read())
        return [line for line in metrics.prometheus(run=RUN).splitlines() if "lifecycle_gate_checks" in line]

    assert gate_lines(opened["mixed"]) == gate_lines(opened["single"])


def test_the_decisions_export_agrees(opened: dict[str, bus.Log]) -> None:
    """The ChronoMoE export of every log has the same lines, seqs aside."""

    def lines(log: bus.Log) -> list[dict[str, Any]]:
        return [{k: v for k, v in line.items() if k != "seq"} for line in decision_lines(log)]

    assert lines(opened["mixed"]) == lines(opened["compact"]) == lines(opened["single"])


@pytest.mark.parametrize("fmt", ["pretty", "json"])
def test_tail_shows_every_gate_of_either_form(logs: dict[str, list[dict[str, Any]]], fmt: str) -> None:
    """Tail writes one line per record; a compact record's line names each of its gates."""
    out = io.StringIO()
    printer = Printer(out, fmt=fmt, colour=False)
    for record in logs["mixed"]:
        printer.write(record)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(logs["mixed"])
    for record, line in zip(logs["mixed"], lines, strict=True):
        for outcome in gate_results(record):
            assert outcome.gate in line
            if fmt == "pretty":
                assert ("+" if outcome.passed else "-") + outcome.gate in line or record[
                    "kind"
                ] == "GateChecked"


def test_a_compact_line_marks_failures_with_their_reason(logs: dict[str, list[dict[str, Any]]]) -> None:
    """A failed gate shows as `-name (reason)`, a passed one as `+name`, after `from->to`."""
    record = next(
        r for r in logs["compact"] if r["kind"] == "GatesChecked" and not all(g[1] for g in r["gates"])
    )
    out = io.StringIO()
    Printer(out, fmt="pretty", colour=False).write(record)
    failed = next(o for o in gate_results(record) if not o.passed)
    assert f"-{failed.gate} ({failed.reason})" in out.getvalue()
    assert f" {record['from_state']}->{record['to_state']} " in out.getvalue()


def test_what_if_holds_back_both_forms(opened: dict[str, bus.Log]) -> None:
    """An unchanged what-if reproduces the decisions of every log: the recorded gate checks of
    either form are held back and replaced, none replayed beside the re-decided ones."""
    results = {name: what_if(log, {}) for name, log in opened.items()}
    for result in results.values():
        assert result.same
        assert result.skipped == 0
    assert results["mixed"].evaluations == results["single"].evaluations > 0
    counter = results["mixed"].log.read()
    assert not [r for r in counter if r["kind"] == "GateChecked"]  # the re-decided checks are compact


def test_a_passed_gate_is_stored_in_three_items_and_a_failed_one_in_five() -> None:
    """`GateOutcome.stored` leaves out empty trailing thresholds and reason, and `gate_results`
    reads every length back to the same outcome."""
    passed = GateOutcome("spawn.layer_cap", True, {"live_experts": 4})
    failed = GateOutcome("spawn.cooldown", False, {"steps_since_last": 10}, {"cooldown_steps": 50}, "soon")
    assert passed.stored() == ["spawn.layer_cap", True, {"live_experts": 4}]
    assert len(failed.stored()) == 5
    record = {"kind": "GatesChecked", "gates": [passed.stored(), failed.stored()]}
    assert list(gate_results(record)) == [passed, failed]


@pytest.mark.parametrize(
    "record",
    [
        {
            "kind": "GateChecked",
            "entity": "L0_E9",
            "gate": "spawn.free_slot",
            "passed": True,
            "observed": {"free_slot": 5.0},
            "thresholds": {"capacity": 6.0},
            "reason": "slot 5 of layer 0 is free",
        },
        {
            "kind": "GatesChecked",
            "entity": "L0_E9",
            "gates": [["spawn.free_slot", True, {"free_slot": 5, "capacity": 6}]],
        },
    ],
    ids=["threshold-before", "observed-now"],
)
def test_what_if_sizes_a_layer_by_the_capacity_either_form_recorded(record: dict[str, Any]) -> None:
    """A slot check's capacity, a threshold in older logs and observed now, gives the re-run's slots."""
    kind = ExpertCoordinatorKind()
    kind.see({"kind": "RunStarted", "config": {"lifecycle": ExpertCoordinatorConfig().snapshot()}}, None)
    layer = {"kind": "MetricsObserved", "entity": None, "layer": 0, "metrics": {CHECKPOINT_STEP: 10.0}}
    kind.see(layer, None)
    kind.see(record, "expert")
    assert kind.rerun({}).controller.capacity == {0: 6}  # not max_experts_per_layer's 16

"""`export-decisions` writes one ChronoMoE `lifecycle_decisions.jsonl` line per decision of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _trained import Trained

from replay.export import FIELDS, decision_line
from tests._cli import run_cli as _cli

RECORD = {
    "kind": "DecisionMade",
    "step": 40,
    "run_id": "r",
    "layer": 0,
    "reason": "why",
    "metrics_at_decision": {"share": 0.5},
    "config_snapshot": {"spawn_patience": 5},
    "seq": 17,
    "apply_at_step": 41,
}


@pytest.mark.parametrize(
    ("fields", "expert", "parent"),
    [
        ({"action": "SPAWN", "entity": "L0_E5", "parent": "L0_E2", "children": ["L0_E5"]}, "L0_E5", "L0_E2"),
        ({"action": "SPAWN", "entity": "L0_E5", "parent": None, "children": ["L0_E5"]}, "L0_E5", None),
        ({"action": "SPLIT", "entity": "L0_E2", "parent": "L0_E2", "children": ["L0_E6"]}, "L0_E6", "L0_E2"),
        ({"action": "SPLIT", "entity": "L0_E2", "parent": None, "children": ["L0_E6"]}, "L0_E6", "L0_E2"),
        ({"action": "PRUNE", "entity": "L0_E1", "parent": None, "children": []}, "L0_E1", None),
        ({"action": "MERGE", "entity": "L0_E3", "parent": None, "children": ["L0_E4"]}, "L0_E3", "L0_E4"),
    ],
)
def test_each_action_names_its_expert_and_parent_as_documented(
    fields: dict[str, Any], expert: str, parent: str | None
) -> None:
    """expert_id is the child of a spawn or split, the pruned expert, the merge's survivor; parent_id
    is the clone source, the split expert, or the expert a merge absorbed."""
    line = decision_line({**RECORD, **fields})
    assert list(line) == list(FIELDS)
    assert (line["expert_id"], line["parent_id"]) == (expert, parent)
    assert (line["step"], line["run_id"], line["layer_id"], line["action"]) == (40, "r", 0, fields["action"])
    assert line["metrics_at_decision"] == {"share": 0.5}
    assert line["config_snapshot"] == {"spawn_patience": 5}
    assert (line["seq"], line["apply_at_step"]) == (17, 41)


def test_lines_keep_the_seeds_002_keys_first_and_add_seq_and_apply_at_step() -> None:
    """The nine seeds/002 keys come first in their order; seq and apply_at_step follow them."""
    assert FIELDS[:9] == (
        "step",
        "run_id",
        "action",
        "layer_id",
        "expert_id",
        "parent_id",
        "reason",
        "metrics_at_decision",
        "config_snapshot",
    )
    assert FIELDS[9:] == ("seq", "apply_at_step")


@pytest.mark.parametrize("fixture", ["masked", "scheduled_masked"])
def test_the_demo_log_exports_one_line_per_decision(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every DecisionMade of a demo run becomes a line with the seeds/002 keys, in log order,
    carrying the decision's metrics and config as recorded, and its seq and apply_at_step."""
    trained: Trained = request.getfixturevalue(fixture)
    target = tmp_path / "out" / "lifecycle_decisions.jsonl"
    status, out, err = _cli(capsys, "export-decisions", trained.url, "--run", "demo-test", "-o", str(target))
    made = [r for r in trained.records if r["kind"] == "DecisionMade"]
    assert (status, err) == (0, "")
    assert out == f"{len(made)} decisions of run demo-test written to {target}\n"
    lines = [json.loads(text) for text in target.read_text().splitlines()]
    assert len(lines) == len(made)
    for line, record in zip(lines, made, strict=True):
        assert list(line) == list(FIELDS) and line["step"] == record["step"]
        assert (line["seq"], line["apply_at_step"]) == (record["seq"], record["apply_at_step"])
        assert line["apply_at_step"] >= line["step"]
        assert (line["action"], line["reason"]) == (record["action"], record["reason"])
        assert line["run_id"] == "demo-test" and line["layer_id"] == 0
        assert line["metrics_at_decision"] == record["metrics_at_decision"]
        assert line["config_snapshot"] == record["config_snapshot"]
        assert line["config_snapshot"]["split_share_threshold"] == 0.4
        assert line["expert_id"].startswith("L0_E") and line["reason"]


def test_every_action_of_a_scheduled_run_is_exported(
    scheduled_masked: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that spawned, pruned, split and merged exports a line of each action."""
    status, out, _ = _cli(capsys, "export-decisions", scheduled_masked.url, "--run", "demo-test", "-o", "-")
    assert status == 0
    assert {json.loads(text)["action"] for text in out.splitlines()} == {"SPAWN", "PRUNE", "SPLIT", "MERGE"}


def test_export_to_stdout_prints_the_same_lines(
    masked: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-o -` prints the lines the file export writes, and nothing else."""
    target = tmp_path / "lifecycle_decisions.jsonl"
    _cli(capsys, "export-decisions", masked.url, "--run", "demo-test", "-o", str(target))
    status, out, err = _cli(capsys, "export-decisions", masked.url, "--run", "demo-test", "-o", "-")
    assert (status, err) == (0, "")
    assert out == target.read_text()


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--run", "nope"], 2, "nope"),
        (["--run", "../etc"], 2, "run id"),
        (["--run", "demo-test", "--lenient"], 0, None),
    ],
)
def test_export_errors_are_one_line(
    masked: Trained,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    message: str | None,
) -> None:
    """An unknown or invalid run is one line on stderr and exit 2, never a traceback."""
    code, _, err = _cli(capsys, "export-decisions", masked.url, *argv, "-o", str(tmp_path / "x.jsonl"))
    assert code == status
    if message is None:
        assert err == ""
    else:
        assert err.count("\n") == 1 and "Traceback" not in err and message in err

"""`lifecycle-es demo`: progress on stderr, a summary and the file paths on stdout, one-line errors."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch

from replay.cli.demo import DEFAULT_STEPS
from replay.demo import DemoOptions, Tick
from replay.demo.report import ProgressBar
from tests._cli import one_line as _one_line
from tests._cli import run_cli as _cli

STEPS = "300"


def test_a_short_demo_prints_its_summary_and_where_its_files_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary has the three tables; the log and the decisions export lie where it says."""
    url = f"jsonl://{tmp_path / 'runs'}"
    threads = torch.get_num_threads()
    status, out, err = _cli(capsys, "demo", "--steps", STEPS, "--log", url, "--run", "cli", "--quiet")
    assert (status, err) == (0, "")
    assert torch.get_num_threads() == threads  # the one-thread setting does not leak
    for heading in ("experts routing per layer over time", "lifecycle decisions by action", "loss"):
        assert heading in out
    log, decisions = tmp_path / "runs" / "cli.jsonl", tmp_path / "runs" / "cli" / "lifecycle_decisions.jsonl"
    assert f"log:       {log}, run cli" in out and f"decisions: {decisions}" in out
    made = [r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "DecisionMade"]
    assert len(decisions.read_text().splitlines()) == len(made)


def test_the_baseline_is_reported_beside_the_lifecycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--baseline` trains static models of the start, mean and maximum size with the lifecycle off,
    prints every loss side by side with the lowest named per phase, and says how the lifecycle fared."""
    status, out, _ = _cli(
        capsys,
        "demo",
        "--steps",
        STEPS,
        "--log",
        f"jsonl://{tmp_path}",
        "--run",
        "b",
        "--quiet",
        "--baseline",
    )
    assert status == 0
    header = next(line for line in out.splitlines() if "held-out loss at the end of" in line)
    labels = re.findall(r"lifecycle|static \d+ \([a-z/]+\)|lowest", header)
    assert labels[0] == "lifecycle" and labels[-1] == "lowest"
    sizes = [int(label.split()[1]) for label in labels[1:-1]]
    assert 4 in sizes and 16 in sizes and sizes == sorted(set(sizes), key=sizes.index)
    final = next(line for line in out.splitlines() if line.strip().startswith("calm (step 300)"))
    losses = [float(v) for v in re.findall(r"\b\d+\.\d{4}\b", final)]
    assert len(losses) == len(labels) - 1  # one loss per run
    assert final.rstrip().endswith(labels[losses.index(min(losses))])
    assert re.search(r"the lifecycle has the lowest held-out loss in [0-5] of 5 phases", out)


def test_progress_is_one_line_per_tenth_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Written to a file, the progress bar gives about ten plain lines, without carriage returns."""
    status, _, err = _cli(capsys, "demo", "--steps", STEPS, "--log", f"jsonl://{tmp_path}", "--run", "p")
    assert status == 0
    lines = err.splitlines()
    assert 9 <= len(lines) <= 11 and "\r" not in err
    assert lines[-1].startswith("lifecycle [########################] 100% step 300/300")


def test_on_a_terminal_the_bar_redraws_one_line() -> None:
    """On a tty every tick rewrites the line with a carriage return; the last one ends it."""
    stream = io.StringIO()
    bar = ProgressBar(stream, label="lifecycle", tty=True)
    for step in (1, 2, 3):
        bar(Tick(step=step, steps=3, loss=0.5, experts={0: 4}, phase="settle"))
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "5"], "--steps must be at least 50"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--run", "../up"], "run id"),
        (["--log", "ftp://nowhere"], "unknown log URL scheme"),
        (["--strategy", "bogus"], "invalid choice"),
    ],
)
def test_demo_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options are one line on stderr and exit 2, before any training."""
    base = ["--log", f"jsonl://{tmp_path}", "--quiet"]
    status, out, err = _cli(capsys, "demo", *base, *argv)
    assert status == 2 and out == ""
    assert message in _one_line(err)


def test_a_run_that_exists_is_not_written_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reusing a run id that has a log is refused with one line; the log is left as it was."""
    url = f"jsonl://{tmp_path}"
    assert _cli(capsys, "demo", "--steps", "50", "--log", url, "--run", "once", "--quiet")[0] == 0
    before = (tmp_path / "once.jsonl").read_bytes()
    status, _, err = _cli(capsys, "demo", "--steps", "50", "--log", url, "--run", "once", "--quiet")
    assert status == 2 and "already has a log" in _one_line(err)
    assert (tmp_path / "once.jsonl").read_bytes() == before


def test_an_export_that_cannot_be_written_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exporting onto a directory fails with one line and exit 2."""
    url = f"jsonl://{tmp_path}"
    assert _cli(capsys, "demo", "--steps", "50", "--log", url, "--run", "x", "--quiet")[0] == 0
    (tmp_path / "taken").mkdir()
    status, _, err = _cli(capsys, "export-decisions", url, "--run", "x", "-o", str(tmp_path / "taken"))
    assert status == 2 and "cannot write" in _one_line(err)


def test_the_command_and_the_library_agree_on_the_default_length() -> None:
    """`--steps` defaults to the same run length as `DemoOptions`."""
    assert DemoOptions().steps == DEFAULT_STEPS

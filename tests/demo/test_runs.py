"""`lifecycle-es runs LOG`: every run of a JSONL log directory with its state, last step and checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus import JsonlLog
from lifecycle_es import Lifecycle
from lifecycle_es.events import CheckpointSaved
from lifecycle_es.specs import RunState
from tests._cli import one_line, run_cli


def _run(
    directory: Path, run_id: str, moves: list[tuple[RunState, dict[str, object]]], *, sealed: int
) -> None:
    """A run's log: started, `sealed` steps sealed every 10, a checkpoint at the last, then `moves`."""
    with JsonlLog(directory, run_id) as log:
        lc = Lifecycle(log)
        lc.start()
        for step in range(10, sealed + 1, 10):
            lc.seal(step)
        lc.append(
            [
                CheckpointSaved(
                    run_id=run_id,
                    step=sealed,
                    checkpoint_id=f"{run_id}-{sealed}",
                    path=f"/ckpt/{run_id}-{sealed}.pt",
                    sha256="0" * 64,
                    upto_seq=lc.registry.seq,
                )
            ]
        )
        for state, attrs in moves:
            lc.set_run_state(state, step=sealed, attrs=attrs)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Four runs, one in each state the listing tells apart."""
    _run(tmp_path, "alive", [], sealed=30)
    _run(tmp_path, "preempted", [(RunState.INTERRUPTED, {"checkpoint_saved": True})], sealed=40)
    _run(tmp_path, "halted", [(RunState.STOPPING, {}), (RunState.STOPPED, {})], sealed=20)
    _run(tmp_path, "done", [(RunState.TERMINATED, {"completed": True})], sealed=50)
    (tmp_path / "not a run.jsonl").write_text("")  # not a valid run id: left out
    return tmp_path


def test_runs_lists_every_run_with_its_state_last_step_and_checkpoint(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON listing has one row per run, sorted by id, with its state (a completed run's end
    shown as completed), last sealed step and last checkpoint."""
    status, out, _ = run_cli(capsys, "runs", str(runs_dir), "--format", "json")
    assert status == 0
    rows = {
        r["run"]: (r["state"], r["last_step"], r["checkpoint_step"], r["checkpoint"]) for r in json.loads(out)
    }
    assert list(rows) == ["alive", "done", "halted", "preempted"]
    assert rows == {
        "alive": ("running", 30, 30, "/ckpt/alive-30.pt"),
        "done": ("completed", 50, 50, "/ckpt/done-50.pt"),
        "halted": ("stopped", 20, 20, "/ckpt/halted-20.pt"),
        "preempted": ("interrupted", 40, 40, "/ckpt/preempted-40.pt"),
    }


def test_runs_table_names_the_log_and_filters_by_run(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table starts with the count and the log, and `--run` lists only the runs named."""
    status, out, _ = run_cli(capsys, "runs", str(runs_dir), "--run", "preempted")
    lines = out.splitlines()
    assert status == 0 and lines[0] == f"1 run in jsonl://{runs_dir}"
    assert lines[2].split()[:3] == ["run", "state", "last_step"]
    assert lines[3].split()[:4] == ["preempted", "interrupted", "40", "40"] and len(lines) == 4


def test_runs_of_an_unknown_run_is_one_line(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Naming a run the log does not hold is one line on stderr and a non-zero exit."""
    status, _, err = run_cli(capsys, "runs", str(runs_dir), "--run", "nowhere")
    assert status != 0 and "nowhere" in one_line(err)

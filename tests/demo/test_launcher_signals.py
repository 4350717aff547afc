"""The `--ranks N` launcher under real signals: it passes SIGTERM on to its ranks and exits with
their status, so the run shows `interrupted` and `--resume` completes it; a multi-rank resume
with a rank's checkpoint missing fails in one line instead of waiting on a collective.

Every process here is real (the launcher and its gloo ranks), every signal is a real one sent
to the launcher's pid alone, and every wait has a generous deadline that fails the test; no
assertion is about time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from projections.training import REQUEUE_EXIT_CODE
from tests._cli import one_line
from tests.ddp._harness import CLI, HARD_TIMEOUT_S, Ranks, run_cli, start_cli

STOP_AFTER = 40
"""The launcher is signalled once the run seals this step (the ranks stop at the next evaluation)."""


def _sigterm_launcher_at(
    argv: Sequence[str], cwd: Path, log: Path, step: int
) -> subprocess.CompletedProcess[str]:
    """Run the launcher, SIGTERM it (its pid only) once `log` seals `step`, return how it ended."""
    proc = start_cli(argv, cwd)
    deadline = time.monotonic() + HARD_TIMEOUT_S
    try:
        while _latest_step(log) < step:
            assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, f"no step {step} after {HARD_TIMEOUT_S:g} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=HARD_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _latest_step(log: Path) -> int:
    """The highest step a record of the JSONL log names (-1 before the log has one)."""
    if not log.exists():
        return -1
    lines = log.read_text().split("\n")[:-1]  # the last piece may be a record half written
    return max((int(json.loads(line).get("step", -1)) for line in lines if line.strip()), default=-1)


def _run_state(directory: Path, run: str) -> str:
    """The run's state as `lifecycle-es runs DIR --run RUN --format json` shows it."""
    done = run_cli(["runs", str(directory), "--run", run, "--format", "json"], directory)
    rows = json.loads(done.stdout)
    assert len(rows) == 1, done.stdout + done.stderr
    return str(rows[0]["state"])


RESUME_SEEDS = ["demo", "seeds", "--resume", "r", "--quiet", "--log"]


@pytest.fixture(scope="module")
def stopped_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a `demo seeds --ranks 2` run stopped by SIGTERM to its launcher."""
    directory = tmp_path_factory.mktemp("seeds")
    argv = [
        "demo",
        "seeds",
        "--steps",
        "120",
        "--quiet",
        "--ranks",
        "2",
        "--log",
        str(directory),
        "--run",
        "r",
    ]
    stopped = _sigterm_launcher_at(argv, directory, directory / "r.jsonl", STOP_AFTER)
    assert stopped.returncode == REQUEUE_EXIT_CODE, stopped.stderr[-3000:]
    assert all(f"rank {rank}: stopped at step" in stopped.stderr for rank in (0, 1)), stopped.stderr[-3000:]
    assert _run_state(directory, "r") == "interrupted"
    return directory


def _without_rank_1s_checkpoint(stopped: Path, into: Path) -> Path:
    """A copy of the stopped run's directory with rank 1's checkpoint sidecars removed."""
    copy = into / "copy"
    shutil.copytree(stopped, copy)
    sidecars = [
        p for p in (copy / "r" / "checkpoints").rglob("*.json") if json.loads(p.read_text()).get("seed") == 1
    ]
    assert sidecars, "rank 1 saved no checkpoint"
    for sidecar in sidecars:
        sidecar.unlink()
    return copy


@pytest.mark.slow
def test_the_launcher_refuses_a_resume_with_a_rank_missing_its_checkpoint_in_one_line(
    stopped_seeds: Path, tmp_path: Path
) -> None:
    """`demo seeds --resume` of a 2-rank run whose rank 1 has no checkpoint is one line naming it."""
    copy = _without_rank_1s_checkpoint(stopped_seeds, tmp_path)
    done = run_cli([*RESUME_SEEDS, str(copy)], copy)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "rank 1 has no checkpoint in" in line and str(copy / "r" / "checkpoints") in line


@pytest.mark.slow
def test_ranks_under_torchrun_refuse_a_resume_with_a_rank_missing_its_checkpoint(
    stopped_seeds: Path, tmp_path: Path
) -> None:
    """Started as torchrun starts them (no launcher to check), both ranks end with the one-line
    error naming rank 1 instead of rank 0 waiting on a collective for rank 1."""
    copy = _without_rank_1s_checkpoint(stopped_seeds, tmp_path)
    ended = Ranks([*CLI, *RESUME_SEEDS, str(copy)], 2, tmp_path / "ranks", cwd=copy).wait()
    assert [f.returncode for f in ended] == [2, 2]
    assert all("rank 1 has no checkpoint in" in one_line(f.stderr) for f in ended)


@pytest.mark.slow
def test_a_seeds_run_stopped_by_sigterm_to_its_launcher_resumes_to_completion(stopped_seeds: Path) -> None:
    """The stopped 2-rank seeds run resumes through the launcher to one digest on every rank."""
    done = run_cli([*RESUME_SEEDS, str(stopped_seeds)], stopped_seeds)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "every rank ended with digest" in done.stdout
    assert _run_state(stopped_seeds, "r") == "completed"


@pytest.mark.slow
def test_sigterm_to_the_moe_launcher_stops_every_rank_interrupted_and_resume_completes(
    tmp_path: Path,
) -> None:
    """SIGTERM to the `--ranks 2` launcher alone exits 143 with both ranks stopped at one step and
    the run `interrupted`; `--resume` then completes it with one digest on every rank."""
    demo = ["demo"]
    argv = [*demo, "--steps", "120", "--quiet", "--ranks", "2", "--log", str(tmp_path)]
    stopped = _sigterm_launcher_at([*argv, "--run", "r"], tmp_path, tmp_path / "r.jsonl", STOP_AFTER)
    assert stopped.returncode == REQUEUE_EXIT_CODE, stopped.stderr[-3000:]
    steps = {rank: f"rank {rank}: stopped at step" in stopped.stderr for rank in (0, 1)}
    assert steps == {0: True, 1: True}, stopped.stderr[-3000:]
    assert "resume:    lifecycle-es demo" in stopped.stdout
    assert _run_state(tmp_path, "r") == "interrupted"
    done = run_cli([*demo, "--log", str(tmp_path), "--resume", "r", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "every rank ended with digest" in done.stdout
    assert _run_state(tmp_path, "r") == "completed"

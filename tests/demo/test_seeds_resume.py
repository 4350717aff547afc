"""`lifecycle-es demo seeds` stopped by a real SIGTERM and resumed with `--resume RUN`.

A resumed run is compared with a run that trains from step 0 along the resumed run's own log
(a rank > 0 in a world of one takes each step's recorded decisions at that step): the log is
the deterministic decider, so the comparison holds on any machine, whatever the run decided.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import bus
from projections.training import REQUEUE_EXIT_CODE
from replay.demo.seeds import SeedsOptions, SeedsRun, replay_seeds
from tests._cli import one_line
from tests._cli import run_cli as cli
from tests.ddp._harness import CLI, HARD_TIMEOUT_S, Ranks, environment, run_cli

STOP_AFTER = 200
"""The run is signalled once its log holds a record of this step (it stops at the next evaluation)."""
DIGEST = re.compile(r"^digest:\s+([0-9a-f]{16}) ", re.MULTILINE)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread, as the command trains: the same floats as its processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _files(root: Path, run: str, rank: int = 0) -> dict[str, Path]:
    return {"rollback_dir": root / run / f"rollback-{rank}", "checkpoint_dir": root / run / "checkpoints"}


def _follower(root: Path, run: str, options: SeedsOptions) -> SeedsRun:
    """Train from step 0 along the finished log of `run`, taking its decisions at their steps."""
    with bus.open(str(root), run, create=False) as log:
        follower = SeedsRun(options, log, rank=1, **_files(root, f"{run}-follower"))
        follower.run()
    return follower


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_a_run_stopped_by_sigterm_resumes_to_the_state_of_one_never_stopped(
    strategy: str, tmp_path: Path, one_thread: None
) -> None:
    """SIGTERM stops the run at an evaluation (143, interrupted); its resume ends as the continuous run."""
    options = SeedsOptions(strategy=strategy, steps=400)  # type: ignore[arg-type]

    def signal_self(step: int, loss: float, states: Counter[str]) -> None:
        if step == STOP_AFTER + 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with bus.open(str(tmp_path), "r") as log:
        stopped = SeedsRun(options, log, **_files(tmp_path, "r"))
        stopped.run(signal_self, guarded=True)
    assert (stopped.stopped_at, stopped.exit_code) == (STOP_AFTER + options.eval_every, REQUEUE_EXIT_CODE)
    with bus.open(str(tmp_path), "r") as log:
        resumed = SeedsRun(options, log, resume=True, **_files(tmp_path, "r"))
        resumed.run(guarded=True)
        moves = [(r["from_state"], r["to_state"]) for r in log.read(0) if r["kind"] == "RunStateChanged"]
        registry, tensors, alpha = replay_seeds(log, options)
    assert moves == [
        ("pending", "running"),
        ("running", "interrupted"),
        ("interrupted", "running"),
        ("running", "terminated"),
    ]
    follower = _follower(tmp_path, "r", options)
    assert resumed.final_digest == follower.final_digest
    assert resumed.train_losses == follower.train_losses
    assert resumed.surgery is not None and resumed.lc is not None
    assert torch.equal(resumed.surgery.tensors.state, tensors.state) and torch.equal(
        alpha, resumed.surgery.schedule.alpha
    )
    assert [(e.entity, e.state) for e in registry] == [(e.entity, e.state) for e in resumed.lc.registry]


def test_two_runs_of_equal_options_grow_equal_seeds(tmp_path: Path, one_thread: None) -> None:
    """Germination draws from (blueprint, entity, step), not the random event id: equal runs end equal."""
    options = SeedsOptions(steps=400)
    runs = []
    for run in ("a", "b"):
        with bus.open(str(tmp_path), run) as log:
            runs.append(SeedsRun(options, log, **_files(tmp_path, run)))
            runs[-1].run()
            grown = [r for r in log.read(0) if r["kind"] in ("EntityRegistered", "TransitionApplied")]
        assert grown, "the run recorded no seed at all"
    assert runs[0].final_digest == runs[1].final_digest
    assert runs[0].train_losses == runs[1].train_losses


def _run_row(log: Path) -> dict[str, object]:
    """The run's row of `lifecycle-es runs DIR --format json`."""
    status = subprocess.run(
        [sys.executable, *CLI, "runs", str(log.parent), "--run", log.stem, "--format", "json"],
        env=environment(),
        capture_output=True,
        text=True,
    )
    rows = json.loads(status.stdout)
    assert len(rows) == 1, status.stdout + status.stderr
    return dict(rows[0])


def _run_state(log: Path) -> str:
    return str(_run_row(log)["state"])


def _wait_for_step(log: Path, step: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait until the JSONL log holds a record of `step` or later; fail if a process ends first.

    The ranks are writing the log while it is read: only lines ended by a newline are whole, and
    the text after the last newline (a record still being written) is left for the next look.
    """
    deadline = time.monotonic() + HARD_TIMEOUT_S
    while not log.exists() or all(
        json.loads(line).get("step", 0) < step for line in log.read_text().split("\n")[:-1] if line.strip()
    ):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "ended before the step"
        time.sleep(0.05)


@pytest.mark.slow
def test_the_command_exits_143_on_sigterm_shows_interrupted_and_resumes(
    tmp_path: Path, one_thread: None
) -> None:
    """SIGTERMed, the command exits 143 and `runs` shows it interrupted; `--resume` completes it exactly."""
    argv = ["demo", "seeds", "--steps", "400", "--quiet", "--log", str(tmp_path)]
    with open(tmp_path / "first.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, *CLI, *argv, "--run", "r"], env=environment(), stdout=out)
        _wait_for_step(tmp_path / "r.jsonl", STOP_AFTER, [proc])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(HARD_TIMEOUT_S) == REQUEUE_EXIT_CODE
    assert "resume:    lifecycle-es demo seeds" in (tmp_path / "first.out").read_text()
    interrupted = _run_row(tmp_path / "r.jsonl")
    assert interrupted["state"] == "interrupted"
    assert isinstance(interrupted["checkpoint_step"], int), interrupted  # the seeds demo's checkpoint shows
    done = run_cli([*argv[:2], "--log", str(tmp_path), "--resume", "r", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _run_state(tmp_path / "r.jsonl") == "completed"
    found = DIGEST.search(done.stdout)
    assert found and found[1] == _follower(tmp_path, "r", SeedsOptions(steps=400)).final_digest


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_and_the_launcher_resumes_them(tmp_path: Path) -> None:
    """SIGTERM to rank 1 alone stops both ranks at one step (exit 143); `--resume` ends them on one digest."""
    argv = [*CLI, "demo", "seeds", "--steps", "400", "--quiet", "--ranks", "2", "--log", str(tmp_path)]
    ranks = Ranks([*argv, "--run", "d"], 2, tmp_path / "first")
    _wait_for_step(tmp_path / "d.jsonl", STOP_AFTER, ranks.procs)
    ranks.procs[1].send_signal(signal.SIGTERM)
    ended = ranks.wait()
    assert [f.returncode for f in ended] == [REQUEUE_EXIT_CODE, REQUEUE_EXIT_CODE]
    stops = {f.rank: re.findall(r"rank \d: stopped at step (\d+)", f.stderr) for f in ended}
    assert stops[0] == stops[1] and len(stops[0]) == 1
    done = run_cli(["demo", "seeds", "--log", str(tmp_path), "--resume", "d", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    digests = set(re.findall(r"rank \d: finished step \d+ with digest ([0-9a-f]{16})", done.stderr))
    assert len(digests) == 1 and "every rank ended with digest" in done.stdout


def test_resume_refuses_a_finished_run_and_a_run_flag_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--resume` of a run that completed, or with `--run` beside it, is a one-line error (exit 2)."""
    common = ["demo", "seeds", "--quiet", "--log", str(tmp_path)]
    status, _, err = cli(capsys, *common, "--steps", "50", "--run", "done")
    assert status == 0, err
    status, _, err = cli(capsys, *common, "--resume", "done")
    assert status == 2 and "has ended (terminated)" in one_line(err)
    status, _, err = cli(capsys, *common, "--resume", "done", "--run", "other")
    assert status == 2 and "leave out --run and --baseline" in one_line(err)

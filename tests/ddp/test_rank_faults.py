"""Faults on real ranks: a parameter nudged on one rank, and a leader that dies before its seal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ddp._harness import Finished, of_kind, read_log, run_workers
from tests.ddp._worker import ERROR_EXIT

NUDGED_AFTER = 55
"""Rank 1's head weight moves after this step's boundary: between evaluations 50 and 60."""


def _train(tmp_path: Path, *extra: str, ranks: int = 2) -> tuple[str, list[Finished]]:
    url = f"jsonl://{tmp_path / 'runs'}"
    finished = run_workers(
        ["train", "--url", url, "--run", "faults", "--steps", "100", *extra], ranks, tmp_path / "ranks"
    )
    return url, finished


def test_a_nudged_parameter_is_detected_at_the_next_evaluation_step(tmp_path: Path) -> None:
    """Every rank raises DivergenceError naming step 60 and rank 1; the log records the mismatch."""
    url, finished = _train(tmp_path, "--nudge", str(NUDGED_AFTER))
    for rank in finished:
        assert rank.returncode == ERROR_EXIT, rank.stderr[-2000:]
        assert rank.report["error"] == "DivergenceError"
        assert (rank.report["step"], rank.report["ranks"]) == (60, [1])
        assert "step 60" in rank.report["message"]
    detected = of_kind(read_log(url, "faults"), "DivergenceDetected")
    assert [(d["step"], d["ranks"], d["repaired"]) for d in detected] == [(60, [1], False)]
    assert detected[0]["digests"]["0"] != detected[0]["digests"]["1"]


def test_repair_copies_the_leaders_state_and_the_run_ends_identical(tmp_path: Path) -> None:
    """With repair on, the run finishes with one digest and the repair is on the log, then verified."""
    url, finished = _train(tmp_path, "--nudge", str(NUDGED_AFTER), "--repair")
    assert all(r.returncode == 0 for r in finished), [r.stderr[-2000:] for r in finished]
    assert len({r.report["own"] for r in finished}) == 1
    assert len({r.report["digest"] for r in finished}) == 1
    records = read_log(url, "faults")
    at = next(i for i, r in enumerate(records) if r["kind"] == "DivergenceDetected")
    assert (records[at]["step"], records[at]["ranks"], records[at]["repaired"]) == (60, [1], True)
    after = records[at + 1]
    assert (after["kind"], after["step"]) == ("ActionsVerified", 60)
    assert after["world_size"] == 2


@pytest.mark.parametrize("ranks", [2, 3])
def test_followers_of_a_leader_dead_before_its_seal_time_out_naming_the_step(
    tmp_path: Path, ranks: int
) -> None:
    """Each follower fails with SyncTimeoutError naming itself and step 50 instead of hanging."""
    url, finished = _train(tmp_path, "--leader-dies-at", "50", "--sync-timeout", "3", ranks=ranks)
    assert finished[0].returncode == -9
    for follower in finished[1:]:
        assert follower.returncode == ERROR_EXIT, follower.stderr[-2000:]
        report = follower.report
        assert report["error"] == "SyncTimeoutError"
        assert (report["step"], report["error_rank"]) == (50, follower.rank)
        assert "step 50" in report["message"] and f"rank {follower.rank}" in report["message"]
    sealed = [r["step"] for r in of_kind(read_log(url, "faults"), "StepSealed")]
    assert sealed[-1] == 40

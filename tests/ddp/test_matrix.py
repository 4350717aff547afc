"""The demo on 2 and 3 gloo ranks, both strategies, both log backends: every action, verified.

Each combination is one run of real rank processes (`tests.ddp._worker`, the demo's own
training loop under DDP, through `LifecycleSync`), made once and shared by the tests of this
module. The leader decides with `tests._expert_actions.SeededDecider` instead of the expert
coordinator: every 20 steps one of SPAWN, SPLIT, PRUNE and MERGE in turn, on experts its seed
picks. Which actions an emergent run takes depends on float results that differ between CPUs
(DESIGN.md section 10), so the actions come from a decider that reads no float; everything
else (training under DDP, the log, following, surgery, re-wrapping, digests) is the real run.
A run must apply all four actions before its end (under resize: rows really added and
removed), end with one digest on every rank, and hold an `ActionsVerified` from all ranks
after every step whose sealed batch carried a decision.

One emergent run goes through the command line (`lifecycle-es demo --ranks 2`): the tests on
it assert what holds for any decisions the coordinator makes on any machine.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bus.testing import RedisServer
from replay.demo import DemoOptions
from tests.ddp._harness import Finished, of_kind, read_log, run_cli, run_workers, sealed_batches

pytestmark = pytest.mark.slow

STEPS = 100
EVERY = 20
"""The decider acts at steps 20, 40, 60 and 80 (and 100): each of the four actions once before the end."""
GROWS = {"SPAWN": 1, "SPLIT": 1, "PRUNE": -1, "MERGE": -1}
"""How many routing experts (and, under resize, rows) an action adds to its layer."""
CAPACITY = DemoOptions().max_experts
"""The rows of every layer under the masked strategy."""
COMBINATIONS = [
    pytest.param(
        (ranks, strategy, backend),
        id=f"{ranks}ranks-{strategy}-{backend}",
        marks=[pytest.mark.redis_server] if backend == "redis" else [],
    )
    for ranks in (2, 3)
    for strategy in ("masked", "resize")
    for backend in ("jsonl", "redis")
]


@dataclass(frozen=True)
class Run:
    """One finished multi-rank run: its settings, how each rank ended, and its log."""

    ranks: int
    strategy: str
    steps: int
    finished: list[Finished]
    records: list[dict[str, Any]]


def _url(request: pytest.FixtureRequest, directory: Path, backend: str) -> str:
    if backend == "jsonl":
        return f"jsonl://{directory / 'runs'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture(scope="module", params=COMBINATIONS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The demo on N ranks with the seeded decider, run once per combination."""
    ranks, strategy, backend = request.param
    directory = tmp_path_factory.mktemp(f"matrix-{ranks}-{strategy}-{backend}")
    url, run_id = _url(request, directory, backend), f"matrix-{uuid.uuid4().hex[:12]}"
    argv = [
        "train",
        "--url",
        url,
        "--run",
        run_id,
        "--steps",
        str(STEPS),
        "--strategy",
        strategy,
        "--scheduled",
        str(EVERY),
        "--sync-timeout",
        "120",
    ]
    finished = run_workers(argv, ranks, directory / "ranks")
    for rank in finished:
        assert rank.returncode == 0, f"rank {rank.rank} exit {rank.returncode}:\n{rank.stderr[-3000:]}"
    return Run(ranks, strategy, STEPS, finished, read_log(url, run_id))


def test_every_rank_finishes_with_the_same_digest(run: Run) -> None:
    """Every rank ends with one digest (agreed and its own surgery's), the one the log's last check holds."""
    reports = [f.report for f in run.finished]
    assert [r["rank"] for r in reports] == list(range(run.ranks))
    digests = {r["digest"] for r in reports} | {r["own"] for r in reports}
    assert len(digests) == 1
    final = of_kind(run.records, "ActionsVerified")[-1]
    assert (final["step"], final["digest"], final["world_size"]) == (run.steps, digests.pop(), run.ranks)


def test_every_action_is_decided_and_applied_before_the_end(run: Run) -> None:
    """SPAWN, SPLIT, PRUNE and MERGE are each decided before the last step and change every rank's
    model at their boundary: one routing expert more or fewer, and under resize one row."""
    made = [r for r in of_kind(run.records, "DecisionMade") if r["step"] < run.steps]
    assert sorted({r["action"] for r in made}) == sorted(GROWS), made
    shapes = [f.report["shapes"] for f in run.finished]
    assert all(s == shapes[0] for s in shapes), "the ranks' models changed differently"
    at = {s["step"]: s for s in shapes[0]}
    for decision in made:
        step, layer, grows = decision["step"], str(decision["layer"]), GROWS[decision["action"]]
        before, after = at[step - 10], at[step]
        assert after["routing"][layer] == before["routing"][layer] + grows, decision
        if run.strategy == "resize":
            assert after["rows"][layer] == before["rows"][layer] + grows, decision
        else:
            assert after["rows"][layer] == before["rows"][layer] == CAPACITY, decision
    rewraps = {f.report["rewraps"] for f in run.finished}
    assert rewraps == ({len(of_kind(run.records, "DecisionMade"))} if run.strategy == "resize" else {0})


def _assert_verified(records: Sequence[Mapping[str, Any]], ranks: int, steps: int) -> str:
    """Every decided step and the last one verified by all ranks, none diverged; return the last digest."""
    decided = {
        step
        for step, batch in sealed_batches(records).items()
        if any(r["kind"] == "DecisionMade" for r in batch)
    }
    verified = {r["step"]: r for r in of_kind(records, "ActionsVerified")}
    assert decided <= set(verified), decided - set(verified)
    assert {r["world_size"] for r in verified.values()} == {ranks}
    assert set(verified) - decided <= {0, steps}  # the start (registrations) and the end check
    assert steps in verified
    assert not of_kind(records, "DivergenceDetected")
    return str(verified[steps]["digest"])


def _assert_sealed_by_the_leader(records: Sequence[Mapping[str, Any]], ranks: int) -> None:
    """Every decision applies at the step after its seal; rank 0 wrote every record of the run."""
    for step, batch in sealed_batches(records).items():
        for record in batch:
            if record["kind"] == "DecisionMade":
                assert record["apply_at_step"] == step + 1, record
    assert {r["rank"] for r in records} == {0}
    assert [r["world_size"] for r in of_kind(records, "RunStarted")] == [ranks]


def test_every_sealed_decision_is_verified_by_all_ranks(run: Run) -> None:
    """Each step whose sealed batch holds a decision has an ActionsVerified from all ranks; none diverged."""
    assert _assert_verified(run.records, run.ranks, run.steps) == run.finished[0].report["digest"]


def test_decisions_are_sealed_for_the_next_step_by_the_leader(run: Run) -> None:
    """Every decision applies at the step after its seal, and every record was written by rank 0."""
    _assert_sealed_by_the_leader(run.records, run.ranks)


# -- an emergent run through the command line ------------------------------------------------------

CLI_STEPS = 200
# Not anchored: another rank's C++ warnings (gloo, unbuffered) can land on the same line.
FINISHED = re.compile(r"rank (\d+): finished step (\d+) with digest ([0-9a-f]{16})")
AGREED = re.compile(r"^ranks: +(\d+), every rank ended with digest ([0-9a-f]{16})$", re.MULTILINE)


def test_the_demo_command_on_two_ranks_ends_agreed_whatever_it_decided(tmp_path: Path) -> None:
    """`lifecycle-es demo --ranks 2` exits 0 with one digest on every rank, each decided step
    verified by both ranks and nothing diverged, whichever actions the coordinator took here."""
    url, run_id = f"jsonl://{tmp_path / 'runs'}", "cli-matrix"
    done = run_cli(
        [
            "demo",
            "--log",
            url,
            "--steps",
            str(CLI_STEPS),
            "--strategy",
            "resize",
            "--run",
            run_id,
            "--quiet",
            "--ranks",
            "2",
            "--sync-timeout",
            "120",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    finished = {int(r): (int(s), d) for r, s, d in FINISHED.findall(done.stderr)}
    assert sorted(finished) == [0, 1] and {s for s, _ in finished.values()} == {CLI_STEPS}, done.stderr
    digests = {d for _, d in finished.values()}
    assert len(digests) == 1
    digest = digests.pop()
    assert AGREED.findall(done.stdout) == [("2", digest)]
    records = read_log(url, run_id)
    assert _assert_verified(records, 2, CLI_STEPS) == digest
    _assert_sealed_by_the_leader(records, 2)

"""SIGTERM and `--resume` of the 2-rank demo on gloo: real rank processes, real signals.

The ranks are started directly with torchrun's variables (`_harness.Ranks`), so a test can
signal one rank alone: a notice on one rank must stop every rank at the same boundary. The run
is SIGTERMed at ten seeded random instants (rank 1 alone first, then rank 0, rank 1 or both at
random), each stop followed by a resume; the last resume goes through the command's own launcher
(`--resume RUN`, which reads `--ranks 2` back from the log) and must end with the digest of an
uninterrupted 2-rank run.
"""

from __future__ import annotations

import random
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from projections.training import REQUEUE_EXIT_CODE
from tests.ddp._harness import CLI, HARD_TIMEOUT_S, Finished, Ranks, of_kind, read_log, run_cli
from tests.demo._preempt import DIGEST, Seals

pytestmark = pytest.mark.slow

COMMON = ("--steps", "240", "--seed", "2", "--checkpoint-every", "50", "--quiet", "--ranks", "2")
_PICK = random.Random(20261203)
INSTANTS = (
    (20 + _PICK.randrange(10), (1,)),
    *((20 * n + _PICK.randrange(10), _PICK.choice(((0,), (1,), (0, 1)))) for n in range(2, 11)),
)
"""(step after which to signal, the ranks signalled) of each SIGTERM: 20 steps apart at least, so
each stop (at the next evaluation boundary, 10 steps apart) comes after the previous one."""
STOPPED = re.compile(r"^rank (\d+): stopped at step (\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class Chain:
    """The interrupted 2-rank run: how the ranks of each attempt ended, and the final resume."""

    directory: Path
    attempts: list[list[Finished]]
    final_stdout: str


def _sigterm_ranks(
    directory: Path, argv: list[str], *, step: int, ranks: tuple[int, ...], name: str
) -> list[Finished]:
    seals = Seals(directory / "ddp.jsonl")
    started = Ranks([*CLI, *argv], 2, directory / name)
    deadline = time.monotonic() + HARD_TIMEOUT_S
    while seals.poll() < step:
        if time.monotonic() > deadline or any(p.poll() is not None for p in started.procs):
            started.kill()
            raise AssertionError(f"{name}: no seal of step {step}:\n{started.finished()}")
        time.sleep(0.002)
    for rank in ranks:
        started.procs[rank].send_signal(signal.SIGTERM)
    return started.wait()


@pytest.fixture(scope="module")
def baseline_digest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final digest of the uninterrupted 2-rank run."""
    directory = tmp_path_factory.mktemp("ddp-base")
    done = run_cli(["demo", "--log", str(directory), "--run", "base", *COMMON], directory)
    assert done.returncode == 0, done.stderr[-3000:]
    found = DIGEST.search(done.stdout)
    assert found, done.stdout
    return found[1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Ten SIGTERMs of the 2-rank run, each followed by a resume; the last through the launcher."""
    directory = tmp_path_factory.mktemp("ddp-chain")
    fresh = ["demo", "--log", str(directory), "--run", "ddp", *COMMON]
    resume = ["demo", "--log", str(directory), "--resume", "ddp", "--quiet"]
    attempts = [
        _sigterm_ranks(directory, resume if n else fresh, step=step, ranks=ranks, name=f"attempt{n}")
        for n, (step, ranks) in enumerate(INSTANTS)
    ]
    final = run_cli(resume, directory)
    assert final.returncode == 0, final.stderr[-3000:]
    return Chain(directory, attempts, final.stdout)


def _stops(attempt: list[Finished]) -> dict[int, int]:
    return {int(r): int(s) for f in attempt for r, s in STOPPED.findall(f.stderr)}


def test_a_notice_on_a_non_leader_rank_stops_every_rank_at_the_same_step(chain: Chain) -> None:
    """SIGTERM to rank 1 alone stops rank 0 too, at the same boundary, both exiting 143, and the
    leader records one `interrupted` move at that step naming another rank's notice."""
    first = chain.attempts[0]
    assert [f.returncode for f in first] == [REQUEUE_EXIT_CODE, REQUEUE_EXIT_CODE]
    stops = _stops(first)
    assert sorted(stops) == [0, 1] and stops[0] == stops[1] and stops[0] % 10 == 0
    records = read_log(f"jsonl://{chain.directory}", "ddp")
    interrupted = [r for r in of_kind(records, "RunStateChanged") if r["to_state"] == "interrupted"]
    assert interrupted[0]["step"] == stops[0] and interrupted[0]["rank"] == 0
    assert interrupted[0]["attrs"]["notice_source"] == "rank" and interrupted[0]["attrs"]["checkpoint_saved"]


def test_every_stop_of_the_two_rank_run_is_at_one_step_for_all_ranks(chain: Chain) -> None:
    """Whichever ranks are signalled, both ranks of every attempt stop at one step, later each time."""
    stops = [_stops(attempt) for attempt in chain.attempts]
    assert all(sorted(s) == [0, 1] and s[0] == s[1] for s in stops)
    assert [s[0] for s in stops] == sorted({s[0] for s in stops})


def test_two_rank_sigterms_each_resumed_end_on_the_uninterrupted_digest(
    chain: Chain, baseline_digest: str
) -> None:
    """Ten SIGTERMs, each resumed, end the 2-rank run bit-identical to the uninterrupted one."""
    found = DIGEST.search(chain.final_stdout)
    assert found, chain.final_stdout
    assert found[1] == baseline_digest

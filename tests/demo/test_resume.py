"""SIGTERM and `--resume` of the single-process demo: real processes, real signals.

One uninterrupted run gives the reference digest. One run is then SIGTERMed at ten seeded
random step instants, each stop followed by `demo --resume` (which is itself SIGTERMed at the
next instant); before the last resume the newest checkpoint is corrupted, so that resume falls
back to the previous one. The last resume must end with the reference digest. The instants
are printed (run pytest with -s) and derive from `SEED`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _preempt import Ended, records, run, sigterm_at

from projections.training import REQUEUE_EXIT_CODE
from replay.cli.demo import RECORDED
from tests._cli import one_line, run_cli

SEED = 20261203
STEPS = 300
COMMON = ("--steps", str(STEPS), "--seed", "1", "--checkpoint-every", "50", "--quiet")


def instants(seed: int = SEED, count: int = 10) -> list[tuple[int, float]]:
    """(step, delay in seconds) of each SIGTERM: one per 25-step stretch, at a random step and delay.

    A resumed process signalled once it seals a step at or past its instant stops at the next
    boundary: at most 20 steps after the previous stop, so stretches of 25 never run into each
    other and the last stop comes before the run's end."""
    rng = random.Random(seed)
    return [(25 * i + rng.randrange(10), rng.uniform(0.0, 0.02)) for i in range(1, count + 1)]


@dataclass(frozen=True)
class Chain:
    """The interrupted run: each interrupted process, the final resume, and the log."""

    directory: Path
    stops: list[Ended]
    final: Ended
    corrupted: str
    """The id of the checkpoint corrupted before the final resume."""

    @property
    def records(self) -> list[dict[str, Any]]:
        """The run's log."""
        return records(self.directory / "chain.jsonl")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Ended:
    """The uninterrupted run."""
    directory = tmp_path_factory.mktemp("baseline")
    done = run(directory, ["demo", "--log", str(directory), "--run", "base", *COMMON], name="base")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Ten SIGTERMs, each followed by --resume; the newest checkpoint corrupted before the last."""
    directory = tmp_path_factory.mktemp("chain")
    log = directory / "chain.jsonl"
    fresh = ["demo", "--log", str(directory), "--run", "chain", *COMMON]
    resume = ["demo", "--log", str(directory), "--resume", "chain", "--quiet"]
    print(f"SIGTERM instants (seed {SEED}): {[(s, round(d, 4)) for s, d in instants()]}")
    stops = []
    for n, (step, delay) in enumerate(instants()):
        stops.append(sigterm_at(directory, log, resume if n else fresh, step=step, delay=delay, name=f"p{n}"))
    print(f"stopped at steps {[e.stopped_at for e in stops if e.returncode == REQUEUE_EXIT_CODE]}")
    newest = [r for r in records(log) if r["kind"] == "CheckpointSaved"][-1]
    _corrupt(Path(newest["path"]))
    final = run(directory, resume, name="final")
    return Chain(directory, stops, final, newest["checkpoint_id"])


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_ten_sigterms_each_resumed_end_on_the_uninterrupted_digest(baseline: Ended, chain: Chain) -> None:
    """A run SIGTERMed at ten random steps and resumed after each ends bit-identical (parameters,
    optimizer state, registry) to the run never interrupted."""
    assert chain.final.returncode == 0, chain.final.stderr[-3000:]
    assert chain.final.digest == baseline.digest


@pytest.mark.slow
def test_each_sigterm_stops_at_a_boundary_with_a_checkpoint_and_the_requeue_code(chain: Chain) -> None:
    """Every SIGTERM ends its process with 143 at an evaluation boundary past the previous stop,
    recorded `interrupted` with its checkpoint saved, and the resume moves the run back to running."""
    assert [e.returncode for e in chain.stops] == [REQUEUE_EXIT_CODE] * len(chain.stops)
    steps = [e.stopped_at for e in chain.stops]
    assert all(s % 10 == 0 for s in steps) and steps == sorted(set(steps))
    moves = [r for r in chain.records if r["kind"] == "RunStateChanged"]
    interrupted = [m for m in moves if m["to_state"] == "interrupted"]
    assert [m["step"] for m in interrupted] == steps
    assert all(
        m["attrs"]["checkpoint_saved"] and m["attrs"]["notice_reason"] == "SIGTERM" for m in interrupted
    )
    resumed = [m["from_state"] for m in moves if m["to_state"] == "running"]
    assert resumed == ["pending"] + ["interrupted"] * len(steps)
    assert moves[-1]["to_state"] == "terminated" and moves[-1]["attrs"] == {"completed": True}


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_on_the_log(chain: Chain) -> None:
    """The last resume finds the newest checkpoint corrupt, records that, and restores the one
    before it, which is on the log as the restored checkpoint."""
    resumed_at = max(i for i, r in enumerate(chain.records) if r["kind"] == "CheckpointRestored")
    restored = chain.records[resumed_at]
    corrupt = [r for r in chain.records if r["kind"] == "CheckpointRecorded" and r["action"] == "corrupt"]
    assert [r["checkpoint_id"] for r in corrupt] == [chain.corrupted]
    saved = [r for r in chain.records if r["kind"] == "CheckpointSaved"]
    ids = [r["checkpoint_id"] for r in saved]
    assert restored["checkpoint_id"] == ids[ids.index(chain.corrupted) - 1]


@pytest.mark.slow
def test_run_started_records_what_resumes_the_run(chain: Chain) -> None:
    """`RunStarted.metadata` holds the command line, the recorded arguments, the checkpoint
    directory, the seed and the versions."""
    started = next(r for r in chain.records if r["kind"] == "RunStarted")
    metadata = started["metadata"]
    assert metadata["demo"] == "moe" and metadata["seed"] == 1
    assert sorted(metadata["arguments"]) == sorted(RECORDED) and metadata["arguments"]["steps"] == STEPS
    assert metadata["checkpoint_dir"] == str(chain.directory / "chain" / "checkpoints")
    assert "--run" in metadata["command"] and set(metadata["versions"]) == {"torch", "python", "lifecycle-es"}


@pytest.mark.slow
def test_a_completed_run_cannot_resume_and_tail_stops_at_its_end(
    baseline: Ended, chain: Chain, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--resume` of a completed run is one line naming it; `tail --follow` of it stops at its end."""
    log = str(chain.directory)
    status, _, err = run_cli(capsys, "demo", "--log", log, "--resume", "chain", "--quiet")
    assert status != 0 and "has ended (terminated)" in one_line(err)
    status, out, _ = run_cli(capsys, "tail", log, "--run", "chain", "--follow", "--kind", "RunStateChanged")
    assert status == 0 and out.strip().splitlines()[-1].count("terminated") == 1


def test_the_instants_are_seeded_and_one_per_stretch() -> None:
    """The SIGTERM instants are the same for one seed and fall one per 25-step stretch."""
    assert instants() == instants()
    assert [s // 25 for s, _ in instants()] == list(range(1, 11))
    assert instants(SEED + 1) != instants()

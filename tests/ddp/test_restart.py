"""A rank SIGKILLed mid-run: every rank restarts from the last checkpoint, replays the log, catches up.

A process group cannot take one rank back in, so, as torchrun's elastic agent does, the
survivors are stopped and all ranks start again with `TORCHELASTIC_RESTART_COUNT=1`: each
loads the checkpoint the log recorded last and replays the sealed steps after it without
deciding them again. The leader decides with the seeded decider (an action every 20 steps),
so the replayed steps hold surgery on every machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ddp._harness import Finished, Ranks, of_kind, read_log, run_workers

STEPS = "400"
EVERY = "100"
SCHEDULED = "20"
"""The seeded decider's period: an action at steps 220 and 240, between the checkpoint and the kill."""


def _args(url: str, run: str, checkpoints: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--url",
        url,
        "--run",
        run,
        "--steps",
        STEPS,
        "--strategy",
        "resize",
        "--checkpoint-dir",
        str(checkpoints),
        "--checkpoint-every",
        EVERY,
        "--scheduled",
        SCHEDULED,
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[Finished]:
    """The same run, never interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    return run_workers(_args(f"jsonl://{tmp / 'runs'}", "ref", tmp / "ckpt"), 2, tmp / "ranks")


def test_a_killed_rank_restarts_from_its_checkpoint_and_ends_like_the_others(
    tmp_path: Path, reference: list[Finished]
) -> None:
    """After a SIGKILL at step 250 and a restart, both ranks end with one digest, the uninterrupted model."""
    url = f"jsonl://{tmp_path / 'runs'}"
    first = Ranks(
        ["-m", "tests.ddp._worker", *_args(url, "crash", tmp_path / "ckpt", "--die-at", "250")],
        2,
        tmp_path / "first",
    ).stop_survivors_after_failure(grace=30)
    assert first[1].returncode == -9
    assert first[0].returncode != 0
    before = read_log(url, "crash")
    saved = of_kind(before, "CheckpointSaved")
    assert [c["step"] for c in saved] == [100, 200]
    assert max(r["step"] for r in of_kind(before, "StepSealed")) >= 250
    # the replay after the checkpoint must apply surgery: the decider's actions at 220 and 240
    assert [d["step"] for d in of_kind(before, "DecisionMade") if 200 < d["step"] <= 250] == [220, 240]

    second = run_workers(_args(url, "crash", tmp_path / "ckpt"), 2, tmp_path / "second", restart=1)
    assert all(r.returncode == 0 for r in second), [r.stderr[-2000:] for r in second]
    assert len({r.report["own"] for r in second}) == 1
    assert {r.report["model"] for r in second} == {r.report["model"] for r in reference}
    after = read_log(url, "crash")
    restored = of_kind(after, "CheckpointRestored")
    assert [(c["step"], c["upto_seq"]) for c in restored] == [(200, saved[-1]["upto_seq"])]
    sealed = [r["step"] for r in of_kind(after, "StepSealed")]
    assert sealed == sorted(set(sealed)), "a replayed step was sealed twice"
    assert sealed[-1] == int(STEPS)

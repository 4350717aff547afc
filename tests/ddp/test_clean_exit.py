"""Multi-rank runs end cleanly: every rank exits 0, and none aborts while it tears down.

One 3-rank `demo --ranks 3 --strategy resize` run once ended with exit status 134: a rank died
of SIGABRT at its end, after training had finished and agreed. Ranks now leave the process
group in step (`projections.training.distributed.process_group`: a barrier, then the group destroyed).
A handful of short runs of the command, each through its own launcher, must all end with
status 0 and without a C++ termination or a fatal interpreter error on any rank's stderr.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ddp._harness import run_cli

pytestmark = pytest.mark.slow

STEPS = 50
"""The shortest run the command allows: teardown, not training, is under test."""
CRASHES = ("terminate called", "Fatal Python error", "Aborted", "Segmentation fault")


@pytest.mark.parametrize(
    ("ranks", "strategy"),
    [(3, "resize"), (3, "resize"), (3, "masked"), (2, "resize")],
    ids=["3ranks-resize-a", "3ranks-resize-b", "3ranks-masked", "2ranks-resize"],
)
def test_every_rank_of_a_short_run_exits_zero(tmp_path: Path, ranks: int, strategy: str) -> None:
    """`demo --ranks N` exits 0, every rank reports its last step, and no rank printed a crash."""
    done = run_cli(
        [
            "demo",
            "--log",
            f"jsonl://{tmp_path / 'runs'}",
            "--steps",
            str(STEPS),
            "--strategy",
            strategy,
            "--run",
            "exit",
            "--quiet",
            "--ranks",
            str(ranks),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(ranks):
        assert f"rank {rank}: finished step {STEPS} with digest" in done.stderr
    assert not [c for c in CRASHES if c in done.stderr], done.stderr[-3000:]

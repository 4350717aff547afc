"""In one process: a sealed step is followed, not decided again; the demo's multi-rank options."""

from __future__ import annotations

import pytest
import torch

from bus import MemoryLog
from lifecycle_es import Lifecycle
from projections import Runner
from projections.moe import ModelSurgery
from projections.training import LifecycleSync, Replicated
from replay.demo.model import DemoModel
from tests._cli import one_line, run_cli


def _model() -> DemoModel:
    return DemoModel(d_in=4, d_out=2, d_model=8, d_hidden=4, capacity=4, layers=1, top_k=2, seed=0)


def _sync(log: MemoryLog) -> tuple[LifecycleSync, Lifecycle, ModelSurgery]:
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    lc = Lifecycle(log)
    replicated = Replicated(model)
    surgery = ModelSurgery(model.layers(), optimizer, model=model, on_rewrap=replicated.rewrap)
    return LifecycleSync(lc, Runner(log, [surgery]), surgery, replicated=replicated), lc, surgery


def _begin(lc: Lifecycle) -> None:
    lc.start(seed=0)
    for i in range(2):
        lc.register(f"L0_E{i}", "expert", state="active", layer=0, slot=i)


def test_a_step_sealed_already_is_followed_not_decided_again() -> None:
    """A leader whose log holds a step's seal (a resumed run) does not run decide for it."""
    log = MemoryLog("r")
    _sync(log)[0].at_boundary(0, _begin)
    again, _, _ = _sync(log)

    def must_not_run(lc: Lifecycle) -> None:
        raise AssertionError("decided a sealed step")

    assert again.at_boundary(0, must_not_run).replayed


@pytest.mark.parametrize(
    "argv",
    [["--ranks", "0"], ["--checkpoint-every", "15"], ["--baseline", "--ranks", "2"], ["--sync-timeout", "0"]],
)
def test_demo_refuses_bad_rank_options(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Bad multi-rank options are one line on stderr and exit status 2."""
    code, _, err = run_cli(capsys, "demo", "--log", "memory://", *argv)
    assert code == 2
    assert one_line(err).startswith("lifecycle-es demo:")

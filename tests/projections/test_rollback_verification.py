"""A seed's rollback point around its risky period: restored on a failed verification, not on "not yet".

The gates are scripted (each passes unless the test names it failing), with the categories of
the built-in library, so which gate refuses a transition is the test's choice on any machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifecycle_es import Gate, GateLibrary, GateResult, InvalidTransitionError, Lifecycle, default_gates
from lifecycle_es.gates import MIN_TIME_GATE
from projections.seeds import RollbackPoints
from projections.training import CheckpointManager
from projections.training.checkpoint_manager import RetentionConfig
from tests.seeds._rig import SPECS, Rig, register_seeds, replay

WALK = {
    2: "GERMINATED",
    4: "TRAINING",
    6: "GRAFTING",
    8: "STABILIZATION",
    10: "EVALUATING",
    12: "FINE_TUNING",
}
"""s0's walk into FINE_TUNING, a risky state in which its blueprint learns (so its rows move)."""


def _gates(failing: set[str]) -> GateLibrary:
    """Every gate the seed specs name, with the built-in category, passing unless in `failing`."""
    builtin = default_gates()
    names = set().union(*(spec.gate_names for spec in SPECS.values())) | {MIN_TIME_GATE}

    def gate(name: str) -> Gate:
        return Gate(name, builtin[name].category, lambda i, p: GateResult(name not in failing, name, {}))

    return GateLibrary([gate(n) for n in sorted(names)])


def _rows(rig: Rig) -> dict[str, torch.Tensor]:
    """s0's rows: its blueprint's weights and Adam moments, copied."""
    seed = rig.surgery.seeds["s0"]
    row = rig.layer.row_chunks[seed.blueprint].index(seed.chunk)
    out = {}
    for name, param in rig.layer.slot_parameters(seed.blueprint).items():
        out[name] = param[row].detach().clone()
        for key, moment in rig.optimizer.state[param].items():
            if moment.shape == param.shape:
                out[f"{name}/{key}"] = moment[row].clone()
    return out


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _fine_tuning(tmp_path: Path, failing: set[str]) -> tuple[Rig, Lifecycle, dict[str, torch.Tensor]]:
    """A rig whose s0 fine-tuned 8 steps, its lifecycle, s0's rows at its point; then `failing` fail."""
    manager = CheckpointManager(tmp_path, retention=RetentionConfig(per_seed=1), durable=False)
    rig = Rig(rollback=RollbackPoints(manager))
    scripted: set[str] = set()
    lc = Lifecycle(gates=_gates(scripted))
    register_seeds(lc)
    rig.surgery.apply(lc.log.read())
    saved: dict[str, torch.Tensor] = {}
    for step in range(20):
        rig.train_step(step)
        lc.advance(step)
        if step in WALK:
            lc.transition("s0", WALK[step])
        rig.surgery.apply(lc.log.read(rig.surgery.seq))
        if step == 12:
            saved = _rows(rig)
    assert not _same(saved, _rows(rig))  # fine-tuning moved the rows since the point
    scripted.update(failing)
    return rig, lc, saved


def _request(rig: Rig, lc: Lifecycle, to: str) -> bool:
    """Ask for s0's move to `to` and fold the log; True if it went through."""
    try:
        lc.transition("s0", to)
        accepted = True
    except InvalidTransitionError:
        accepted = False
    rig.surgery.apply(lc.log.read(rig.surgery.seq))
    return accepted


def test_a_failed_verification_restores_the_point_bit_for_bit_and_keeps_it(tmp_path: Path) -> None:
    """FOSSILIZED refused by kasmina.improvement alone puts s0's rows from before FINE_TUNING back."""
    rig, lc, saved = _fine_tuning(tmp_path, failing={"kasmina.improvement"})
    assert not _request(rig, lc, "FOSSILIZED")
    assert _same(saved, _rows(rig))
    assert lc.registry.get("s0").state == "FINE_TUNING"
    assert "s0" in rig.rollback.points  # type: ignore[union-attr]


def test_a_refusal_by_the_minimum_time_in_state_restores_nothing(tmp_path: Path) -> None:
    """FOSSILIZED refused by the minimum time in state (improvement failing too) leaves s0's rows."""
    rig, lc, _ = _fine_tuning(tmp_path, failing={MIN_TIME_GATE, "kasmina.improvement"})
    before = _rows(rig)
    assert not _request(rig, lc, "FOSSILIZED")
    assert _same(before, _rows(rig))


def test_success_discards_the_point(tmp_path: Path) -> None:
    """A fossilized seed's point is forgotten and its fine-tuned weights stay (its moments are cleared)."""
    rig, lc, _ = _fine_tuning(tmp_path, failing=set())
    before = _rows(rig)
    assert _request(rig, lc, "FOSSILIZED")
    assert "s0" not in rig.rollback.points  # type: ignore[union-attr]
    after = _rows(rig)
    assert all(torch.equal(before[k], after[k]) for k in before if "/" not in k)


@pytest.mark.parametrize("to", ["CULLED", "ROLLED_BACK"])
def test_leaving_the_risky_period_by_a_failure_restores_and_discards_the_point(
    tmp_path: Path, to: str
) -> None:
    """A cull or a rollback out of FINE_TUNING restores s0's weights from before it and forgets the point."""
    rig, lc, saved = _fine_tuning(tmp_path, failing=set())
    assert _request(rig, lc, to)
    restored = _rows(rig)
    assert all(torch.equal(saved[k], restored[k]) for k in saved if "/" not in k)  # a cull clears moments
    assert "s0" not in rig.rollback.points  # type: ignore[union-attr]


def test_a_replay_of_the_log_restores_at_the_same_record(tmp_path: Path) -> None:
    """Folding the live run's log into a fresh rig, step by step, ends on the live rig's digest."""
    rig, lc, _ = _fine_tuning(tmp_path / "live", failing={"kasmina.improvement"})
    assert not _request(rig, lc, "FOSSILIZED")
    manager = CheckpointManager(tmp_path / "replay", retention=RetentionConfig(per_seed=1), durable=False)
    again = Rig(rollback=RollbackPoints(manager))
    replay(again, lc.log.read(), steps=20)
    assert _same(_rows(rig), _rows(again))
    assert again.surgery.digest() == rig.surgery.digest()

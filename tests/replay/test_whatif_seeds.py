"""What-if on a seed run: the heuristic or the hybrid decides each recorded decision again.

The recorded runs are scripted (no training): two modules in TRAINING observed with fixed
loss deltas for 8 steps. m0's delta is -0.005 (an improvement the default threshold of 0.01
ignores), m1's is +0.2 (a regression that prunes it at its fifth step in TRAINING). The hybrid's
policy is a fixed function, so every probability, draw and decision is the same on any machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import bus
from bus import Log, MemoryLog
from lifecycle_es import ConfigError, Lifecycle
from lifecycle_es.controllers import (
    HeuristicController,
    HybridConfig,
    HybridController,
    PolicyController,
    SeedDriver,
)
from lifecycle_es.controllers._seed_actions import SeedAction, decision_action
from lifecycle_es.controllers._seed_view import SeedController
from lifecycle_es.specs import ModuleState
from replay import what_if
from tests._cli import run_cli

RUN = "seeds-what-if"
DELTAS = {"m0": -0.005, "m1": 0.2}


def _record(log: Log, controller: SeedController) -> None:
    """Walk m0 and m1 into TRAINING at step 0, then let `controller` decide at steps 1..8."""
    lc = Lifecycle(log)
    lc.start(seed=2)
    for slot, name in enumerate(DELTAS):
        lc.register(name, "module", slot=slot)
        lc.transition(name, ModuleState.INSTANTIATED, metrics={"available_slots": 1})
        lc.transition(name, ModuleState.TRAINING)
    driver = SeedDriver(controller)
    for step in range(1, 9):
        live = [n for n in DELTAS if lc.registry.get(n).state == ModuleState.TRAINING]
        driver.run(lc, step=step, entities=live, metrics={n: {"loss_delta": DELTAS[n]} for n in live})


def _policy(vector: object) -> list[float]:
    return [0.6, 0.1, 0.1, 0.1, 0.1]  # hold, most probable but in the blend band (0.3..0.8)


def test_the_recorded_settings_reproduce_every_recorded_decision() -> None:
    """Without a change every decision comes out as recorded, for the heuristic and for the hybrid."""
    for controller in (HeuristicController(), _hybrid()):
        log = MemoryLog(RUN)
        _record(log, controller)
        result = what_if(log, {})
        assert result.same and len(result.recorded) == len(result.counterfactual) > 8


def _hybrid() -> HybridController:
    return HybridController(HeuristicController(), PolicyController(_policy), HybridConfig(blend=0.5))


def test_a_lower_improvement_threshold_advances_m0_from_its_fifth_step() -> None:
    """improvement_threshold 0.001 turns m0's holds at steps 5..8 into advances; m1's prune is untouched."""
    log = MemoryLog(RUN)
    _record(log, HeuristicController())
    result = what_if(log, {"improvement_threshold": 0.001})
    assert [(s.name, s.recorded, s.what_if) for s in result.settings] == [
        ("improvement_threshold", 0.01, 0.001)
    ]
    rows = [(r.step, r.change, r.action.value, r.entity) for r in result.rows]
    expected = [(step, change, action, "m0") for step in range(5, 9) for change, action in _swap()]
    assert sorted(rows) == sorted(expected)
    assert result.first_parting_step == 5
    assert all(r.on_recorded_signals == (r.step > 5) for r in result.rows)


def _swap() -> list[tuple[str, str]]:
    """A module's hold removed and its advance added, as the driver records those actions."""
    return [
        ("removed", decision_action("module", SeedAction.HOLD).value),
        ("added", decision_action("module", SeedAction.ADVANCE).value),
    ]


def test_the_hybrid_with_blend_zero_takes_the_heuristic_in_the_band_with_the_same_draws() -> None:
    """blend 0.0 picks the heuristic for every in-band decision, drawing the recorded numbers."""
    log = MemoryLog(RUN)
    _record(log, _hybrid())
    result = what_if(log, {"blend": 0.0})
    assert [(s.name, s.recorded, s.what_if) for s in result.settings] == [("blend", 0.5, 0.0)]
    for was, now in zip(result.recorded, result.counterfactual, strict=True):
        seen = now.metrics_at_decision
        assert seen["chosen_by"] == "heuristic" and seen["seed_action"] == seen["heuristic_action"]
        assert seen["draw"] == was.metrics_at_decision["draw"]
    by_policy = [d for d in result.recorded if d.metrics_at_decision["chosen_by"] == "policy"]
    assert by_policy and not result.same


def test_an_unknown_setting_is_refused() -> None:
    """A name that is no setting of the recorded heuristic raises a one-sentence ConfigError."""
    log = MemoryLog(RUN)
    _record(log, HeuristicController())
    with pytest.raises(ConfigError, match="unknown setting 'blend': not a setting of the heuristic"):
        what_if(log, {"blend": 0.2})


def test_the_cli_prints_the_seed_decisions_that_differ(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`what-if --set improvement_threshold=0.001` on a seed run names the change and m0's rows."""
    url = f"jsonl://{tmp_path / 'runs'}"
    with bus.open(url, RUN) as log:
        _record(log, HeuristicController())
    status, out, err = run_cli(capsys, "what-if", url, "--run", RUN, "--set", "improvement_threshold=0.001")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"what-if on run {RUN} through its end: improvement_threshold 0.01 -> 0.001"
    assert lines[2].startswith("the decisions part at step 5")
    assert sum(" m0 " in f" {line} " for line in lines[4:]) == 8

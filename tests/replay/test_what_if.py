"""What-if: the recorded coordinator re-run over the recorded observations under changed settings.

The recorded run is scripted (no training, no float that depends on the CPU): four experts in
layer 0, a checkpoint every 10 steps, shares fixed per checkpoint. L0_E1 and L0_E2 carry 0.45
of the routing for the first three checkpoints, then 0.25 like the others; L0_E3 receives
nothing. Under the recorded settings (split_patience 3, one split per cycle, prune_patience 3)
the coordinator splits L0_E1 into L0_E4 at step 30 (L0_E2's split waits for the budget, and
its overload is over by step 40) and prunes L0_E3 at step 40, dormant since step 10, with 5
live experts. Each test predicts by hand what a changed setting does to those two decisions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import bus
from bus import Log, MemoryLog
from lifecycle_es import Action, ConfigError, Lifecycle, LifecycleConfig, Registry, UsageError, fold_record
from lifecycle_es.controllers import ExpertCoordinator, ExpertCoordinatorConfig
from lifecycle_es.events import EventBase
from lifecycle_es.specs import BUILTIN_SPECS, ROUTING_STATES
from replay import WhatIf, what_if
from replay.cli.what_if import parse_setting
from tests._cli import one_line, run_cli
from tests.replay._runs import play

RUN = "what-if"
EVERY = 10
CHECKPOINTS = 8
CONFIG = ExpertCoordinatorConfig.seeds_002(
    spawn_patience=3,
    prune_patience=3,
    split_patience=3,
    merge_patience=3,
    cooling_period=2,
    spawn_cooldown_steps=100,
    split_cooldown_per_expert=100,
    basin_window_size=20,
    starvation_entropy_threshold=None,
)
"""Short patience; no starvation (the layer records no top-k saturation), so nothing spawns."""
OVERLOADED = {"L0_E1": 0.45, "L0_E2": 0.45, "L0_E3": 0.0}
"""The shares of the first three checkpoints; from the fourth L0_E1 and L0_E2 carry 0.25."""
IDLE = {"L0_E3": 0.0}


def record(
    log: Log, config: ExpertCoordinatorConfig = CONFIG, overloaded: Mapping[str, float] = OVERLOADED
) -> Lifecycle:
    """Play the scripted run onto `log` as a training loop does; return its writer.

    `overloaded` gives the shares of the first three checkpoints, IDLE those of the rest.
    """
    lc = Lifecycle(log, config=LifecycleConfig(metric_window=config.basin_window_size))
    lc.start(config={"lifecycle": config.snapshot()}, seed=3)
    coordinator = ExpertCoordinator(config, {0: 8})
    coordinator.register_initial(lc, 0, 4)
    lc.seal(0)
    for checkpoint in range(1, CHECKPOINTS + 1):
        step = checkpoint * EVERY
        experts = _expert_metrics(lc.registry, overloaded if checkpoint <= 3 else IDLE)
        layer = _layer_metrics([m["share"] for m in experts.values()])
        lc.append(coordinator.observations(run_id=log.run_id, step=step, experts=experts, layers={0: layer}))
        lc.append(coordinator.decide(lc.registry, run_id=log.run_id, step=step))
        lc.seal(step)
    return lc


def _expert_metrics(registry: Registry, shares: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Every routing expert's share (0.25 unless named), its tokens all of its own type."""
    routing = sorted((e for e in registry if e.state in ROUTING_STATES), key=lambda e: e.slot or 0)
    metrics = {}
    for e in routing:
        m = {"share": shares.get(e.entity, 0.25)}
        m.update({f"token_type.{k}": float(k == e.slot) for k in range(8)})
        m.update({f"cosine.{o.entity}": 0.0 for o in routing if o is not e})
        metrics[e.entity] = m
    return metrics


def _layer_metrics(shares: list[float]) -> dict[str, float]:
    entropy = -math.fsum(s * math.log(s) for s in shares if s > 1e-10)
    top = sorted(shares, reverse=True)
    return {
        "entropy": entropy,
        "n_eff": math.exp(entropy),
        "top2_share": sum(top[:2]),
        "dead_count": float(sum(s == 0 for s in shares)),
        "n_active": float(sum(s > 0 for s in shares)),
        "topk_saturation": 0.0,
    }


@pytest.fixture
def recorded() -> Lifecycle:
    return record(MemoryLog(RUN))


def rows(result: WhatIf) -> list[tuple[Any, ...]]:
    """Each row as (step, change, action, entity, children, changed, on recorded signals)."""
    return [
        (r.step, r.change, r.action, r.entity, r.children, r.changed, r.on_recorded_signals)
        for r in result.rows
    ]


def _plain(event: EventBase) -> dict[str, Any]:
    """The event without what differs on every build of it (its id and wall time)."""
    return event.model_dump(exclude={"event_id", "ts"})


# -- the library -------------------------------------------------------------------------------


def test_the_recorded_run_decides_what_the_hand_check_says(recorded: Lifecycle) -> None:
    """The premise of every other test: SPLIT L0_E1 -> L0_E4 at 30, PRUNE L0_E3 at 40 (5 live)."""
    made = [r for r in recorded.log.read() if r["kind"] == "DecisionMade"]
    assert [(d["step"], d["action"], d["entity"], d["children"]) for d in made] == [
        (30, Action.SPLIT, "L0_E1", ["L0_E4"]),
        (40, Action.PRUNE, "L0_E3", []),
    ]
    assert made[1]["metrics_at_decision"]["live_experts"] == 5


def test_unchanged_settings_reproduce_every_recorded_decision_and_the_registry(recorded: Lifecycle) -> None:
    """With no change the counterfactual is the recorded run: no row, the same registry."""
    result = what_if(recorded.log, {})
    assert result.same and result.rows == () and result.first_parting_step is None
    assert (len(result.recorded), result.evaluations) == (2, 8)
    assert [_plain(d) for d in result.counterfactual] == [_plain(d) for d in result.recorded]
    assert result.settings == () and result.skipped == 0
    rebuilt = Registry(BUILTIN_SPECS, window=CONFIG.basin_window_size)
    for page in result.log.pages():
        for r in page:
            fold_record(rebuilt, r)
    assert rebuilt == recorded.registry


@pytest.mark.parametrize("change", [{"split_share_threshold": 0.5}, {"split_patience": 4}])
def test_a_split_that_no_longer_happens_is_removed_and_the_later_prune_changes(
    recorded: Lifecycle, change: dict[str, Any]
) -> None:
    """0.45 is no overload above 0.5, and three overloaded checkpoints miss a patience of 4:
    no split at 30 (exact), so the prune at 40 sees 4 live experts, not 5 (an estimate)."""
    result = what_if(recorded.log, change)
    assert rows(result) == [
        (30, "removed", Action.SPLIT, "L0_E1", ("L0_E4",), (), False),
        (40, "changed", Action.PRUNE, "L0_E3", (), ("metrics_at_decision.live_experts",), True),
    ]
    assert result.first_parting_step == 30
    prune = result.rows[1]
    assert prune.recorded is not None and prune.what_if is not None
    assert (
        prune.recorded.metrics_at_decision["live_experts"],
        prune.what_if.metrics_at_decision["live_experts"],
    ) == (5, 4)
    ((name, value),) = change.items()
    assert [(s.controller, s.name, s.recorded, s.what_if) for s in result.settings] == [
        ("expert coordinator", name, getattr(CONFIG, name), value)
    ]


def test_a_second_split_makes_an_expert_the_recording_never_observed(recorded: Lifecycle) -> None:
    """Two splits per cycle: L0_E2 splits at 30 too, into L0_E5, which the recording never had."""
    result = what_if(recorded.log, {"max_splits_per_cycle": 2})
    assert rows(result) == [
        (30, "added", Action.SPLIT, "L0_E2", ("L0_E5",), (), False),
        (40, "changed", Action.PRUNE, "L0_E3", (), ("metrics_at_decision.live_experts",), True),
    ]
    added = result.rows[0]
    assert (added.unobserved, added.stand_ins, added.recorded) == (("L0_E5",), (), None)
    assert result.rows[1].unobserved == ()


def test_an_earlier_split_reads_the_signals_of_the_recorded_child_of_that_name() -> None:
    """With only L0_E1 overloaded, patience 2 splits it at 20 instead of 30: its child gets the
    id L0_E4 the recorded child had, born 10 steps apart, and reads that expert's signals."""
    log = MemoryLog(RUN)
    record(log, overloaded={"L0_E1": 0.45, "L0_E3": 0.0})
    result = what_if(log, {"split_patience": 2})
    assert rows(result) == [
        (20, "added", Action.SPLIT, "L0_E1", ("L0_E4",), (), False),
        (30, "removed", Action.SPLIT, "L0_E1", ("L0_E4",), (), True),
    ]
    assert (result.rows[0].stand_ins, result.rows[0].unobserved) == (("L0_E4",), ())


def test_a_recorded_move_of_an_expert_the_what_if_never_made_is_skipped_and_counted(
    recorded: Lifecycle,
) -> None:
    """A hand-made move of L0_E4 after the run cannot happen where no split made L0_E4."""
    recorded.transition("L0_E4", "dormant", step=90)
    recorded.seal(90)
    result = what_if(recorded.log, {"split_share_threshold": 0.5})
    assert result.skipped == 1
    assert [r.change for r in result.rows] == ["removed", "changed"]
    assert what_if(recorded.log, {}).skipped == 0


def test_until_step_bounds_both_runs(recorded: Lifecycle) -> None:
    """Through step 30 only the split is compared; through step 20 there is no decision at all."""
    result = what_if(recorded.log, {"split_share_threshold": 0.5}, until_step=30)
    assert rows(result) == [(30, "removed", Action.SPLIT, "L0_E1", ("L0_E4",), (), False)]
    assert (len(result.recorded), result.evaluations) == (1, 3)
    early = what_if(recorded.log, {"split_share_threshold": 0.5}, until_step=20)
    assert early.same and early.recorded == () and early.evaluations == 2


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"split_patients": 4}, "unknown setting 'split_patients'"),
        ({"split_patience": 0}, "split_patience must be an int >= 1"),
        ({"split_share_threshold": "high"}, "split_share_threshold must be a number"),
        ({"prune_patience": 30}, "exceeds basin_window_size"),
    ],
)
def test_a_bad_setting_raises_config_error(recorded: Lifecycle, changes: dict[str, Any], match: str) -> None:
    """Names and values are checked by the controller's own config."""
    with pytest.raises(ConfigError, match=match):
        what_if(recorded.log, changes)


def test_a_run_without_a_controller_cannot_be_re_run() -> None:
    """A run whose log records no coordinator config has nothing to re-run."""
    lc = Lifecycle(run_id="scripted")
    play(lc)
    with pytest.raises(UsageError, match="no controller"):
        what_if(lc.log, {})


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A JSONL directory holding the scripted run."""
    url = f"jsonl://{tmp_path / 'runs'}"
    with bus.open(url, RUN) as log:
        record(log)
    return url


def test_the_table_names_the_change_and_marks_rows_after_the_parting(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """One line of settings, the counts, the parting step, then a row per difference."""
    status, out, err = run_cli(capsys, "what-if", url, "--run", RUN, "--set", "split_share_threshold=0.5")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"what-if on run {RUN} through its end: split_share_threshold 0.4 -> 0.5"
    assert "recorded 2 decisions, what-if 1: 0 the same, 1 changed, 1 removed, 0 added" in lines[1]
    assert lines[2].startswith("the decisions part at step 30")
    table = [line.split() for line in lines[4:]]
    assert table[0][-2:] == ["exact", "note"]
    assert table[1] == ["30", "removed", "SPLIT", "0", "L0_E1", "L0_E1", "L0_E4", "yes"]
    assert table[2] == ["40", "changed", "PRUNE", "0", "L0_E3", "metrics.live_experts", "no"]


def test_no_change_prints_no_difference(capsys: pytest.CaptureFixture[str], url: str) -> None:
    """Without --set the what-if reproduces the run, and says so."""
    status, out, _ = run_cli(capsys, "what-if", url, "--run", RUN)
    assert status == 0
    assert (
        out.splitlines()[1]
        == "no difference: the what-if reproduces the 2 recorded decisions over 8 evaluations"
    )


def test_json_parses_and_carries_both_decisions_of_each_row(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """--format json: one document with the settings, counts and rows, decisions as plain fields."""
    status, out, _ = run_cli(
        capsys, "what-if", url, "--run", RUN, "--set", "max_splits_per_cycle=2", "--format", "json"
    )
    assert status == 0
    doc = json.loads(out)
    assert doc["settings"] == [
        {"controller": "expert coordinator", "name": "max_splits_per_cycle", "recorded": 1, "what_if": 2}
    ]
    assert (doc["recorded"], doc["what_if"], doc["same"], doc["difference"]) == (2, 3, 1, True)
    assert doc["first_parting_step"] == 30
    added, changed = doc["rows"]
    assert (added["change"], added["unobserved"], added["recorded"]) == ("added", ["L0_E5"], None)
    assert added["what_if"]["children"] == ["L0_E5"] and added["on_recorded_signals"] is False
    assert changed["on_recorded_signals"] is True
    assert changed["recorded"]["metrics_at_decision"]["live_experts"] == 5
    assert changed["what_if"]["metrics_at_decision"]["live_experts"] == 6


def test_until_step_on_the_command_line(capsys: pytest.CaptureFixture[str], url: str) -> None:
    """--until-step 20 stops before the first decision: no difference."""
    status, out, _ = run_cli(
        capsys, "what-if", url, "--run", RUN, "--set", "split_share_threshold=0.5", "--until-step", "20"
    )
    assert status == 0
    assert out.splitlines()[0].endswith("through step 20: split_share_threshold 0.4 -> 0.5")
    assert out.splitlines()[1].startswith("no difference")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("split_patients=4", "unknown setting 'split_patients'"),
        ("split_patience=soon", "split_patience must be an int >= 1, got 'soon'"),
        ("split_patience", "--set takes NAME=VALUE"),
        ("merge_below_split_share=maybe", "merge_below_split_share must be True or False"),
    ],
)
def test_a_bad_set_is_one_line_on_stderr_and_exit_2(
    capsys: pytest.CaptureFixture[str], url: str, setting: str, message: str
) -> None:
    """An unknown name, a bad value or a malformed --set: one line, status 2, nothing printed."""
    status, out, err = run_cli(capsys, "what-if", url, "--run", RUN, "--set", setting)
    assert (status, out) == (2, "")
    assert one_line(err).startswith("lifecycle-es what-if: ") and message in err


def test_a_run_without_a_controller_is_one_line_on_stderr_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A run what-if cannot re-run is bad input, as a bad setting is: one line, status 2, nothing printed."""
    url = f"jsonl://{tmp_path / 'runs'}"
    with bus.open(url, "scripted") as log:
        play(Lifecycle(log))
    status, out, err = run_cli(capsys, "what-if", url, "--run", "scripted", "--set", "split_patience=4")
    assert (status, out) == (2, "")
    assert one_line(err).startswith("lifecycle-es what-if: ") and "no controller" in err


def test_values_are_read_as_json_or_python_constants_else_strings() -> None:
    """0.5 is a float, null and None are None, true and True are True, a word is a string."""
    assert [parse_setting(t) for t in ("a=0.5", "b=null", "c=None", "d=True", "e=random", "f=")] == [
        ("a", 0.5),
        ("b", None),
        ("c", None),
        ("d", True),
        ("e", "random"),
        ("f", ""),
    ]


def test_a_real_demo_run_is_reproduced_without_a_change(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """On a real 300-step demo log the counterfactual replays the recorded floats: no difference
    on any CPU, whatever the run decided."""
    url = f"jsonl://{tmp_path / 'runs'}"
    status, _, _ = run_cli(capsys, "demo", "--steps", "300", "--log", url, "--run", "demo", "--quiet")
    assert status == 0
    status, out, err = run_cli(capsys, "what-if", url, "--run", "demo", "--format", "json")
    assert (status, err) == (0, "")
    doc = json.loads(out)
    assert (doc["difference"], doc["rows"], doc["evaluations"]) == (False, [], 30)
    assert doc["same"] == doc["recorded"] == doc["what_if"]

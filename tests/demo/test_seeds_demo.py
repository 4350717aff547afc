"""`lifecycle-es demo seeds`: the command, its log, its replay and its ranks.

No test asserts which decisions a run makes (they follow floats); they assert what holds for
any run: the summary is printed, the log replays to the live run's registry, state tensors and
alpha, and ranks end with one digest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bus import MemoryLog
from replay.cli.demo_seeds import route
from replay.demo.seeds import SeedsOptions, SeedsRun, replay_seeds
from replay.demo.seeds.controllers import DemoPolicy
from tests._cli import one_line, run_cli

STEPS = "300"
"""Enough for the host to plateau and seeds to germinate and start training (about 2 s)."""


def test_demo_seeds_and_demo_moe_route_to_their_commands() -> None:
    """`demo seeds` names the seeds command, `demo moe` and plain `demo` the MoE demo."""
    assert route(["demo", "seeds", "--steps", "5"]) == ["demo-seeds", "--steps", "5"]
    assert route(["--log-level", "info", "demo", "moe", "--quiet"]) == [
        "--log-level",
        "info",
        "demo",
        "--quiet",
    ]
    assert route(["demo", "--steps", "50"]) == ["demo", "--steps", "50"]
    assert route(["tail", "seeds"]) == ["tail", "seeds"]


@pytest.mark.parametrize(
    ("spec", "controller"),
    [("kasmina", "heuristic"), ("module", "heuristic"), ("kasmina", "policy"), ("module", "hybrid")],
)
def test_the_command_prints_its_summary_for_each_spec_and_controller(
    spec: str, controller: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every --spec and --controller trains, prints the summary tables and names the run's files."""
    argv = ["demo", "seeds", "--spec", spec, "--controller", controller, "--steps", STEPS, "--quiet"]
    status, out, err = run_cli(capsys, *argv, "--log", str(tmp_path), "--run", "r")
    assert status == 0, err
    assert "seeds by state" in out and "decision" in out and "held-out loss" in out
    assert (tmp_path / "r.jsonl").is_file() and (tmp_path / "r" / "lifecycle_decisions.jsonl").is_file()
    status, out, _ = run_cli(capsys, "replay", str(tmp_path), "--run", "r")
    assert status == 0 and spec in out  # the registry of the run's seeds


def test_a_policy_file_is_loaded_and_a_bad_one_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--policy FILE loads a DemoPolicy state dict; a file that is not one is a one-line error."""
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save(DemoPolicy("kasmina").state_dict(), good)
    torch.save({"other": torch.zeros(1)}, bad)
    common = ["demo", "seeds", "--controller", "policy", "--steps", "50", "--quiet", "--log", str(tmp_path)]
    status, out, err = run_cli(capsys, *common, "--run", "good", "--policy", str(good))
    assert status == 0 and "decision" in out, err
    status, _, err = run_cli(capsys, *common, "--run", "bad", "--policy", str(bad))
    assert status == 2 and "is not a DemoPolicy state dict" in one_line(err)


def test_the_baseline_reports_the_host_alone_and_a_host_of_equal_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--baseline adds the host alone and a host with the lifecycle model's parameter count to the losses."""
    argv = ["demo", "seeds", "--steps", "100", "--quiet", "--baseline", "--log", str(tmp_path), "--run", "b"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 0, err
    assert "host alone" in out and "(same params)" in out


@pytest.fixture(scope="module", params=["masked", "resize"])
def live(request: pytest.FixtureRequest) -> tuple[SeedsRun, MemoryLog]:
    """A 600-step run with the always-advancing policy, on an in-memory log."""
    log = MemoryLog("seeds")
    options = SeedsOptions(controller="policy", strategy=request.param, steps=600)
    run = SeedsRun(options, log)
    run.run()
    return run, log


def test_the_replay_of_the_log_gives_the_live_registry_state_tensors_and_alpha(
    live: tuple[SeedsRun, MemoryLog],
) -> None:
    """Folding the demo's log again, with the clock ticked as the run did, equals the live run's state."""
    run, log = live
    assert run.lc is not None and run.surgery is not None
    registry, tensors, alpha = replay_seeds(log, run.options)
    assert [(e.entity, e.state, e.entered_step) for e in registry] == [
        (e.entity, e.state, e.entered_step) for e in run.lc.registry
    ]
    assert len(list(registry)) >= run.options.chunks  # every slot had a seed
    assert torch.equal(tensors.state, run.surgery.tensors.state)
    assert torch.equal(alpha, run.surgery.schedule.alpha)


def test_the_run_records_that_it_completed(live: tuple[SeedsRun, MemoryLog]) -> None:
    """The demo's last run-state move is running -> terminated with completed, as the MoE demo's."""
    _, log = live
    moves = [r for r in log.read() if r["kind"] == "RunStateChanged"]
    assert (moves[-1]["from_state"], moves[-1]["to_state"]) == ("running", "terminated")
    assert moves[-1]["attrs"] == {"completed": True}


def test_under_resize_blueprint_rows_exist_only_for_slots_that_germinated(
    live: tuple[SeedsRun, MemoryLog],
) -> None:
    """Under resize the seed layer has one row per slot whose seed germinated, none before; masked has all."""
    run, log = live
    layer = run.model.seed_layer
    rows = [c for chunks in layer.row_chunks.values() for c in chunks]
    if run.options.strategy == "masked":
        assert rows == list(range(run.options.chunks))
        return
    slots = {r["entity"]: r["slot"] for r in log.read(0) if r["kind"] == "EntityRegistered"}
    germinated = {
        slots[r["entity"]]
        for r in log.read(0)
        if r["kind"] == "TransitionApplied" and r["to_state"] == "GERMINATED"
    }
    assert len(rows) == len(set(rows)) and set(rows) <= germinated


@pytest.mark.slow
def test_two_ranks_end_with_identical_digests(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """--ranks 2 trains on two gloo ranks that fold the same log and end with one digest."""
    from replay.cli import main

    status = main(["demo", "seeds", "--ranks", "2", "--steps", STEPS, "--quiet", "--log", str(tmp_path)])
    out, err = capfd.readouterr()
    assert status == 0, err
    digests = set(re.findall(r"rank \d: finished step \d+ with digest ([0-9a-f]{16})", err))
    assert len(digests) == 1, err
    assert "every rank ended with digest" in out


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--steps", "0"], "steps must be an int >= 1"),
        (["--ranks", "2", "--baseline"], "--baseline runs in one process"),
    ],
)
def test_bad_options_are_one_line_and_write_no_log(
    flags: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid option is refused in one line (exit 2) before a log is opened."""
    status, _, err = run_cli(capsys, "demo", "seeds", *flags, "--log", str(tmp_path), "--run", "x")
    assert status == 2 and words in one_line(err)
    assert not (tmp_path / "x.jsonl").exists()

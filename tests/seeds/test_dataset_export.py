"""The dataset export: one (observation, action, probabilities, reward, next observation) row per
seed controller decision, read from the log alone, through the API and `export-decisions --dataset`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

import bus
from lifecycle_es import Lifecycle
from lifecycle_es.controllers import (
    OBSERVATION_KEYS,
    SEED_ACTIONS,
    HeuristicController,
    PolicyController,
    SeedAction,
    SeedDriver,
)
from replay.export import DATASET_FIELDS, dataset_rows
from tests._cli import run_cli

A = SeedAction


def uniform(_: Sequence[float]) -> list[float]:
    return [0.2] * len(SEED_ACTIONS)


def write_run(log: bus.Log) -> Lifecycle:
    """Two seeds: s0 driven by the heuristic (grow, advance, hold), s1 by a uniform policy once."""
    lc = Lifecycle(log, run_id=log.run_id)
    lc.start(seed=9)
    lc.register("s0", "kasmina", slot=0)
    lc.register("s1", "kasmina", slot=1)
    heuristic = SeedDriver(HeuristicController())
    heuristic.run(lc, step=0, entities=["s0"], metrics={"s0": {"loss_delta": 0.0, "loss_improved": 1}})
    SeedDriver(PolicyController(uniform)).run(lc, step=0, entities=["s1"])
    heuristic.run(lc, step=1, entities=["s0"])
    heuristic.run(lc, step=5, entities=["s0"], metrics={"s0": {"host_regression": 0.5}})
    lc.observe({"loss": 1.0}, step=5)  # not a decision: no row
    return lc


def test_rows_chain_each_entitys_observations_and_carry_rewards() -> None:
    """s0's three decisions chain obs -> next obs, the last is done; s1's policy row keeps its
    probabilities; rewards come from the RewardRecorded of each decision."""
    lc = write_run(bus.MemoryLog("dataset"))
    rows = dataset_rows(lc.log)
    assert [list(r) for r in rows] == [list(DATASET_FIELDS)] * 4
    # the uniform policy's most probable action is the first of a tie: hold
    assert [(r["entity"], r["action"]) for r in rows] == [
        ("s0", "grow"),
        ("s1", "hold"),
        ("s0", "advance"),
        ("s0", "hold"),
    ]
    s0 = [r for r in rows if r["entity"] == "s0"]
    assert [r["action_index"] for r in s0] == [SEED_ACTIONS.index(A(r["action"])) for r in s0]
    assert s0[0]["next_observation"] == s0[1]["observation"] and not s0[0]["done"]
    assert s0[1]["next_observation"] == s0[2]["observation"]
    assert s0[2]["next_observation"] is None and s0[2]["done"]
    assert len(s0[0]["observation"]) == len(OBSERVATION_KEYS)
    assert s0[2]["observation"][OBSERVATION_KEYS.index("time_in_state")] == 4.0
    assert [r["reward"] for r in s0] == [1.0, 0.0, -2.0]  # loss improved, nothing, a regression
    (s1,) = [r for r in rows if r["entity"] == "s1"]
    assert s1["probabilities"] == [0.2] * 5 and s1["controller"] == "policy"
    assert s0[0]["probabilities"] is None and s0[0]["controller"] == "heuristic"


def test_the_cli_writes_the_dataset_next_to_the_decisions_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`export-decisions --dataset` writes the rows as JSON lines, to a file or to stdout."""
    log = bus.open(f"jsonl://{tmp_path}/runs", "dataset-cli")
    with log:
        expected = dataset_rows(write_run(log).log)
    url = f"jsonl://{tmp_path}/runs"
    target = tmp_path / "seed_dataset.jsonl"
    status, out, err = run_cli(
        capsys, "export-decisions", url, "--run", "dataset-cli", "--dataset", "-o", str(target)
    )
    assert (status, err) == (0, "")
    assert out == f"4 dataset rows of run dataset-cli written to {target}\n"
    assert [json.loads(line) for line in target.read_text().splitlines()] == expected
    status, out, _ = run_cli(capsys, "export-decisions", url, "--run", "dataset-cli", "--dataset", "-o", "-")
    assert status == 0 and [json.loads(line) for line in out.splitlines()] == expected

"""The fused alpha step: rows left out, unknown ids and replanning after folds, against the transcription.

`tests/seeds/test_grafting_schedules.py` pins every strategy's sequence; these pin what the
fused step adds: a plan naming the rows to step (the others keep every field), epochs that
differ per row, and `AlphaSchedule` deriving its plan again when either projection folds.
Facts come from the same grids away from every threshold, so the test holds on any machine.
"""

from __future__ import annotations

import random
from dataclasses import fields
from typing import Any

import torch

from lifecycle_es import BUILTIN_SPECS
from projections import Snapshot
from projections.seeds import FACTS, AlphaSchedule, GraftingConfig, GraftingStrategy, GraftState
from projections.seeds.grafting import graft_plan, planned_step
from projections.state_tensors import StateTensors
from tests.seeds.test_grafting_schedules import GRID, REFERENCE, RefLinear

CONFIG = GraftingConfig(ramp_duration=12, pause_duration=3, stability_window=2, momentum_factor=0.5)


def _table(rows: list[dict[str, float]]) -> torch.Tensor:
    return torch.tensor([[row[name] for name in FACTS] for row in rows])


def test_rows_left_out_of_a_plan_keep_every_field_and_the_others_follow_the_transcription() -> None:
    """Seeds stepped at random steps and their own epochs follow the transcription; skipped rows keep all."""
    rng = random.Random(3)
    ids = [int(s) for s in GraftingStrategy for _ in range(4)] + [9, -1]  # unknown ids step as linear
    refs = [(REFERENCE[GraftingStrategy(i)] if 0 <= i < 5 else RefLinear)(CONFIG) for i in ids]
    alphas, epochs = [0.0] * len(ids), [0] * len(ids)
    state, strategies = GraftState.blank(len(ids)), torch.tensor(ids)
    for _ in range(60):
        facts = [{name: rng.choice(GRID[name]) for name in FACTS} for _ in ids]
        stepped = [rng.random() < 0.7 for _ in ids]
        plan = graft_plan(_table(facts), strategies, CONFIG, torch.tensor(stepped))
        after = planned_step(state, plan, torch.tensor(epochs), CONFIG)
        for i, on in enumerate(stepped):
            if on:
                alphas[i] = refs[i].compute(epochs[i], alphas[i], facts[i])
                epochs[i] += 1
            else:
                assert all(
                    torch.equal(getattr(after, f.name)[i], getattr(state, f.name)[i]) for f in fields(state)
                )
        torch.testing.assert_close(after.alpha, torch.tensor(alphas), atol=1e-6, rtol=0)
        state = after


def _records(first_seq: int, kind: str, **fields_: Any) -> dict[str, Any]:
    return {"seq": first_seq, "kind": kind, "step": 0, **fields_}


def test_a_schedule_plans_again_after_folding_new_facts() -> None:
    """A drift fact folded between two ticks pauses a drift-controlled seed at the next tick (alpha holds)."""
    tensors, schedule = StateTensors(dict(BUILTIN_SPECS), capacity=1), AlphaSchedule(CONFIG)
    register = _records(
        1, "EntityRegistered", entity="s", spec="kasmina", state="GRAFTING", attrs={"grafting_strategy": 1}
    )
    for projection in (tensors, schedule):
        projection.apply([register])
    seen = []
    for step in range(1, 7):
        if step == 4:
            drift = _records(2, "MetricsObserved", entity="s", metrics={"drift": 0.5})
            tensors.apply([drift])
            schedule.apply([drift])
        tensors.advance(step)
        schedule.tick(tensors, step)
        seen.append(round(float(schedule.alpha[0]), 6))
    assert seen == [round(e / 12, 6) for e in (1, 2, 3, 3, 3, 3)]


def test_a_snapshot_with_integer_counters_restores_as_float32() -> None:
    """A snapshot written when the pause and unstable counters were int32 restores them as float32 values."""
    schedule = AlphaSchedule(CONFIG)
    state = schedule.snapshot().state | {
        "rows": ["s"],
        "specs": ["kasmina"],
        "grafting": [1],
        "facts": torch.zeros(1, len(FACTS)),
        "ticked": 5,
        **{f.name: getattr(GraftState.blank(1), f.name) for f in fields(GraftState)},
    }
    state["pause"] = torch.tensor([2], dtype=torch.int32)
    state["unstable"] = torch.tensor([1], dtype=torch.int32)
    schedule.restore(Snapshot(kind=schedule.name, seq=1, state=state))
    assert schedule.state.pause.dtype == torch.float32 and schedule.state.pause.tolist() == [2.0]
    assert schedule.state.unstable.tolist() == [1.0]

"""A small seed-host rig for the seed tests: a host, its seed layer, the projections, a lifecycle.

Gates all pass (the kasmina gates and the minimum time in state are not what these tests pin),
so a scripted `PLAN` walks seeds through every state at fixed steps on any machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import bus
from lifecycle_es import BUILTIN_SPECS, Gate, GateCategory, GateLibrary, GateResult, Lifecycle
from lifecycle_es.gates import MIN_TIME_GATE
from projections.moe import Strategy
from projections.seeds import AlphaSchedule, GraftingConfig, RollbackPoints, SeedLayer, SeedSurgery
from projections.state_tensors import StateTensors

SPECS = dict(BUILTIN_SPECS)
IN, OUT, CHUNKS = 6, 12, 4

PLAN: Mapping[int, Sequence[tuple[str, str]]] = {
    2: [("s0", "GERMINATED"), ("s1", "GERMINATED"), ("s2", "GERMINATED")],
    4: [("s0", "TRAINING"), ("s1", "TRAINING"), ("s2", "TRAINING")],
    8: [("s0", "GRAFTING"), ("s1", "GRAFTING")],
    10: [("s2", "CULLED")],
    16: [("s1", "ROLLED_BACK")],
    20: [("s0", "STABILIZATION")],
    22: [("s0", "EVALUATING")],
    24: [("s0", "FINE_TUNING")],
    28: [("s0", "FOSSILIZED")],
}
"""Scripted kasmina transitions by step: a seed that fossilizes, one rolled back, one culled."""
STEPS = 32


def passing_gates() -> GateLibrary:
    """Every gate of the built-in specs, and the minimum time in state, passing."""
    names = set().union(*(spec.gate_names for spec in SPECS.values())) | {MIN_TIME_GATE}
    return GateLibrary(
        [Gate(n, GateCategory.STRUCTURAL, lambda i, p: GateResult(True, "ok", {})) for n in sorted(names)]
    )


def register_seeds(lc: Lifecycle, step: int = 0) -> None:
    """Register the plan's three seeds in chunks 0, 1 and 3, with different blueprints and strategies."""
    lc.register("s0", "kasmina", layer=0, slot=0, step=step, attrs={"blueprint": 0, "grafting_strategy": 0})
    lc.register("s1", "kasmina", layer=0, slot=1, step=step, attrs={"blueprint": 1, "grafting_strategy": 2})
    lc.register("s2", "kasmina", layer=0, slot=3, step=step, attrs={"blueprint": "residual_mlp"})


@dataclass
class Rig:
    """One model: host and seed layer, Adam, state tensors, alpha schedule and surgery."""

    strategy: Strategy = "masked"
    rollback: RollbackPoints | None = None
    seed: int = 0
    rank: int = 0
    """Which slice of data this model trains on (ranks of a data-parallel run differ)."""
    reduce_grads: Callable[[list[torch.Tensor]], None] | None = None
    """Averages the gradients across ranks in place, between backward and the step."""
    layer: SeedLayer = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)
    tensors: StateTensors = field(init=False)
    schedule: AlphaSchedule = field(init=False)
    surgery: SeedSurgery = field(init=False)

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        host = nn.Linear(IN, OUT)
        with torch.no_grad():
            for p in host.parameters():
                p.copy_(torch.empty(p.shape).uniform_(-0.4, 0.4, generator=gen))
        self.layer = SeedLayer(host, chunks=CHUNKS, strategy=self.strategy, generator=gen)
        self.optimizer = torch.optim.Adam(self.layer.parameters(), lr=0.01)
        self.tensors = StateTensors(SPECS)
        self.schedule = AlphaSchedule(GraftingConfig(ramp_duration=8))
        self.surgery = SeedSurgery(
            {0: self.layer},
            self.optimizer,
            tensors=self.tensors,
            schedule=self.schedule,
            rollback=self.rollback,
            model=self.layer,
        )

    def train_step(self, step: int) -> None:
        """Tick the clock, then one Adam step on a fixed regression batch plus the seeds' loss."""
        self.surgery.tick(step)
        gen = torch.Generator().manual_seed(1000 + step + 100_000 * self.rank)
        x = torch.randn(16, IN, generator=gen)
        target = torch.sin(x @ torch.ones(IN, OUT) * 0.3)
        self.optimizer.zero_grad(set_to_none=True)
        loss = (self.layer(x) - target).square().mean() + self.layer.seed_loss
        loss.backward()
        if self.reduce_grads is not None:
            self.reduce_grads([p.grad for p in self.layer.parameters() if p.grad is not None])
        self.optimizer.step()


def run_plan(rig: Rig, log: bus.Log | None = None, *, steps: int = STEPS) -> Lifecycle:
    """Drive the rig through `PLAN` live: each step trains, then its transitions are folded."""
    lc = Lifecycle(log, gates=passing_gates())
    register_seeds(lc)
    rig.surgery.apply(lc.log.read())
    for step in range(steps):
        rig.train_step(step)
        lc.advance(step)
        for entity, to in PLAN.get(step, ()):
            lc.transition(entity, to)
        rig.surgery.apply(lc.log.read(rig.surgery.seq))
    return lc


def replay(rig: Rig, records: Iterable[dict[str, Any]], *, steps: int = STEPS) -> None:
    """Fold a log into a fresh rig as the live run did: step s's records after step s trains."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        by_step.setdefault(record["step"], []).append(record)
    registered = [r for r in by_step.get(0, []) if r["kind"] == "EntityRegistered"]
    rig.surgery.apply(registered)  # before the first step, as `run_plan` does (seen seqs are skipped later)
    for step in range(steps):
        rig.train_step(step)
        rig.surgery.apply(by_step.get(step, []))

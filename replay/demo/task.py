"""The demo's synthetic, non-stationary task: token types whose mix and meaning change in phases.

Every token has a *type* t. Its input is `center[t] + z` with z ~ N(0, I), and its target is
`map[t] @ z`, a linear map of the noise particular to the type. An expert's hidden width is
the rank of one map (`d_hidden == d_out`), so an expert fits one type's map and no more: two
types on one expert cost loss, a type with an expert of its own is fit almost exactly. Types
are told apart by their centers, which the router sees.

The phases are built so that each lifecycle action becomes useful at some point, while the
lifecycle sees only routing statistics and weights, never the schedule:

| phase | types (share of tokens) | what the layer faces | calls for |
|---|---|---|---|
| settle | 0-3 (1/4 each) | four maps, four experts | little |
| arrival | 0-5 (1/6 each) | 4 and 5 appear: experts serve two types each | spawn |
| departure | 2-5 (1/4 each) | 0 and 1 vanish: their experts idle | prune |
| surge | 2 (2/3), 3-5 (1/9 each) | one type's expert takes most of the routing | split |
| calm | 2-5 (1/4 each) | the surge is over: the split's halves serve one type | merge |

A split copies the overloaded expert, router row included, so its two halves share the surging
type and stay alike; once it calms down they carry no more than one expert can, and merge.

Data come from CPU `torch.Generator`s of their own, so two runs with one seed see the same
tokens, with or without the lifecycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from lifecycle_es.errors import ConfigError

__all__ = ["PHASES", "Batch", "Phase", "Task"]

NUM_TYPES = 6
D_IN = 16
D_OUT = 8


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of the run: which types occur, how often, and which have become another."""

    name: str
    start: float
    """Where the phase begins, as a fraction of the run's steps."""
    weights: Mapping[int, float]
    """Relative frequency of each type that occurs."""
    same_as: Mapping[int, int] = field(default_factory=dict)
    """Types that become another type in this phase: its center, its map and its label."""


_BASE = {2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}

PHASES: tuple[Phase, ...] = (
    Phase("settle", 0.0, {0: 1, 1: 1, 2: 1, 3: 1}),
    Phase("arrival", 0.2, {0: 1, 1: 1, **_BASE}),
    Phase("departure", 0.4, _BASE),
    Phase("surge", 0.6, {**_BASE, 2: 6.0}),
    Phase("calm", 0.8, _BASE),
)
"""The default schedule; see the module docstring for why each phase is there."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of tokens: inputs [tokens, D_IN], targets [tokens, D_OUT], types [tokens]."""

    x: torch.Tensor
    y: torch.Tensor
    types: torch.Tensor

    def shard(self, rank: int, world_size: int) -> Batch:
        """Return rank `rank`'s share of the batch: every `world_size`-th token from `rank`."""
        if world_size == 1:
            return self
        return Batch(self.x[rank::world_size], self.y[rank::world_size], self.types[rank::world_size])


class Task:
    """Draws batches of the phase a step falls in, from seeded CPU generators only."""

    num_types = NUM_TYPES
    d_in = D_IN
    d_out = D_OUT

    def __init__(
        self,
        *,
        seed: int,
        steps: int,
        batch_size: int,
        phases: tuple[Phase, ...] = PHASES,
        separation: float = 2.0,
    ) -> None:
        """Build the types' centers and maps from `seed`, centers `separation` times N(0, I)."""
        if steps < 1 or batch_size < 1:
            raise ConfigError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
        self.steps, self.batch_size, self.phases = steps, batch_size, phases
        g = torch.Generator().manual_seed(_derive(seed, 1))
        self.centers = torch.randn(NUM_TYPES, D_IN, generator=g) * separation
        self.maps = torch.randn(NUM_TYPES, D_OUT, D_IN, generator=g) / math.sqrt(D_IN)
        self._stream = torch.Generator().manual_seed(_derive(seed, 2))
        self._eval_seed = _derive(seed, 3)

    def phase_index(self, step: int) -> int:
        """Return the index of the phase step `step` (from 1) falls in."""
        fraction = (step - 1) / self.steps
        return max(i for i, p in enumerate(self.phases) if p.start <= fraction)

    def phase_end(self, index: int) -> int:
        """Return the last step of phase `index`."""
        if index + 1 >= len(self.phases):
            return self.steps
        return math.floor(self.phases[index + 1].start * self.steps)

    def batch(self, step: int) -> Batch:
        """Return the training batch of `step`: the next draw of the task's stream."""
        return self._draw(self.phases[self.phase_index(step)], self.batch_size, self._stream)

    def state(self) -> torch.Tensor:
        """Return the training stream's generator state, for a checkpoint."""
        return self._stream.get_state()

    def load_state(self, state: torch.Tensor) -> None:
        """Continue the training stream from a `state()`."""
        self._stream.set_state(state)

    def eval_batch(self, index: int, size: int = 4096) -> Batch:
        """Return a fixed held-out batch of phase `index` (the same on every call)."""
        g = torch.Generator().manual_seed(self._eval_seed + index)
        return self._draw(self.phases[index], size, g)

    def _draw(self, phase: Phase, size: int, g: torch.Generator) -> Batch:
        kinds = sorted(phase.weights)
        probs = torch.tensor([float(phase.weights[k]) for k in kinds])
        types = torch.tensor(kinds)[torch.multinomial(probs, size, replacement=True, generator=g)]
        z = torch.randn(size, D_IN, generator=g)
        shape = types.clone()
        for kind, twin in phase.same_as.items():
            shape[types == kind] = twin
        x = self.centers[shape] + z
        y = torch.einsum("toi,ti->to", self.maps[shape], z)
        return Batch(x=x, y=y, types=shape)


def _derive(seed: int, stream: int) -> int:
    """Return the seed of one of the task's streams: distinct streams for one user seed."""
    return (seed * 1_000_003 + stream * 7919) % (2**63)

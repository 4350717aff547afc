"""The seeds demo's task and host: a teacher too wide for the host, and the host with a seed layer.

The teacher is a random two-layer tanh network 8 -> 64 -> 4; the host is 8 -> W -> W -> 4 with
W = 8 by default. Its middle layer is a main linear map plus a side one wrapped in a `SeedLayer`
whose chunks seeds grow into. The side branch is kept although grafted and fossilized
blueprints now pass the gradient to their input: over seeds 0..4 (heuristic, 3000 steps) the
seed layer in place of the main map ended at 0.986x the host alone's held-out loss, on the side
branch at 0.97x. The host alone plateaus well above zero loss, which is what makes the
controller grow seeds.
"""

from __future__ import annotations

import torch
from torch import nn

from projections.moe import Strategy
from projections.seeds import SeedLayer

__all__ = ["IN_FEATURES", "OUT_FEATURES", "SeedsModel", "SeedsTask", "parameter_count"]

IN_FEATURES, OUT_FEATURES, TEACHER_WIDTH = 8, 4, 64


class SeedsTask:
    """Batches of the teacher's regression task: a new batch per step, and a fixed held-out one."""

    def __init__(self, seed: int, batch_size: int) -> None:
        gen = torch.Generator().manual_seed(1_000_003 + seed)
        self.w1 = torch.randn(IN_FEATURES, TEACHER_WIDTH, generator=gen) * 0.6
        self.w2 = torch.randn(TEACHER_WIDTH, OUT_FEATURES, generator=gen) / TEACHER_WIDTH**0.5
        self.seed, self.batch_size = seed, batch_size
        held = torch.Generator().manual_seed(2_000_003 + seed)
        self.eval_x = torch.randn(512, IN_FEATURES, generator=held)
        self.eval_y = self.target(self.eval_x)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's output for `x`."""
        out: torch.Tensor = torch.tanh(x @ self.w1) @ self.w2
        return out

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return step `step`'s training batch (the same on every run and rank)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_000 + step)
        x = torch.randn(self.batch_size, IN_FEATURES, generator=gen)
        return x, self.target(x)


class SeedsModel(nn.Module):
    """The host: in -> tanh -> main + side -> tanh -> out, the side a `SeedLayer` (plain for baselines)."""

    def __init__(
        self, width: int, *, chunks: int, strategy: Strategy, blueprint: str, seed: int, seeds: bool = True
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(IN_FEATURES, width)
        self.main = nn.Linear(width, width)
        host = nn.Linear(width, width, bias=False)
        self.out = nn.Linear(width, OUT_FEATURES)
        gen = torch.Generator().manual_seed(seed)
        self.mid: nn.Module = (
            SeedLayer(host, chunks=chunks, blueprints=[blueprint], strategy=strategy, generator=gen)
            if seeds
            else host
        )

    @property
    def seed_layer(self) -> SeedLayer:
        """The seed layer (only on a model built with seeds)."""
        assert isinstance(self.mid, SeedLayer)
        return self.mid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the prediction for `x`."""
        h = torch.tanh(self.inp(x))
        out: torch.Tensor = self.out(torch.tanh(self.main(h) + self.mid(h)))
        return out

    def seed_loss(self) -> torch.Tensor:
        """The training seeds' reconstruction loss of the last forward (0 without seeds)."""
        return self.seed_layer.seed_loss if isinstance(self.mid, SeedLayer) else torch.zeros(())


def parameter_count(width: int) -> int:
    """Return the host's parameters at middle width `width` (no seed weights)."""
    return (IN_FEATURES + 1) * width + (width + 1) * width + width * width + (width + 1) * OUT_FEATURES

"""The demo's model: a linear embedding, residual MoE layers, and a linear head.

Every parameter is drawn from one seeded CPU generator (modules are built without drawing from
the global RNG), so two builds with one seed are equal bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from projections.moe.layer import MoELayer

__all__ = ["DemoModel"]


class DemoModel(nn.Module):
    """`x -> embed -> (h + moe(h)) per layer -> head`: a small regression MoE."""

    def __init__(
        self,
        *,
        d_in: int,
        d_out: int,
        d_model: int,
        d_hidden: int,
        capacity: int,
        layers: int,
        top_k: int,
        seed: int,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = _linear(d_in, d_model, g)
        self.moe = nn.ModuleList(
            MoELayer(d_model, d_hidden, capacity, top_k=top_k, generator=g) for _ in range(layers)
        )
        self.head = _linear(d_model, d_out, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs [tokens, d_in] to predictions [tokens, d_out]."""
        h: torch.Tensor = self.embed(x)
        for layer in self.moe:
            h = h + layer(h)
        out: torch.Tensor = self.head(h)
        return out

    @torch.no_grad()
    def layer_inputs(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Return each MoE layer's inputs [tokens, d_model] for `x`: the lifecycle's `revival`
        inputs, on which parked experts are scored and splits find their push direction."""
        h: torch.Tensor = self.embed(x)
        found = {}
        for i, layer in enumerate(self.moe):
            found[i] = h
            if i + 1 < len(self.moe):
                h = h + layer(h)
        return found

    def layers(self) -> dict[int, MoELayer]:
        """Return the MoE layers by index, as surgery and basin tracking take them."""
        return {i: layer for i, layer in enumerate(self.moe) if isinstance(layer, MoELayer)}


def _linear(fan_in: int, fan_out: int, g: torch.Generator) -> nn.Linear:
    """Return an `nn.Linear` with PyTorch's default bounds, drawn from `g` instead of the global RNG."""
    layer = nn.Linear(fan_in, fan_out, device="meta").to_empty(device="cpu")  # no init drawn
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        layer.weight.copy_(torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=g))
        layer.bias.copy_(torch.empty(fan_out).uniform_(-bound, bound, generator=g))
    return layer

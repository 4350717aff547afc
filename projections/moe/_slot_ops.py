"""Row operations on one MoE layer's slot-major parameters and their optimizer state.

Each operation writes a slot's rows of every expert and router parameter under `no_grad`,
and the matching rows of the optimizer's moments, so weights and optimizer state never
disagree about which expert a row is. Noise comes only from `_noise.draw_normal`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lifecycle_es.errors import ConfigError
from projections.moe import _optim_state as optim_state
from projections.moe._noise import draw_normal
from projections.moe.layer import ExpertLayer

__all__ = ["SlotEditor"]


class SlotEditor:
    """Edits the rows of one layer's slot-major parameters together with their moments."""

    def __init__(self, index: int, layer: ExpertLayer, optimizer: torch.optim.Optimizer) -> None:
        self.index = index
        self.layer = layer
        self.optimizer = optimizer
        self.params()  # fail at construction on clashing names, not at the first action

    def params(self) -> dict[str, nn.Parameter]:
        """Return the layer's expert and router parameters by name, in sorted name order."""
        experts, router = self.layer.expert_parameters(), self.layer.router_parameters()
        clash = set(experts) & set(router)
        if clash:
            raise ConfigError(f"layer {self.index}: expert and router parameters share {sorted(clash)}")
        return dict(sorted({**experts, **router}.items()))

    def qualified(self, name: str) -> str:
        """Return the name a parameter's noise is seeded with: unique across layers."""
        return f"layers.{self.index}.{name}"

    @torch.no_grad()
    def clone(self, dst: int, sources: Sequence[int], *, scale: float, seed: int, target: str) -> None:
        """Write the mean of `sources` plus noise of `scale` times its RMS into `dst`.

        One source is clone-and-perturb (and split); several are mean-of-cluster. The slot
        inherits the sources' moments: a copy for one, the mean for several.
        """
        for name, param in self.params().items():
            base = param[sources[0]] if len(sources) == 1 else param[list(sources)].mean(dim=0)
            noise = draw_normal(base, seed=seed, name=self.qualified(name), target=target)
            rms = base.float().norm() / math.sqrt(max(base.numel(), 1))
            param[dst] = base + (scale * rms).to(param.dtype) * noise
            optim_state.inherit_rows(self.optimizer, param, dst, sources)

    @torch.no_grad()
    def push_apart(
        self,
        keep: int,
        other: int,
        *,
        push: float,
        seed: int,
        target: str,
        direction: Sequence[float] | None = None,
    ) -> None:
        """Move the router rows of `keep` and `other` apart by `push` times `keep`'s row norm.

        The direction is `direction` (a split's recorded one, for router rows of its length),
        else seeded noise, made orthogonal to `keep`'s row, so the two rows score the inputs on
        either side of a hyperplane through the shared basin differently; rows of one value (a
        bias) have no direction and are left alone, and so are the moments.
        """
        for name, param in self.layer.router_parameters().items():
            row = param[keep].float()
            if row.numel() < 2:
                continue
            if direction is not None and len(direction) == row.numel():
                noise = torch.tensor(direction, dtype=row.dtype, device=row.device).reshape(row.shape)
            else:
                noise = draw_normal(row, seed=seed, name=self.qualified(name) + "/split", target=target)
            unit = row.flatten() / row.norm().clamp_min(1e-12)
            noise = noise.flatten() - (noise.flatten() @ unit) * unit
            delta = (push * row.norm() / noise.norm().clamp_min(1e-12)) * noise
            delta = delta.reshape(row.shape)
            param[other] = (row - delta).to(param.dtype)
            param[keep] = (row + delta).to(param.dtype)

    @torch.no_grad()
    def randomize(self, dst: int, siblings: Sequence[int], *, seed: int, target: str) -> None:
        """Write zero-mean noise at the siblings' spread into `dst`, with fresh moments.

        The spread is the standard deviation of the siblings' entries of each parameter (all
        rows when no sibling routes), so a newborn starts on the scale its layer trained to.
        """
        for name, param in self.params().items():
            pool = param[list(siblings)] if siblings else param
            spread = pool.float().std(correction=0) if pool.numel() > 1 else pool.new_zeros(())
            noise = draw_normal(param[dst], seed=seed, name=self.qualified(name), target=target)
            param[dst] = spread.to(param.dtype) * noise
            optim_state.fresh_rows(self.optimizer, param, dst, siblings)

    @torch.no_grad()
    def average(self, dst: int, rows: Sequence[int], weights: Sequence[float]) -> None:
        """Write the weighted mean of `rows` into `dst`; `dst` keeps its own moments."""
        total = math.fsum(weights)
        for param in self.params().values():
            w = torch.tensor([x / total for x in weights], dtype=param.dtype, device=param.device)
            param[dst] = torch.tensordot(w, param[list(rows)], dims=1)

    def clear(self, row: int) -> None:
        """Zero the moments of `row`, so a masked-out slot stops moving."""
        for param in self.params().values():
            optim_state.clear_rows(self.optimizer, param, row)

    def resize(self, index: Sequence[int | None]) -> None:
        """Replace every slot-major parameter by its rows `index` (None: a new, zero row).

        New parameter objects go into the optimizer where the old ones were, with their state
        reindexed the same way; the layer swaps them in with `replace_parameters`.
        """
        fresh: dict[str, nn.Parameter] = {}
        for name, old in self.params().items():
            new = nn.Parameter(optim_state.reindexed(old.detach(), index), requires_grad=old.requires_grad)
            optim_state.swap_parameter(self.optimizer, old, new, index)
            fresh[name] = new
        self.layer.replace_parameters(fresh)

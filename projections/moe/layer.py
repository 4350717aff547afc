"""The MoE layer contract model surgery talks to, and a reference top-k MoE layer.

A layer exposes its experts as *slot-major* parameters: every tensor that belongs to one
expert slot is a parameter whose dim 0 indexes the slots, so row i of each is slot i. Batched
expert weights are how grouped-GEMM MoE layers store experts anyway (torchtitan's
`GroupedExperts`, Megablocks), and the layout makes every surgery a row operation on a
parameter and on its optimizer state, with no module created or destroyed. The router's
output rows are slot-major the same way.

`MoELayer` is the reference implementation. Its forward reads a device bool mask of the slots
that route and never waits on the host, so the lifecycle costs nothing on steps where nothing
changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from lifecycle_es.errors import ConfigError, UsageError

__all__ = ["ExpertLayer", "MoELayer"]


@runtime_checkable
class ExpertLayer(Protocol):
    """What model surgery needs from an MoE layer: slot-major parameters and a routing mask."""

    @property
    def capacity(self) -> int:
        """Slots allocated: the size of dim 0 of every slot-major parameter."""
        ...

    def expert_parameters(self) -> Mapping[str, nn.Parameter]:
        """Return the experts' parameters by stable name; row i of each belongs to slot i."""
        ...

    def router_parameters(self) -> Mapping[str, nn.Parameter]:
        """Return the router's per-slot parameters by stable name; row i scores slot i."""
        ...

    def set_active(self, mask: torch.Tensor) -> None:
        """Make exactly the slots where `mask` ([capacity] bool) is True eligible for routing."""
        ...

    def replace_parameters(self, params: Mapping[str, nn.Parameter]) -> None:
        """Swap in new slot-major parameters (the resize strategy); names as returned above."""
        ...


class MoELayer(nn.Module):
    """A top-k MoE feed-forward layer over a fixed capacity of expert slots.

    Every expert is a two-layer ReLU MLP stored batched: `w1` [capacity, d_model, d_hidden],
    `b1` [capacity, d_hidden], `w2` [capacity, d_hidden, d_model], `b2` [capacity, d_model];
    the router is `router_weight` [capacity, d_model] (no bias). The forward evaluates every
    slot densely and combines them with gates that are exactly zero off the top-k: it spends
    capacity-times the FLOPs of a sparse dispatch, but has no data-dependent shapes, so no host
    sync, and a slot that gets no token gets an exact zero gradient.

    After each forward, `last_counts` [capacity] holds the tokens routed to each slot,
    `last_prob_sums` [capacity] the router probability summed over tokens, `last_indices`
    [tokens, top_k] the selected slots (-1 where fewer than top_k slots route), and
    `last_weights` [tokens, top_k] the gate weight of each selection (0 for -1): detached device
    tensors for basin tracking to read at evaluation checkpoints.
    """

    active: torch.Tensor

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        capacity: int,
        *,
        top_k: int = 2,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(d_model=d_model, d_hidden=d_hidden, capacity=capacity, top_k=top_k)
        self.d_model, self.d_hidden, self.top_k = d_model, d_hidden, top_k

        def blank(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(*shape, device=device, dtype=dtype))

        self.w1 = blank(capacity, d_model, d_hidden)
        self.b1 = blank(capacity, d_hidden)
        self.w2 = blank(capacity, d_hidden, d_model)
        self.b2 = blank(capacity, d_model)
        self.router_weight = blank(capacity, d_model)
        # nn.Linear's bound, drawn on the CPU in fp32 from the caller's generator, so two builds
        # are equal on any device (a CPU generator cannot draw into a CUDA tensor anyway).
        for weight, fan_in in ((self.w1, d_model), (self.w2, d_hidden), (self.router_weight, d_model)):
            bound = 1.0 / math.sqrt(fan_in)
            drawn = torch.empty(tuple(weight.shape)).uniform_(-bound, bound, generator=generator)
            with torch.no_grad():
                weight.copy_(drawn)
        self.register_buffer("active", torch.ones(capacity, dtype=torch.bool, device=device))
        self._reset_stats()

    @property
    def capacity(self) -> int:
        """Slots allocated: dim 0 of every slot-major parameter."""
        return int(self.w1.shape[0])

    def expert_parameters(self) -> dict[str, nn.Parameter]:
        """Return the batched expert weights by name; row i of each is expert slot i."""
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}

    def router_parameters(self) -> dict[str, nn.Parameter]:
        """Return the router weight; row i scores slot i."""
        return {"router_weight": self.router_weight}

    def set_active(self, mask: torch.Tensor) -> None:
        """Copy a [capacity] bool mask into the `active` buffer, in place (no reallocation)."""
        if mask.shape != self.active.shape:
            raise UsageError(f"mask shape {tuple(mask.shape)} != capacity ({self.capacity},)")
        self.active.copy_(mask, non_blocking=True)

    def replace_parameters(self, params: Mapping[str, nn.Parameter]) -> None:
        """Swap in resized slot-major parameters; the mask is resized with every slot inactive."""
        known = self.expert_parameters() | self.router_parameters()
        if set(params) != set(known):
            raise UsageError(f"expected parameters {sorted(known)}, got {sorted(params)}")
        sizes = {int(p.shape[0]) for p in params.values()}
        if len(sizes) != 1:
            raise UsageError(f"slot-major parameters disagree on the capacity: {sorted(sizes)}")
        for name, param in params.items():
            setattr(self, name, param)  # re-registers under the same name, keeping the order
        self.active = torch.zeros(sizes.pop(), dtype=torch.bool, device=self.active.device)
        self._reset_stats()

    def _reset_stats(self) -> None:
        like = self.router_weight
        self.last_counts = torch.zeros(self.capacity, device=like.device)
        self.last_prob_sums = torch.zeros(self.capacity, device=like.device)
        self.last_indices = torch.empty(0, self.top_k, dtype=torch.long, device=like.device)
        self.last_weights = torch.empty(0, self.top_k, device=like.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Route each token of `x` [tokens, d_model] to its top-k routing slots; same shape out."""
        logits = (x @ self.router_weight.t()).masked_fill(~self.active, float("-inf"))
        top_logits, top_idx = logits.topk(min(self.top_k, self.capacity), dim=-1)
        chosen = top_logits.isfinite()  # False where fewer than top_k slots route
        # With no routing slot at all the softmax is 0/0; those tokens get a zero output.
        weights = torch.softmax(top_logits, dim=-1).masked_fill(~chosen, 0.0)
        gates = torch.zeros_like(logits).scatter(-1, top_idx, weights)
        hidden = torch.relu(torch.einsum("td,cdh->tch", x, self.w1) + self.b1)
        out = torch.einsum("tch,chd->tcd", hidden, self.w2) + self.b2
        self._record_stats(logits.detach(), top_idx, chosen)
        self.last_weights = weights.detach()
        return torch.einsum("tc,tcd->td", gates, out)

    def _record_stats(self, logits: torch.Tensor, top_idx: torch.Tensor, chosen: torch.Tensor) -> None:
        """Keep this forward's routing statistics as device tensors (no host sync)."""
        counts = torch.zeros(self.capacity, device=logits.device)
        self.last_counts = counts.index_add_(0, top_idx.flatten(), chosen.flatten().to(counts.dtype))
        probs = torch.softmax(logits.float(), dim=-1).nan_to_num(0.0)
        self.last_prob_sums = probs.sum(dim=0)
        self.last_indices = top_idx.masked_fill(~chosen, -1)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an int >= 1, got {value!r}")

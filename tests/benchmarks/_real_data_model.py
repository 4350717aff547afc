"""The real-data benchmark's model: a user-written top-2 MoE classifier, not `projections.moe.MoELayer`.

Written the way an ML engineer would write their own layer, then made to meet the two public
protocols the lifecycle reads (`projections.moe.ExpertLayer` for surgery, `RoutedLayer` for
basin tracking): slot-major expert weights, a router with one row per slot, an `active` mask,
and the last forward's top-2 selections kept as detached tensors. Experts are tiny ReLU MLPs
computed densely (every slot, masked gates), which is cheap at this size and has no
data-dependent shapes.

The load-balancing loss is Switch Transformer's (Fedus et al. 2021, eq. 4), over the slots that
route: n * sum_i f_i * P_i, with f_i the fraction of top-2 dispatches to slot i and P_i its mean
router probability; 1.0 when routing is perfectly even.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["DigitMoE", "TopTwoMoE"]


def _uniform(shape: tuple[int, ...], fan_in: int, g: torch.Generator) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound, generator=g))


class TopTwoMoE(nn.Module):
    """A top-2 mixture of small ReLU MLP experts over `capacity` slots, with a Switch balancing loss."""

    active: torch.Tensor

    def __init__(self, d_model: int, d_hidden: int, capacity: int, *, g: torch.Generator) -> None:
        super().__init__()
        self.top_k = 2
        self.w1 = _uniform((capacity, d_model, d_hidden), d_model, g)
        self.b1 = nn.Parameter(torch.zeros(capacity, d_hidden))
        self.w2 = _uniform((capacity, d_hidden, d_model), d_hidden, g)
        self.b2 = nn.Parameter(torch.zeros(capacity, d_model))
        self.router = _uniform((capacity, d_model), d_model, g)
        self.register_buffer("active", torch.ones(capacity, dtype=torch.bool))
        self.last_indices = torch.empty(0, 2, dtype=torch.long)
        self.last_weights = torch.empty(0, 2)
        self.balance_loss = torch.zeros(())
        """The last forward's Switch load-balancing loss (with its graph), for the training loss."""
        self.last_input = torch.empty(0, d_model)
        """The last forward's inputs (detached): where a parked expert's router row is scored."""

    # -- what the lifecycle reads (ExpertLayer, RoutedLayer) -----------------------------------

    @property
    def capacity(self) -> int:
        """Expert slots allocated: dim 0 of every slot-major parameter."""
        return int(self.w1.shape[0])

    def expert_parameters(self) -> Mapping[str, nn.Parameter]:
        """The experts' weights by name; row i of each is slot i."""
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}

    def router_parameters(self) -> Mapping[str, nn.Parameter]:
        """The router's weights; row i scores slot i."""
        return {"router": self.router}

    def set_active(self, mask: torch.Tensor) -> None:
        """Route only to the slots where `mask` is True."""
        self.active.copy_(mask)

    def replace_parameters(self, params: Mapping[str, nn.Parameter]) -> None:
        """Take resized slot-major parameters (the resize strategy); every slot starts inactive."""
        for name, param in params.items():
            setattr(self, name, param)
        self.active = torch.zeros(int(self.w1.shape[0]), dtype=torch.bool)

    # -- the layer -----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix each token's two best-scoring routing experts, weighted by a softmax over the two."""
        logits = (x @ self.router.t()).masked_fill(~self.active, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        top_logits, top_idx = logits.topk(2, dim=-1)
        weights = torch.softmax(top_logits, dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, top_idx, weights)
        hidden = torch.relu(torch.einsum("td,cdh->tch", x, self.w1) + self.b1)
        out = torch.einsum("tch,chd->tcd", hidden, self.w2) + self.b2
        self.last_indices, self.last_weights = top_idx.detach(), weights.detach()
        self.last_input = x.detach()
        self.balance_loss = self._switch_loss(probs, top_idx)
        return torch.einsum("tc,tcd->td", gates, out)

    def _switch_loss(self, probs: torch.Tensor, top_idx: torch.Tensor) -> torch.Tensor:
        """n * sum_i f_i * P_i over the routing slots (inactive slots have f = P = 0)."""
        dispatched = torch.zeros_like(probs).scatter(-1, top_idx, 1.0)
        fraction = dispatched.mean(dim=0) / self.top_k
        return self.active.sum() * (fraction * probs.mean(dim=0)).sum()


class DigitMoE(nn.Module):
    """`pixels -> embed -> h + moe(h) -> class logits`: the classifier the benchmark trains."""

    def __init__(
        self, *, d_in: int, classes: int, d_model: int, d_hidden: int, capacity: int, seed: int
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Linear(d_in, d_model)
        self.moe = TopTwoMoE(d_model, d_hidden, capacity, g=g)
        self.head = nn.Linear(d_model, classes)
        with torch.no_grad():  # seeded without touching the global RNG
            for linear in (self.embed, self.head):
                bound = 1.0 / math.sqrt(linear.in_features)
                linear.weight.uniform_(-bound, bound, generator=g)
                linear.bias.uniform_(-bound, bound, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [tokens, classes] for images [tokens, d_in]."""
        h = torch.relu(self.embed(x))
        out: torch.Tensor = self.head(h + self.moe(h))
        return out

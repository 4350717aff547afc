"""One layer's routing counters on the device: co-selections and gate mass, in exact integers.

`pairs[a, b]` counts the tokens whose top-k holds both slot `a` and slot `b` (the diagonal
counts the tokens routed to `a`), and `mass[a, t]` sums the gate weight slot `a` received from
tokens of type `t`, in fixed point (units of 1 / `MASS_UNIT`) so that sums are exact and the
same on every device and in every order. Both are flat long tensors, added to with `index_add_`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MASS_UNIT", "Counters", "routing_counts"]

MASS_UNIT = 1 << 16
"""Gate weights are summed in fixed point, in units of 1 / MASS_UNIT: exact, order-free sums."""


@dataclass(slots=True)
class Counters:
    """One layer's routing counters on the device."""

    capacity: int
    pairs: torch.Tensor
    """[capacity * capacity] long: tokens whose top-k holds both slots (diagonal: routed)."""
    mass: torch.Tensor
    """[capacity * types] long: gate weight received per (slot, type), in 1 / MASS_UNIT."""

    @classmethod
    def zeros(cls, capacity: int, num_types: int, device: torch.device) -> Counters:
        """Return empty counters for a layer of `capacity` slots and `num_types` token types."""
        return cls(
            capacity=capacity,
            pairs=torch.zeros(capacity * capacity, dtype=torch.long, device=device),
            mass=torch.zeros(capacity * num_types, dtype=torch.long, device=device),
        )

    def add(self, indices: torch.Tensor, weights: torch.Tensor, types: torch.Tensor, num_types: int) -> None:
        """Count a batch of routing: `indices` and `weights` [tokens, top_k], `types` [tokens]."""
        pair_cells, hits, mass_cells, mass = _cells(indices, weights, types, self.capacity, num_types)
        self.pairs.index_add_(0, pair_cells, hits)
        self.mass.index_add_(0, mass_cells, mass)


def routing_counts(
    counters: Counters | None, capacity: int, rows: torch.Tensor, num_types: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the co-selection counts [n, n] and gate mass [n, types] of the slots in `rows`
    (zeros when nothing was counted)."""
    n = int(rows.shape[0])
    if counters is None:
        return (
            torch.zeros(n, n, dtype=torch.long, device=rows.device),
            torch.zeros(n, num_types, dtype=torch.long, device=rows.device),
        )
    pairs = counters.pairs.view(capacity, capacity).index_select(0, rows).index_select(1, rows)
    return pairs, counters.mass.view(capacity, num_types).index_select(0, rows)


def _cells(
    indices: torch.Tensor, weights: torch.Tensor, types: torch.Tensor, capacity: int, num_types: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the counter cells each token adds to, and what it adds there.

    Pairs: a token routed to slots {a, b} adds 1 to cells (a,a), (a,b), (b,a) and (b,b). Mass:
    it adds its gate weight for a (in units of 1 / MASS_UNIT) to cell (a, its type). Unused
    top-k positions (-1) add 0.
    """
    valid = indices >= 0
    slots = indices.clamp(min=0)
    pair_cells = slots[:, :, None] * capacity + slots[:, None, :]
    hits = (valid[:, :, None] & valid[:, None, :]).long()
    mass_cells = slots * num_types + types[:, None]
    mass = torch.round(weights.float() * MASS_UNIT).long() * valid
    return pair_cells.reshape(-1), hits.reshape(-1), mass_cells.reshape(-1), mass.reshape(-1)

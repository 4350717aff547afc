"""Parked experts: the weights and optimizer moments of pruned experts, kept for a revival.

A PRUNE of a dormant expert (reason `confirmed_dead`), or of an active one whose token types
left the input (reason `basin_gone`), parks its rows before they are cleared or removed; a
REVIVE writes them back, bit for bit. The store keeps at most `park_budget` (from the
decision's `config_snapshot`) experts per layer, dropping the oldest first, in the
order the expert coordinator reads from the log (the step of the prune, then the expert's
number), so every rank, and the coordinator, agree on which experts can still be revived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lifecycle_es.controllers import parse_expert_id
from projections.moe import _optim_state as optim_state
from projections.moe._slot_ops import SlotEditor

__all__ = ["ParkedExpert", "ParkingLot"]


@dataclass(frozen=True, slots=True)
class ParkedExpert:
    """One parked expert: where it was, and copies of its rows."""

    layer: int
    slot: int | None
    """Its row when it was parked (its slot under the masked strategy)."""
    order: tuple[int, int]
    """(step of the prune, expert number): oldest first."""
    weights: dict[str, torch.Tensor]
    moments: dict[str, dict[str, torch.Tensor]]
    """Parameter name -> state key -> the row's moments (empty before the first step)."""


class ParkingLot:
    """The parked experts of every managed layer, by entity."""

    def __init__(self) -> None:
        self.parked: dict[str, ParkedExpert] = {}

    def park(self, entity: str, editor: SlotEditor, row: int, *, step: int, budget: int) -> None:
        """Copy an expert's rows and moments; then drop the layer's oldest beyond `budget`."""
        if budget <= 0:
            return
        parsed = parse_expert_id(entity)
        number = parsed[1] if parsed else -1
        weights, moments = {}, {}
        for name, param in editor.params().items():
            weights[name] = param.detach()[row].clone()
            rows = optim_state.moment_rows(editor.optimizer, param)
            moments[name] = {key: value[row].clone() for key, value in rows.items()}
        self.parked[entity] = ParkedExpert(editor.index, row, (step, number), weights, moments)
        in_layer = sorted((p.order, e) for e, p in self.parked.items() if p.layer == editor.index)
        for _, oldest in in_layer[: max(0, len(in_layer) - budget)]:
            del self.parked[oldest]

    @torch.no_grad()
    def restore(self, entity: str, editor: SlotEditor, row: int) -> None:
        """Write a parked expert's rows and moments into `row`, and forget it."""
        parked = self.parked.pop(entity)
        for name, param in editor.params().items():
            param[row] = parked.weights[name].to(param.device)
            rows = optim_state.moment_rows(editor.optimizer, param)
            for key, value in rows.items():
                saved = parked.moments[name].get(key)
                value[row] = 0 if saved is None else saved.to(value.device)

    def to_plain(self) -> list[list[Any]]:
        """Return the parked experts as lists of plain values and CPU tensors (weights_only loadable)."""
        return [
            [
                entity,
                p.layer,
                p.slot,
                list(p.order),
                {k: v.detach().cpu() for k, v in p.weights.items()},
                {k: {m: v.detach().cpu() for m, v in keys.items()} for k, keys in p.moments.items()},
            ]
            for entity, p in self.parked.items()
        ]

    @classmethod
    def from_plain(cls, plain: Sequence[Sequence[Any]]) -> ParkingLot:
        """Rebuild a lot from `to_plain` output (rows go to the parameters' device when restored)."""
        lot = cls()
        for entity, layer, slot, order, weights, moments in plain:
            lot.parked[str(entity)] = ParkedExpert(
                int(layer),
                None if slot is None else int(slot),
                (int(order[0]), int(order[1])),
                dict(weights),
                {k: dict(v) for k, v in moments.items()},
            )
        return lot

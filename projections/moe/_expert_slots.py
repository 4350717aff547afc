"""The host-side table of model surgery: which expert holds which row of a layer, and who routes.

A *row* is a physical slot of a layer's slot-major parameters. Under the masked strategy an
expert's row is the `slot` it was registered with, for life. Under the resize strategy rows
are renumbered when parameters are really removed or appended, so the registered slot is a
logical id only: an expert claims the row of its slot number at registration when that row
exists and is free (a model's initial experts), and otherwise gets one when the SPAWN or
SPLIT that creates its weights appends it.

An expert routes when it has a row, has not been detached by a PRUNE or MERGE, and is in a
routing state: `cooling` and `active`, and `dormant` too, since a dormant expert may only
"recover" (seeds/002) if the router can still pick it. `pending_spawn` has no weights yet;
`pending_prune` and `archived` are on their way out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lifecycle_es.errors import InconsistentEventError
from lifecycle_es.registry import holds_slot
from lifecycle_es.specs.expert import EXPERT_SPEC, ROUTING_STATES

__all__ = ["Expert", "ExpertSlots", "Strategy"]

Strategy = Literal["masked", "resize"]


@dataclass(slots=True)
class Expert:
    """One expert of a managed layer, as the surgery sees it."""

    layer: int
    state: str
    row: int | None
    """Its row in the layer's slot-major parameters; None while it has no weights there."""
    detached: bool = False
    """True after a PRUNE or MERGE took its weights out of use, until a SPAWN or SPLIT."""


class ExpertSlots:
    """Experts by entity, and the owner of every row of every managed layer."""

    def __init__(self, capacities: Mapping[int, int], *, strategy: Strategy) -> None:
        self.strategy = strategy
        self.experts: dict[str, Expert] = {}
        self.owners: dict[int, list[str | None]] = {i: [None] * n for i, n in capacities.items()}
        self.dirty: set[int] = set(capacities)
        """Layers whose routing mask changed since `take_dirty` last ran (all of them at first)."""

    def __contains__(self, entity: object) -> bool:
        return entity in self.experts

    def get(self, entity: str, layer: int) -> Expert:
        """Return an expert of `layer`, or raise `InconsistentEventError`."""
        expert = self.experts.get(entity)
        if expert is None or expert.layer != layer:
            raise InconsistentEventError(f"surgery: {entity!r} is not an expert of layer {layer}")
        return expert

    def row(self, entity: str, layer: int) -> int:
        """Return the row of an expert that must have one, or raise `InconsistentEventError`."""
        row = self.get(entity, layer).row
        if row is None:
            raise InconsistentEventError(f"surgery: expert {entity!r} has no weights in layer {layer}")
        return row

    # -- folding -------------------------------------------------------------------------------

    def register(self, entity: str, *, layer: int, slot: int | None, state: str) -> None:
        """Add an expert, claiming the row of its slot if that row is free."""
        row = self._claim(entity, layer, slot)
        self.experts[entity] = Expert(layer=layer, state=state, row=row)
        if row is not None:
            self.owners[layer][row] = entity
        self.dirty.add(layer)

    def _claim(self, entity: str, layer: int, slot: int | None) -> int | None:
        owners = self.owners[layer]
        if slot is not None and slot < len(owners):
            holder = owners[slot]
            if holder is None or not holds_slot(EXPERT_SPEC, self.experts[holder].state):
                if holder is not None:  # an archived expert's row is reused: it loses it
                    self.experts[holder].row = None
                return slot
        if self.strategy == "masked":
            raise InconsistentEventError(
                f"surgery: expert {entity!r} names slot {slot} of layer {layer}, which is not a "
                f"free slot of its {len(owners)} (masked strategy)"
            )
        return None

    def move(self, entity: str, state: str) -> None:
        """Record an expert's new state."""
        expert = self.experts[entity]
        expert.state = state
        self.dirty.add(expert.layer)

    def attach(self, entity: str, row: int) -> None:
        """Mark an expert's weights as live in `row` (after a SPAWN or SPLIT wrote them)."""
        expert = self.experts[entity]
        expert.row, expert.detached = row, False
        self.owners[expert.layer][row] = entity
        self.dirty.add(expert.layer)

    def detach(self, entity: str) -> None:
        """Take an expert out of routing for good (a PRUNE, or the absorbed side of a MERGE)."""
        expert = self.experts[entity]
        expert.detached = True
        self.dirty.add(expert.layer)

    def reindex(self, layer: int, index: Sequence[int | None]) -> None:
        """Renumber a layer's rows after a resize: new row i is old row index[i] (None: new)."""
        old = self.owners[layer]
        self.owners[layer] = [None if src is None else old[src] for src in index]
        for entity in old:
            if entity is not None:
                self.experts[entity].row = None
        for row, entity in enumerate(self.owners[layer]):
            if entity is not None:
                self.experts[entity].row = row
        self.dirty.add(layer)

    # -- reading -------------------------------------------------------------------------------

    def routes(self, entity: str | None) -> bool:
        """Tell whether an expert's row may be picked by the router."""
        expert = None if entity is None else self.experts[entity]
        return (
            expert is not None
            and expert.row is not None
            and not expert.detached
            and expert.state in ROUTING_STATES
        )

    def routing_rows(self, layer: int) -> list[int]:
        """Return the rows of `layer` whose expert routes, ascending."""
        return [row for row, entity in enumerate(self.owners[layer]) if self.routes(entity)]

    def mask(self, layer: int) -> torch.Tensor:
        """Return the layer's routing mask as a CPU bool tensor, one entry per row."""
        return torch.tensor([self.routes(e) for e in self.owners[layer]], dtype=torch.bool)

    def take_dirty(self) -> Iterator[int]:
        """Yield, and forget, the layers whose mask changed, in ascending order."""
        dirty, self.dirty = sorted(self.dirty), set()
        return iter(dirty)

    # -- snapshots -----------------------------------------------------------------------------

    def to_plain(self) -> dict[str, Any]:
        """Return the table as lists of plain values (torch `weights_only` loadable)."""
        return {
            "capacities": [[layer, len(owners)] for layer, owners in sorted(self.owners.items())],
            "experts": [[name, e.layer, e.state, e.row, e.detached] for name, e in self.experts.items()],
        }

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any], *, strategy: Strategy) -> ExpertSlots:
        """Rebuild a table from `to_plain` output."""
        table = cls({int(layer): int(n) for layer, n in plain["capacities"]}, strategy=strategy)
        for name, layer, state, row, detached in plain["experts"]:
            table.experts[name] = Expert(layer=layer, state=state, row=row, detached=detached)
            if row is not None:
                table.owners[layer][row] = name
        return table

"""Model surgery: `DecisionMade` actions applied to an MoE model and its optimizer, as a projection.

Every rank folds the same records in the same order, at the same step boundary (after
`optimizer.step()`, with gradients cleared), and so makes the same change to the same bytes
(DESIGN.md section 6, reference/ddp-structural-changes.md section 6). A decision is applied
when it is folded; its `apply_at_step` tells the caller at which boundary to fold it.

The actions (SPAWN, SPLIT, PRUNE, REVIVE, MERGE), what each does to rows and moments, and how
their payloads are read, are `_actions`'s; this module is the projection that routes decisions
to them, answers queries, digests, and snapshots.

Which slots route follows the expert states folded from the same log (see `_expert_slots`);
each batch writes each changed layer's mask once, with one copy to the device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lifecycle_es.errors import ConfigError, LifecycleError, UsageError
from lifecycle_es.events import Action
from lifecycle_es.specs.expert import EXPERT_SPEC
from projections._projection import Projection, Record, Snapshot
from projections.digest import digest, training_items
from projections.digest import extend_chain as _chain
from projections.moe._actions import ACTIONS, PARKED_REASON, ExpertActions
from projections.moe._expert_slots import ExpertSlots, Strategy
from projections.moe._optim_state import optimizer_holds, optimizer_params_match
from projections.moe._parking import ParkingLot
from projections.moe._protocol import check_layer
from projections.moe._slot_ops import SlotEditor
from projections.moe.layer import ExpertLayer

__all__ = ["PARKED_REASON", "ModelSurgery", "Strategy", "optimizer_params_match"]

_log = logging.getLogger("projections.moe.surgery")


class ModelSurgery(Projection):
    """Applies expert SPAWN, PRUNE, SPLIT and MERGE decisions to MoE layers and their optimizer."""

    name = "surgery"

    def __init__(
        self,
        layers: Mapping[int, ExpertLayer],
        optimizer: torch.optim.Optimizer,
        *,
        strategy: Strategy = "masked",
        model: nn.Module | None = None,
        on_rewrap: Callable[[], None] | None = None,
    ) -> None:
        """Manage `layers` (by layer index) trained by `optimizer`.

        `model`, when given, names every parameter in `digest()` and is checked to hold exactly
        the optimizer's parameters after every action; `on_rewrap` runs after a batch that
        resized parameters (re-wrap DDP there, with `init_sync=False`). Under the resize
        strategy with a process group it is required: without a re-wrap the next backward
        fails or, worse, the ranks diverge.
        """
        super().__init__()
        _check_strategy(strategy, on_rewrap)
        for index, layer in layers.items():
            check_layer(index, layer, ExpertLayer)
        self.strategy: Strategy = strategy
        self.optimizer = optimizer
        self.model = model
        self.on_rewrap = on_rewrap
        self._editors = {i: SlotEditor(i, layers[i], optimizer) for i in sorted(layers)}
        slots = ExpertSlots({i: e.layer.capacity for i, e in self._editors.items()}, strategy=strategy)
        self._actions = ExpertActions(self._editors, slots, strategy=strategy)
        self.applied = 0
        """How many decisions were applied."""
        self.applied_chain = ""
        """A running hash of the applied decisions' event ids, in order ("" before the first); part
        of `digest()`. It covers every id in constant memory, where a list of them would grow
        with every action and make each digest longer to compute."""
        self._check_params("at construction", ConfigError)  # the parts given do not fit

    @property
    def parking(self) -> ParkingLot:
        """The weights and moments of pruned experts kept for a REVIVE (`park_budget` per layer)."""
        return self._actions.parking

    @property
    def _slots(self) -> ExpertSlots:
        return self._actions.slots

    # -- queries -------------------------------------------------------------------------------

    def row(self, entity: str) -> int | None:
        """Return the row of an expert in its layer's parameters, or None if it has none."""
        expert = self._slots.experts.get(entity)
        return None if expert is None else expert.row

    def routing_rows(self, layer: int) -> list[int]:
        """Return the rows of `layer` the router may pick, ascending."""
        return self._slots.routing_rows(layer)

    def routing_experts(self, layer: int) -> dict[int, str]:
        """Return the experts of `layer` the router may pick, by row, ascending."""
        owners = self._slots.owners[layer]
        return {row: str(owners[row]) for row in self._slots.routing_rows(layer)}

    def routing_mask(self, layer: int) -> torch.Tensor:
        """Return the routing mask surgery last wrote to `layer`, as a CPU bool tensor."""
        return self._slots.mask(layer)

    def layer(self, layer: int) -> ExpertLayer:
        """Return the managed layer `layer`."""
        return self._editors[layer].layer

    def digest(self, *, event_ids: bool = True) -> str:
        """Return 16 hex digits hashing parameters, optimizer state and applied event ids.

        The value all ranks compare after applying a step's actions (`projections.digest`,
        computed on the tensors' device), in sorted parameter-name and state-key order.
        `event_ids=False` leaves the ids out, to compare the model of two runs whose events
        have different ids.
        """
        chain = self.applied_chain if event_ids and self.applied else None
        return digest(training_items(self.named_parameters(), self.optimizer), events=chain)

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Return the parameters `digest()` covers, by name, in sorted name order."""
        if self.model is not None:
            return sorted(self.model.named_parameters())
        return sorted((e.qualified(n), p) for e in self._editors.values() for n, p in e.params().items())

    # -- folding -------------------------------------------------------------------------------

    def _apply_batch(self, records: Sequence[Record]) -> None:
        resized = False
        try:
            for record in records:
                resized |= self._fold(record)
                # Per record, so a decision that raises leaves seq just before it.
                self.seq = record["seq"]
        finally:
            self._write_masks()
            if resized and self.on_rewrap is not None:
                self.on_rewrap()

    def _fold(self, record: Record) -> bool:
        """Fold one record; return True if it changed a parameter set."""
        kind = record["kind"]
        if kind == "EntityRegistered":
            if record["spec"] == EXPERT_SPEC.name and record["layer"] in self._editors:
                self._slots.register(
                    record["entity"], layer=record["layer"], slot=record["slot"], state=record["state"]
                )
        elif kind == "TransitionApplied":
            if record["entity"] in self._slots:
                self._slots.move(record["entity"], record["to_state"])
        elif kind == "DecisionMade" and record["action"] in ACTIONS:
            layer = self._layer_of(record)
            if layer is not None:
                return self._decide(record, layer)
        return False

    def _layer_of(self, record: Record) -> int | None:
        """Return the managed layer a decision is about, or None if it is another's."""
        layer = record.get("layer")
        if layer is None:
            named = [record["entity"], record["parent"], *record["children"]]
            layer = next((self._slots.experts[e].layer for e in named if e in self._slots), None)
        return layer if layer in self._editors else None

    def _decide(self, record: Record, layer: int) -> bool:
        action = Action(record["action"])
        resized = self._actions.apply(action, record, layer)
        self.applied += 1
        self.applied_chain = _chain(self.applied_chain, record["event_id"])
        self._check_params(f"after {action.value} {record['event_id']}")
        _log.debug(
            "applied %s to layer %d (event %s, seq %d)",
            action.value,
            layer,
            record["event_id"],
            record["seq"],
        )
        return resized

    def _write_masks(self) -> None:
        for layer in self._slots.take_dirty():
            self._editors[layer].layer.set_active(self._slots.mask(layer))

    def _check_params(self, when: str, error: type[LifecycleError] = UsageError) -> None:
        """Raise `error` unless the optimizer holds exactly the parameters being trained."""
        if self.model is not None:
            ok = optimizer_params_match(self.model, self.optimizer)
        else:
            ok = optimizer_holds(
                self.optimizer, (p for e in self._editors.values() for p in e.params().values())
            )
        if not ok:
            raise error(f"{self.name} {when}: the optimizer's parameters differ from the model's")

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Return the expert table, the routing masks (CPU), the parked experts' rows (CPU) and
        the applied-ids hash, with the seq.

        The model and optimizer are the caller's to checkpoint, next to this snapshot.
        """
        state: dict[str, Any] = {
            "strategy": self.strategy,
            **self._slots.to_plain(),
            "masks": {str(layer): self._slots.mask(layer) for layer in self._editors},
            "applied": self.applied,
            "applied_chain": self.applied_chain,
            "parked": self.parking.to_plain(),
        }
        return Snapshot(kind=self.name, seq=self.seq, state=state)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the table, masks and applied-ids hash with a snapshot's.

        Under resize, a layer whose capacity differs from the snapshot's gets parameters of the
        snapshot's shape (zero rows, zero moments; `on_rewrap` runs) for the caller to load the
        checkpoint's model and optimizer state into next. Under masked the capacities must match.
        """
        if snapshot.kind != self.name:
            raise UsageError(f"{self.name}: cannot restore a {snapshot.kind!r} snapshot")
        s = snapshot.state
        if s["strategy"] != self.strategy:
            raise UsageError(f"{self.name}: snapshot strategy {s['strategy']!r} != {self.strategy!r}")
        self._reshape({int(layer): int(n) for layer, n in s["capacities"]})
        self._actions.slots = ExpertSlots.from_plain(s, strategy=self.strategy)
        for layer, mask in s["masks"].items():
            self._editors[int(layer)].layer.set_active(mask)
        self._slots.dirty.clear()
        # A snapshot from before parking holds no parked experts.
        self._actions.parking = ParkingLot.from_plain(s.get("parked", []))
        self._restore_applied(s)
        self.seq = snapshot.seq

    def _reshape(self, capacities: Mapping[int, int]) -> None:
        """Give each layer the snapshot's capacity (resize only), blank, for the checkpoint to fill."""
        current = {i: e.layer.capacity for i, e in self._editors.items()}
        if set(capacities) != set(current) or (self.strategy == "masked" and capacities != current):
            raise UsageError(
                f"{self.name}: snapshot capacities {dict(capacities)} do not fit the model's {current}"
            )
        reshaped = [i for i in current if capacities[i] != current[i]]
        for layer in reshaped:
            self._editors[layer].resize([None] * capacities[layer])
        if reshaped and self.on_rewrap is not None:
            self.on_rewrap()

    def _restore_applied(self, state: Mapping[str, Any]) -> None:
        """Take the applied count and ids hash from a snapshot's state."""
        if "applied_ids" in state:  # a snapshot written when the ids were kept as a list
            self.applied, self.applied_chain = 0, ""
            for event_id in state["applied_ids"]:
                self.applied += 1
                self.applied_chain = _chain(self.applied_chain, event_id)
        else:
            self.applied, self.applied_chain = int(state["applied"]), str(state["applied_chain"])


def _check_strategy(strategy: Strategy, on_rewrap: Callable[[], None] | None) -> None:
    """Refuse an unknown strategy, and resize under a process group without a re-wrap."""
    if strategy not in ("masked", "resize"):
        raise ConfigError(f"strategy must be 'masked' or 'resize', got {strategy!r}")
    if strategy == "resize" and on_rewrap is None and _distributed():
        raise ConfigError(
            "under the resize strategy with a process group, pass on_rewrap= "
            "(e.g. Replicated.rewrap) so DDP is re-wrapped after surgery"
        )


def _distributed() -> bool:
    """Whether a process group is initialised (`projections.training.distributed.active`)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()

"""Model surgery: `DecisionMade` actions applied to an MoE model and its optimizer, as a projection.

Every rank folds the same records in the same order, at the same step boundary (after
`optimizer.step()`, with gradients cleared), and so makes the same change to the same bytes
(DESIGN.md section 6, reference/ddp-structural-changes.md section 6). A decision is applied
when it is folded; its `apply_at_step` tells the caller at which boundary to fold it.

Actions, for experts of the layers this surgery manages (others are left to their owners):

- SPAWN: for each child (`children`, else `entity`), the init strategy of
  `config_snapshot["spawn_init_strategy"]` (default: `clone_and_perturb` with a `parent`,
  else `random`): `random` draws zero-mean noise at its siblings' spread, with no first
  moment and the siblings' mean second moment; `clone_and_perturb` copies `parent` plus
  noise, with the parent's moments; `mean_cluster` averages `metrics_at_decision["cluster"]`
  (entity ids; default: every routing expert of the layer) plus noise, with their mean moments.
- SPLIT: each child of `children` becomes `parent` (else `entity`) plus noise, and inherits
  its moments; with a `push` in `metrics_at_decision`, the router rows of parent and child
  are then pushed apart (`SlotEditor.push_apart`) so they divide the parent's basin.
- PRUNE: `entity` stops routing. masked: its moments are zeroed, its weights kept. resize: its
  rows are removed from every slot-major parameter and from the optimizer state.
- REVIVE: a parked `entity` (pruned as `confirmed_dead` or `basin_gone`, kept while `park_budget` allows)
  gets its weights and moments back, bit for bit, in its slot (masked) or a new row (resize).
- MERGE: `entity` survives with the average (expert and router rows) of itself and `children`, weighted by
  `metrics_at_decision["shares"]` (entity -> share for each of them; equal weights when
  absent) and keeps its own moments; the children are pruned as above.

Noise is `split_perturbation_scale` (from `config_snapshot`, default 0.01) times the RMS of
the weights it perturbs, per parameter, for router rows as for experts.

Which slots route follows the expert states folded from the same log (see `_expert_slots`);
each batch writes each changed layer's mask once, with one copy to the device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from lifecycle_es.errors import ConfigError, InconsistentEventError, LifecycleError, UsageError
from lifecycle_es.events import Action
from lifecycle_es.specs.expert import (
    DEFAULT_PERTURBATION,
    EXPERT_SPEC,
    INIT_STRATEGIES,
    MergeMetrics,
    SpawnMetrics,
    SurgerySettings,
)
from projections._projection import Projection, Record, Snapshot
from projections.digest import digest, training_items
from projections.digest import extend_chain as _chain
from projections.moe._expert_slots import ExpertSlots, Strategy
from projections.moe._optim_state import optimizer_holds, optimizer_params_match
from projections.moe._parking import ParkingLot
from projections.moe._protocol import check_layer
from projections.moe._slot_ops import SlotEditor
from projections.moe.layer import ExpertLayer

__all__ = ["PARKED_REASON", "ModelSurgery", "Strategy", "optimizer_params_match"]

PARKED_REASON = "confirmed_dead"
"""The reason of the PRUNE decisions whose expert is parked (its weights kept for a REVIVE)."""
PARKED_REASONS = frozenset({PARKED_REASON, "basin_gone"})  # basin_gone: its inputs left (R2)

_log = logging.getLogger("projections.moe.surgery")

_ACTIONS = frozenset({Action.SPAWN, Action.PRUNE, Action.SPLIT, Action.MERGE, Action.REVIVE})


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
        if strategy not in ("masked", "resize"):
            raise ConfigError(f"strategy must be 'masked' or 'resize', got {strategy!r}")
        if strategy == "resize" and on_rewrap is None and _distributed():
            raise ConfigError(
                "under the resize strategy with a process group, pass on_rewrap= "
                "(e.g. Replicated.rewrap) so DDP is re-wrapped after surgery"
            )
        for index, layer in layers.items():
            check_layer(index, layer, ExpertLayer)
        self.strategy: Strategy = strategy
        self.optimizer = optimizer
        self.model = model
        self.on_rewrap = on_rewrap
        self._editors = {i: SlotEditor(i, layers[i], optimizer) for i in sorted(layers)}
        self._slots = ExpertSlots({i: e.layer.capacity for i, e in self._editors.items()}, strategy=strategy)
        self.parking = ParkingLot()
        """The weights and moments of pruned experts kept for a REVIVE (`park_budget` per layer)."""
        self.applied = 0
        """How many decisions were applied."""
        self.applied_chain = ""
        """A running hash of the applied decisions' event ids, in order ("" before the first); part
        of `digest()`. It covers every id in constant memory, where a list of them would grow
        with every action and make each digest longer to compute."""
        self._check_params("at construction", ConfigError)  # the parts given do not fit

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
        elif kind == "DecisionMade" and record["action"] in _ACTIONS:
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
        handler = {
            Action.SPAWN: self._spawn,
            Action.SPLIT: self._split,
            Action.PRUNE: self._prune,
            Action.MERGE: self._merge,
            Action.REVIVE: self._revive,
        }[action]
        resized = handler(record, layer)
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

    # -- actions -------------------------------------------------------------------------------

    def _spawn(self, record: Record, layer: int) -> bool:
        children = record["children"] or [record["entity"]]
        init = _spawn_init(record)
        for child in children:
            self._slots.get(child, layer)
        sources = self._spawn_sources(record, layer, init, children)
        push = _push(record) if init == "clone_and_perturb" else 0.0
        resized = False
        for child in children:
            dst, grew = self._materialize(layer, child)
            resized |= grew
            self._init_slot(record, layer, dst, child, sources)
            if push:  # like a split's child: the clone takes one side of its source's basin
                source = self._slots.row(record["parent"], layer)
                self._editors[layer].push_apart(source, dst, push=push, seed=record["seed"], target=child)
        return resized

    def _spawn_sources(self, record: Record, layer: int, init: str, children: Sequence[str]) -> list[int]:
        """Return the rows a spawn copies from: none for random init (or an empty cluster)."""
        if init == "random":
            return []
        if init == "clone_and_perturb":
            if record["parent"] is None:
                raise InconsistentEventError(
                    f"surgery: clone_and_perturb spawn {record['event_id']} names no parent"
                )
            return [self._slots.row(record["parent"], layer)]
        cluster = cast(SpawnMetrics, record["metrics_at_decision"]).get("cluster")
        if cluster is None:
            own = {self._slots.get(c, layer).row for c in children}
            return [r for r in self._slots.routing_rows(layer) if r not in own]
        return [self._slots.row(str(member), layer) for member in _as_list(cluster, "cluster")]

    def _init_slot(self, record: Record, layer: int, dst: int, child: str, sources: Sequence[int]) -> None:
        editor, seed = self._editors[layer], record["seed"]
        if sources:
            editor.clone(dst, sources, scale=_perturbation(record), seed=seed, target=child)
        else:
            siblings = [r for r in self._slots.routing_rows(layer) if r != dst]
            editor.randomize(dst, siblings, seed=seed, target=child)
        self._slots.attach(child, dst)

    def _split(self, record: Record, layer: int) -> bool:
        parent = record["parent"] or record["entity"]
        children = [c for c in record["children"] if c != parent]
        if not children:
            raise InconsistentEventError(f"surgery: split {record['event_id']} names no child")
        self._slots.row(parent, layer)
        for child in children:
            self._slots.get(child, layer)
        resized = False
        push, direction = _push(record), _direction(record)
        for child in children:
            dst, grew = self._materialize(layer, child)
            resized |= grew
            self._init_slot(record, layer, dst, child, [self._slots.row(parent, layer)])
            if push:
                source = self._slots.row(parent, layer)
                self._editors[layer].push_apart(
                    source, dst, push=push, seed=record["seed"], target=child, direction=direction
                )
        return resized

    def _prune(self, record: Record, layer: int) -> bool:
        entity = record["entity"]
        expert = self._slots.get(entity, layer)
        if record["reason"] in PARKED_REASONS and expert.row is not None:
            budget = record["config_snapshot"].get("park_budget", 0)
            if not isinstance(budget, int) or isinstance(budget, bool):
                raise InconsistentEventError(
                    f"surgery: prune {record['event_id']} has park_budget {budget!r}"
                )
            self.parking.park(entity, self._editors[layer], expert.row, step=record["step"], budget=budget)
        return self._remove(layer, entity)

    def _revive(self, record: Record, layer: int) -> bool:
        """Write a parked expert's weights and moments back, into its slot (masked) or a new row."""
        entity = record["entity"]
        expert = self._slots.get(entity, layer)
        parked = self.parking.parked.get(entity)
        if parked is None or parked.layer != layer:
            raise InconsistentEventError(f"surgery: revive {record['event_id']}: {entity!r} is not parked")
        resized = False
        if expert.row is None and self.strategy == "masked":
            expert.row = parked.slot
        if expert.row is not None and self._slots.owners[layer][expert.row] not in (None, entity):
            raise InconsistentEventError(f"surgery: revive {record['event_id']}: row {expert.row} is taken")
        row, resized = self._materialize(layer, entity)
        self.parking.restore(entity, self._editors[layer], row)
        self._slots.attach(entity, row)
        return resized

    def _merge(self, record: Record, layer: int) -> bool:
        survivor, absorbed = record["entity"], list(record["children"])
        if not absorbed or survivor in absorbed:
            raise InconsistentEventError(
                f"surgery: merge {record['event_id']} needs a survivor "
                "(entity) and absorbed experts (children)"
            )
        members = [survivor, *absorbed]
        rows = [self._slots.row(e, layer) for e in members]
        weights = _merge_weights(record, members)
        self._editors[layer].average(rows[0], rows, weights)
        resized = False
        for entity in absorbed:
            resized |= self._remove(layer, entity)
        return resized

    # -- rows ----------------------------------------------------------------------------------

    def _materialize(self, layer: int, entity: str) -> tuple[int, bool]:
        """Return the expert's row, appending one under resize; and whether parameters changed."""
        row = self._slots.get(entity, layer).row
        if row is not None:
            return row, False
        if self.strategy == "masked":  # registration refused slot-less experts already
            raise InconsistentEventError(f"surgery: expert {entity!r} has no slot in layer {layer}")
        size = len(self._slots.owners[layer])
        self._reindex(layer, [*range(size), None])
        return size, True

    def _remove(self, layer: int, entity: str) -> bool:
        """Take an expert out of use; return True if its rows were really removed."""
        row = self._slots.get(entity, layer).row
        self._slots.detach(entity)
        if row is None:
            return False
        if self.strategy == "masked":
            self._editors[layer].clear(row)
            return False
        self._reindex(layer, [r for r in range(len(self._slots.owners[layer])) if r != row])
        return True

    def _reindex(self, layer: int, index: Sequence[int | None]) -> None:
        self._editors[layer].resize(index)
        self._slots.reindex(layer, index)

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
        capacities = {int(layer): int(n) for layer, n in s["capacities"]}
        current = {i: e.layer.capacity for i, e in self._editors.items()}
        if set(capacities) != set(current) or (self.strategy == "masked" and capacities != current):
            raise UsageError(
                f"{self.name}: snapshot capacities {capacities} do not fit the model's {current}"
            )
        reshaped = [i for i in current if capacities[i] != current[i]]
        for layer in reshaped:
            self._editors[layer].resize([None] * capacities[layer])
        if reshaped and self.on_rewrap is not None:
            self.on_rewrap()
        self._slots = ExpertSlots.from_plain(s, strategy=self.strategy)
        for layer, mask in s["masks"].items():
            self._editors[int(layer)].layer.set_active(mask)
        self._slots.dirty.clear()
        self.parking = ParkingLot.from_plain(s.get("parked", []))  # none in a snapshot from before parking
        if "applied_ids" in s:  # a snapshot written when the ids were kept as a list
            self.applied, self.applied_chain = 0, ""
            for event_id in s["applied_ids"]:
                self.applied += 1
                self.applied_chain = _chain(self.applied_chain, event_id)
        else:
            self.applied, self.applied_chain = int(s["applied"]), str(s["applied_chain"])
        self.seq = snapshot.seq


def _distributed() -> bool:
    """Whether a process group is initialised (`projections.training.distributed.active`)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


# -- reading decision payloads ---------------------------------------------------------------


def _spawn_init(record: Record) -> str:
    default = "random" if record["parent"] is None else "clone_and_perturb"
    init = _settings(record).get("spawn_init_strategy", default)
    if init not in INIT_STRATEGIES:
        raise InconsistentEventError(
            f"surgery: spawn {record['event_id']} has init {init!r}; expected one of {INIT_STRATEGIES}"
        )
    return str(init)


def _settings(record: Record) -> SurgerySettings:
    # What the log holds is checked where it is read: a record may come from another writer.
    return cast(SurgerySettings, record["config_snapshot"])


def _perturbation(record: Record) -> float:
    scale = _settings(record).get("split_perturbation_scale", DEFAULT_PERTURBATION)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 <= scale < math.inf:
        raise InconsistentEventError(f"surgery: {record['event_id']} has perturbation scale {scale!r}")
    return float(scale)


def _push(record: Record) -> float:
    """Return a split's or cloned spawn's router push (`push` in its metrics), 0 when it records none."""
    push = record["metrics_at_decision"].get("push", 0.0)
    if not _is_share(push):
        raise InconsistentEventError(f"surgery: split {record['event_id']} has push {push!r}")
    return float(push)


def _direction(record: Record) -> list[float] | None:
    """Return a split's recorded push direction (`SplitMetrics.direction`), None when it has none."""
    direction = record["metrics_at_decision"].get("direction")
    if direction is None:
        return None
    if not isinstance(direction, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in direction
    ):
        raise InconsistentEventError(f"surgery: split {record['event_id']} has direction {direction!r}")
    return [float(v) for v in direction]


def _merge_weights(record: Record, members: Sequence[str]) -> list[float]:
    """Return the members' shares, or equal weights when the decision records none (or all zero)."""
    shares = cast(MergeMetrics, record["metrics_at_decision"]).get("shares")
    if shares is None:
        return [1.0] * len(members)
    if not isinstance(shares, Mapping) or not all(_is_share(shares.get(m)) for m in members):
        raise InconsistentEventError(
            f"surgery: merge {record['event_id']} needs a share >= 0 for "
            f"each of {list(members)}, got {shares!r}"
        )
    weights = [float(shares[m]) for m in members]
    return weights if math.fsum(weights) > 0 else [1.0] * len(members)


def _is_share(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf


def _as_list(value: Any, name: str) -> Iterable[Any]:
    if not isinstance(value, list) or not value:
        raise InconsistentEventError(f"surgery: {name} must be a non-empty list, got {value!r}")
    return value

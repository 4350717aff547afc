"""The expert actions model surgery applies to the rows of a managed layer, and their payloads.

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

Each action edits rows through the layer's `SlotEditor` and keeps the slot table
(`ExpertSlots`) and the parked experts (`ParkingLot`) in step with them; `ModelSurgery`
decides which layer a decision is about and when it applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from lifecycle_es.errors import InconsistentEventError
from lifecycle_es.events import Action
from lifecycle_es.specs.expert import (
    DEFAULT_PERTURBATION,
    INIT_STRATEGIES,
    MergeMetrics,
    SpawnMetrics,
    SurgerySettings,
)
from projections._projection import Record
from projections.moe._expert_slots import ExpertSlots, Strategy
from projections.moe._parking import ParkingLot
from projections.moe._slot_ops import SlotEditor

__all__ = ["ACTIONS", "PARKED_REASON", "ExpertActions"]

PARKED_REASON = "confirmed_dead"
"""The reason of the PRUNE decisions whose expert is parked (its weights kept for a REVIVE)."""
PARKED_REASONS = frozenset({PARKED_REASON, "basin_gone"})
"""Every PRUNE reason whose expert is parked: dead, or its token types left the input."""

ACTIONS = frozenset({Action.SPAWN, Action.PRUNE, Action.SPLIT, Action.MERGE, Action.REVIVE})
"""The actions `ExpertActions` applies; surgery leaves other decisions to their owners."""


class ExpertActions:
    """Applies SPAWN, SPLIT, PRUNE, REVIVE and MERGE to the rows of managed layers."""

    def __init__(self, editors: Mapping[int, SlotEditor], slots: ExpertSlots, *, strategy: Strategy) -> None:
        """Edit the layers of `editors` under `strategy`, keeping `slots` in step."""
        self.editors = editors
        self.slots = slots
        self.strategy: Strategy = strategy
        self.parking = ParkingLot()
        """The weights and moments of pruned experts kept for a REVIVE (`park_budget` per layer)."""

    def apply(self, action: Action, record: Record, layer: int) -> bool:
        """Apply `record`'s `action` to `layer`; return True if it changed a parameter set."""
        handler = {
            Action.SPAWN: self._spawn,
            Action.SPLIT: self._split,
            Action.PRUNE: self._prune,
            Action.MERGE: self._merge,
            Action.REVIVE: self._revive,
        }[action]
        return handler(record, layer)

    def _spawn(self, record: Record, layer: int) -> bool:
        children = record["children"] or [record["entity"]]
        init = _spawn_init(record)
        for child in children:
            self.slots.get(child, layer)
        sources = self._spawn_sources(record, layer, init, children)
        push = _push(record) if init == "clone_and_perturb" else 0.0
        resized = False
        for child in children:
            dst, grew = self._materialize(layer, child)
            resized |= grew
            self._init_slot(record, layer, dst, child, sources)
            if push:  # like a split's child: the clone takes one side of its source's basin
                source = self.slots.row(record["parent"], layer)
                self.editors[layer].push_apart(source, dst, push=push, seed=record["seed"], target=child)
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
            return [self.slots.row(record["parent"], layer)]
        cluster = cast(SpawnMetrics, record["metrics_at_decision"]).get("cluster")
        if cluster is None:
            own = {self.slots.get(c, layer).row for c in children}
            return [r for r in self.slots.routing_rows(layer) if r not in own]
        return [self.slots.row(str(member), layer) for member in _as_list(cluster, "cluster")]

    def _init_slot(self, record: Record, layer: int, dst: int, child: str, sources: Sequence[int]) -> None:
        editor, seed = self.editors[layer], record["seed"]
        if sources:
            editor.clone(dst, sources, scale=_perturbation(record), seed=seed, target=child)
        else:
            siblings = [r for r in self.slots.routing_rows(layer) if r != dst]
            editor.randomize(dst, siblings, seed=seed, target=child)
        self.slots.attach(child, dst)

    def _split(self, record: Record, layer: int) -> bool:
        parent = record["parent"] or record["entity"]
        children = [c for c in record["children"] if c != parent]
        if not children:
            raise InconsistentEventError(f"surgery: split {record['event_id']} names no child")
        self.slots.row(parent, layer)
        for child in children:
            self.slots.get(child, layer)
        resized = False
        push, direction = _push(record), _direction(record)
        for child in children:
            dst, grew = self._materialize(layer, child)
            resized |= grew
            self._init_slot(record, layer, dst, child, [self.slots.row(parent, layer)])
            if push:
                source = self.slots.row(parent, layer)
                self.editors[layer].push_apart(
                    source, dst, push=push, seed=record["seed"], target=child, direction=direction
                )
        return resized

    def _prune(self, record: Record, layer: int) -> bool:
        entity = record["entity"]
        expert = self.slots.get(entity, layer)
        if record["reason"] in PARKED_REASONS and expert.row is not None:
            budget = record["config_snapshot"].get("park_budget", 0)
            if not isinstance(budget, int) or isinstance(budget, bool):
                raise InconsistentEventError(
                    f"surgery: prune {record['event_id']} has park_budget {budget!r}"
                )
            self.parking.park(entity, self.editors[layer], expert.row, step=record["step"], budget=budget)
        return self._remove(layer, entity)

    def _revive(self, record: Record, layer: int) -> bool:
        """Write a parked expert's weights and moments back, into its slot (masked) or a new row."""
        entity = record["entity"]
        expert = self.slots.get(entity, layer)
        parked = self.parking.parked.get(entity)
        if parked is None or parked.layer != layer:
            raise InconsistentEventError(f"surgery: revive {record['event_id']}: {entity!r} is not parked")
        resized = False
        if expert.row is None and self.strategy == "masked":
            expert.row = parked.slot
        if expert.row is not None and self.slots.owners[layer][expert.row] not in (None, entity):
            raise InconsistentEventError(f"surgery: revive {record['event_id']}: row {expert.row} is taken")
        row, resized = self._materialize(layer, entity)
        self.parking.restore(entity, self.editors[layer], row)
        self.slots.attach(entity, row)
        return resized

    def _merge(self, record: Record, layer: int) -> bool:
        survivor, absorbed = record["entity"], list(record["children"])
        if not absorbed or survivor in absorbed:
            raise InconsistentEventError(
                f"surgery: merge {record['event_id']} needs a survivor "
                "(entity) and absorbed experts (children)"
            )
        members = [survivor, *absorbed]
        rows = [self.slots.row(e, layer) for e in members]
        weights = _merge_weights(record, members)
        self.editors[layer].average(rows[0], rows, weights)
        resized = False
        for entity in absorbed:
            resized |= self._remove(layer, entity)
        return resized

    # -- rows ----------------------------------------------------------------------------------

    def _materialize(self, layer: int, entity: str) -> tuple[int, bool]:
        """Return the expert's row, appending one under resize; and whether parameters changed."""
        row = self.slots.get(entity, layer).row
        if row is not None:
            return row, False
        if self.strategy == "masked":  # registration refused slot-less experts already
            raise InconsistentEventError(f"surgery: expert {entity!r} has no slot in layer {layer}")
        size = len(self.slots.owners[layer])
        self._reindex(layer, [*range(size), None])
        return size, True

    def _remove(self, layer: int, entity: str) -> bool:
        """Take an expert out of use; return True if its rows were really removed."""
        row = self.slots.get(entity, layer).row
        self.slots.detach(entity)
        if row is None:
            return False
        if self.strategy == "masked":
            self.editors[layer].clear(row)
            return False
        self._reindex(layer, [r for r in range(len(self.slots.owners[layer])) if r != row])
        return True

    def _reindex(self, layer: int, index: Sequence[int | None]) -> None:
        self.editors[layer].resize(index)
        self.slots.reindex(layer, index)


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

"""Revival: a parked expert comes back, through the archived -> active edge, when its inputs do.

An expert pruned as dead (dormant, then `confirmed_dead`) is *parked*: surgery keeps its weights
and optimizer moments, at most `park_budget` per layer, the oldest dropped first. Which experts
are parked is read from the registry the same way surgery keeps them (by the step of the prune,
then the expert's number), so the coordinator never revives an expert whose weights are gone.

The training loop measures, for each parked expert, the fraction of the layer's evaluation
tokens its router row would pick first (`projections.moe.revival_affinity`), and records it on
the layer as `revival:<expert id>` (a colon, not a dot: per-peer metrics `kind.<id>` about an
archived entity are not kept). A parked expert whose affinity stays at or above
`revive_affinity_threshold` for `revive_patience` checkpoints is revived into its own slot.

An expert parked because its inputs left (`_basin_park`, reason `basin_gone`) keeps the types
that left in the metadata of its moves to pending_prune and archived; it is revived as well when
those types together make up `revive_type_share_threshold` of the layer's tokens again for
`revive_patience` checkpoints, which the basin metrics show without any input from the loop.
A spawn or split takes a free slot no parked expert wants back, while there is one, so that a
parked expert's own slot is still free when its inputs return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._basin_park import BASIN_GONE, departed_share, type_shares
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_ids import parse_expert_id
from lifecycle_es.events import Action, GateCategory
from lifecycle_es.policies import patience, streak
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.specs.expert import EXPERT_SPEC, ExpertState, ReviveMetrics

__all__ = ["REVIVAL", "Revivals", "parked", "parked_metadata", "reserved_slots"]

REVIVAL = "revival:"
"""Prefix of the layer metric of a parked expert's affinity (`revival:<expert id>`)."""
S = ExpertState


def parked(registry: Registry, layer: int, budget: int) -> list[EntityState]:
    """Return the layer's parked experts, oldest first: the newest `budget` pruned as dead or
    parked as `basin_gone` (not merged away nor undone as a failed split)."""
    found = []
    for e in registry:
        if e.spec != EXPERT_SPEC.name or e.layer != layer or e.state != S.ARCHIVED or len(e.history) < 2:
            continue
        (step, frm, _), archive = e.history[-2], e.history[-1]
        if archive[1] == S.PENDING_PRUNE and (frm == S.DORMANT or parked_metadata(e) is not None):
            parsed = parse_expert_id(e.entity)
            found.append(((step, parsed[1] if parsed else -1), e))
    found.sort(key=lambda item: item[0])
    return [e for _, e in found[max(0, len(found) - budget) :]] if budget > 0 else []


def parked_metadata(e: EntityState) -> dict[str, Any] | None:
    """Return the park facts (`parked`, `departed_types`) of an expert parked as `basin_gone`
    that its latest move carries, or None: archived, it keeps those of its pending_prune move."""
    moved = e.last_transition or {}
    metadata = moved.get("metadata") or {}
    return dict(metadata) if metadata.get("parked") == BASIN_GONE else None


def reserved_slots(registry: Registry, layer: int, budget: int) -> set[int]:
    """Return the slots the layer's parked experts would take back on revival."""
    return {e.slot for e in parked(registry, layer, budget) if e.slot is not None}


@dataclass(frozen=True, slots=True)
class _Signal:
    """One series that may say a parked expert's inputs returned, with its threshold."""

    name: Literal["affinity", "type_share"]
    window: tuple[float, ...]
    threshold: float
    types: list[int]
    """The departed types a `type_share` signal sums (empty for affinity)."""

    def returned(self, value: float) -> bool:
        """Tell whether one checkpoint's value says the inputs are back."""
        return value >= self.threshold

    def metrics(self, held: int, slot: int) -> ReviveMetrics:
        """Return the REVIVE decision's metrics for this signal."""
        found = ReviveMetrics(checkpoints_returned=held, slot=slot)
        if self.types:
            found["departed_types"] = list(self.types)
            found["type_share"] = self.window[-1]
        else:
            found["affinity"] = self.window[-1]
        return found


@dataclass(frozen=True, slots=True)
class Revivals:
    """The revival phase of one evaluation."""

    config: ExpertCoordinatorConfig
    capacity: dict[int, int]
    batch: Batch

    def run(self) -> None:
        """Revive every parked expert whose affinity, or departed types' share, held for
        `revive_patience` checkpoints."""
        cfg = self.config
        for layer in sorted(self.capacity):
            experts = parked(self.batch.registry, layer, cfg.park_budget)
            series = type_shares(self.batch.registry, layer) if experts else []
            for e in experts:
                signal = self._signal(e, layer, series)
                if signal is not None:
                    self._revive(e, layer, signal)

    def _signal(self, e: EntityState, layer: int, series: list[dict[int, float]]) -> _Signal | None:
        """Return what says the expert's inputs returned (the stronger streak), if it held lately."""
        cfg, n = self.config, self.config.revive_patience
        affinity = self.batch.registry.metric_window(layer, REVIVAL + e.entity, layer=True)
        signals = [_Signal("affinity", affinity, cfg.revive_affinity_threshold, [])]
        park = parked_metadata(e)
        if park is not None:
            types = [int(k) for k in park["departed_types"]]
            share = departed_share(series, types)
            signals.append(_Signal("type_share", share, cfg.revive_type_share_threshold, types))
        held = [s for s in signals if any(v >= s.threshold for v in s.window[-n:])]
        return max(held, key=lambda s: streak(s.window, s.returned)) if held else None

    def _revive(self, e: EntityState, layer: int, signal: _Signal) -> None:
        cfg, registry, n = self.config, self.batch.registry, self.config.revive_patience
        held, latest = streak(signal.window, signal.returned), signal.window[-1]
        holder = None if e.slot is None else registry.slot_holder(EXPERT_SPEC.name, layer, e.slot)
        names = f"types {signal.types} share" if signal.types else signal.name
        gates = [
            Check(
                f"revive.{signal.name}_patience",
                GateCategory.PERFORMANCE,
                patience(signal.window, n, signal.returned),
                f"{checks.count(held, 'checkpoint')} in a row with {names} >= "
                f"{signal.threshold:g}, patience {n}",
                {signal.name: latest, "checkpoints_returned": held},
                {f"revive_{signal.name}_threshold": signal.threshold, "revive_patience": n},
            ),
            Check(
                "revive.own_slot",
                GateCategory.STRUCTURAL,
                e.slot is not None and holder is None,
                f"slot {e.slot} of layer {layer} is {'free' if holder is None else 'held by ' + holder}",
                {},
                {},
            ),
            checks.cap(registry, cfg, "revive.layer_cap", layer),
            checks.budget(registry, "revive.budget", Action.REVIVE, cfg.max_revives_per_cycle),
        ]
        if not self.batch.checks(e.entity, e.state, S.ACTIVE, gates):
            return
        assert e.slot is not None
        self.batch.decide(
            Action.REVIVE,
            layer=layer,
            entity=e.entity,
            target=e.entity,
            reason="basin_returned",
            metrics=signal.metrics(held, e.slot),
        )
        self.batch.move(e.entity, S.ACTIVE, "inputs like its basin returned")

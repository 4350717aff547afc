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
"""

from __future__ import annotations

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_ids import parse_expert_id
from lifecycle_es.events import Action, GateCategory
from lifecycle_es.policies import patience, streak
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.specs.expert import EXPERT_SPEC, ExpertState, ReviveMetrics

__all__ = ["REVIVAL", "Revivals", "parked"]

REVIVAL = "revival:"
"""Prefix of the layer metric of a parked expert's affinity (`revival:<expert id>`)."""
S = ExpertState


def parked(registry: Registry, layer: int, budget: int) -> list[EntityState]:
    """Return the layer's parked experts, oldest first: the newest `budget` pruned as dead."""
    found = []
    for e in registry:
        if e.spec != EXPERT_SPEC.name or e.layer != layer or e.state != S.ARCHIVED:
            continue
        pruned = [step for step, frm, to in e.history if frm == S.DORMANT and to == S.PENDING_PRUNE]
        if pruned and e.history[-1][1] == S.PENDING_PRUNE:
            parsed = parse_expert_id(e.entity)
            found.append(((pruned[-1], parsed[1] if parsed else -1), e))
    found.sort(key=lambda item: item[0])
    return [e for _, e in found[max(0, len(found) - budget) :]] if budget > 0 else []


class Revivals:
    """The revival phase of one evaluation."""

    def __init__(self, config: ExpertCoordinatorConfig, capacity: dict[int, int], batch: Batch) -> None:
        self.config = config
        self.capacity = capacity
        self.batch = batch

    def run(self) -> None:
        """Revive every parked expert whose affinity held for `revive_patience` checkpoints."""
        cfg = self.config
        for layer in sorted(self.capacity):
            for e in parked(self.batch.registry, layer, cfg.park_budget):
                window = self.batch.registry.metric_window(layer, REVIVAL + e.entity, layer=True)
                if any(a >= cfg.revive_affinity_threshold for a in window[-cfg.revive_patience :]):
                    self._revive(e, layer, window)

    def _revive(self, e: EntityState, layer: int, window: tuple[float, ...]) -> None:
        cfg, registry, n = self.config, self.batch.registry, self.config.revive_patience
        returned = lambda a: a >= cfg.revive_affinity_threshold  # noqa: E731 - one comparison
        held = streak(window, returned)
        holder = None if e.slot is None else registry.slot_holder(EXPERT_SPEC.name, layer, e.slot)
        gates = [
            Check(
                "revive.affinity_patience",
                GateCategory.PERFORMANCE,
                patience(window, n, returned),
                f"{checks.count(held, 'checkpoint')} in a row with affinity >= "
                f"{cfg.revive_affinity_threshold:g}, patience {n}",
                {"affinity": window[-1], "checkpoints_returned": held},
                {"revive_affinity_threshold": cfg.revive_affinity_threshold, "revive_patience": n},
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
            metrics=ReviveMetrics(affinity=window[-1], checkpoints_returned=held, slot=e.slot),
        )
        self.batch.move(e.entity, S.ACTIVE, "inputs like its basin returned")

"""Prune: a dormant expert that stayed without tokens for `prune_patience` checkpoints is removed.

It is scheduled for removal (pending_prune, reason `confirmed_dead`); upkeep archives it once
surgery has applied the removal, and surgery parks its weights for a later revival.

An expert that went dormant because its inputs left is not dead: most of its basin came from
token types that have since left the layer's input (`_basin_park.departed_basin`), and it
still holds what it learnt of them. Up to `keep_departed_budget` such experts per layer, those
whose types left most recently first, are kept in routing (the `prune.inputs_departed` gate
fails), where they still answer those types' inputs and take them back as they return (dormant
-> active); the next beyond the budget is pruned as dead. The departure is read from the
layer's window, so an expert whose types have been gone for `basin_window_size` checkpoints is
no longer kept.
"""

from __future__ import annotations

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._basin_park import DepartedBasin, departed_basin, type_shares
from lifecycle_es.controllers._batch import Check
from lifecycle_es.controllers._expert_phase import PERF, STRUCT, ExpertPhase, position
from lifecycle_es.controllers._signals import CONTRIBUTION, checkpoints_since
from lifecycle_es.events import Action
from lifecycle_es.policies import patience, streak
from lifecycle_es.registry import EntityState
from lifecycle_es.specs.expert import ExpertState, PruneMetrics

__all__ = ["Prunes"]

S = ExpertState


class Prunes(ExpertPhase):
    """The prune phase of one evaluation."""

    __slots__ = ()

    def run(self) -> None:
        """Schedule the removal of every dormant expert whose gates all pass."""
        dormant = self.experts((S.DORMANT,))
        kept = self._kept_departed(dormant)
        for e in dormant:
            self._prune(e, kept)

    def _kept_departed(self, dormant: list[EntityState]) -> dict[str, tuple[DepartedBasin, int]]:
        """Return each dormant expert whose inputs left, with its departure and its rank in its
        layer (0 for the one whose types left most recently)."""
        share = self.config.keep_departed_share
        if share is None or not self.config.keep_departed_budget or not dormant:
            return {}
        found: dict[int, list[tuple[EntityState, DepartedBasin]]] = {}
        layers = {e.layer for e in dormant if e.layer is not None}
        series = {layer: type_shares(self.batch.registry, layer) for layer in layers}
        for e in dormant:
            assert e.layer is not None
            departed = departed_basin(self.batch.registry, e, series[e.layer], self.config)
            if departed is not None and departed.gone_fraction >= share:
                found.setdefault(e.layer, []).append((e, departed))
        ranked = {}
        for pairs in found.values():
            pairs.sort(key=lambda pair: (pair[1].checkpoints_gone, -pair[0].entered_step, *position(pair[0])))
            ranked.update({e.entity: (departed, rank) for rank, (e, departed) in enumerate(pairs)})
        return ranked

    def _prune(self, e: EntityState, kept: dict[str, tuple[DepartedBasin, int]]) -> None:
        cfg, registry = self.config, self.batch.registry
        assert e.layer is not None
        shares = self.shares_in_state(e)
        held = streak(shares, self.is_zero)
        gates = [
            Check(
                "prune.dormant_patience",
                PERF,
                patience(shares, cfg.prune_patience, self.is_zero),
                f"dormant without tokens for {checks.count(held, 'checkpoint')}, "
                f"patience {cfg.prune_patience}",
                {"checkpoints_dormant": held},
                {"prune_patience": cfg.prune_patience},
            ),
            *self._needs(e),
            *self._departed(kept.get(e.entity)),
            checks.floor(registry, cfg, "prune.population_floor", e.layer),
            checks.budget(registry, "prune.budget", Action.PRUNE, cfg.max_prunes_per_cycle),
        ]
        if not self.batch.checks(e.entity, e.state, S.PENDING_PRUNE, gates):
            return
        self.batch.decide(
            Action.PRUNE,
            layer=e.layer,
            entity=e.entity,
            target=e.entity,
            reason="confirmed_dead",
            metrics=PruneMetrics(
                share=shares[-1],
                dormant_checkpoints=held,
                live_experts=checks.live(registry, e.layer),
            ),
        )
        self.batch.move(e.entity, S.PENDING_PRUNE, "confirmed dead")

    def _needs(self, e: EntityState) -> list[Check]:
        """Return the prune's need checks: low contribution, and an initial expert's grace."""
        cfg, found = self.config, []
        contribution = self.batch.registry.metric_window(e.entity, CONTRIBUTION)
        if contribution:
            found.append(
                Check(
                    "prune.low_contribution",
                    PERF,
                    contribution[-1] <= cfg.prune_contribution_threshold,
                    f"masking it raises the loss by {contribution[-1]:.3g}, "
                    f"threshold {cfg.prune_contribution_threshold:g}",
                    {CONTRIBUTION: contribution[-1]},
                    {"prune_contribution_threshold": cfg.prune_contribution_threshold},
                )
            )
        if e.parent is None and e.born_step == 0 and cfg.prune_init_grace:
            seen = checkpoints_since(self.batch.registry, e.layer, 0)
            found.append(
                Check(
                    "prune.init_grace",
                    STRUCT,
                    seen >= cfg.prune_init_grace,
                    f"{checks.count(seen, 'checkpoint')} since the run began, grace {cfg.prune_init_grace}",
                    {"checkpoints_since_start": seen},
                    {"prune_init_grace": cfg.prune_init_grace},
                )
            )
        return found

    def _departed(self, kept: tuple[DepartedBasin, int] | None) -> list[Check]:
        """Return the check that keeps an expert whose inputs left, within the layer's budget."""
        if kept is None:
            return []
        departed, rank = kept
        share, budget = self.config.keep_departed_share, self.config.keep_departed_budget
        assert share is not None  # nothing is kept without it
        return [
            Check(
                "prune.inputs_departed",
                PERF,
                rank >= budget,
                f"types {list(departed.types)} left {checks.count(departed.checkpoints_gone, 'checkpoint')} "
                f"ago with {departed.gone_fraction:.3g} of its basin; "
                f"{rank} kept before it (their types left more recently), budget {budget}",
                {"gone_fraction": departed.gone_fraction, "kept_before": rank},
                {"keep_departed_share": share, "keep_departed_budget": budget},
            )
        ]

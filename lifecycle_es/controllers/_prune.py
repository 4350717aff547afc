"""Prune: a dormant expert that stayed without tokens for `prune_patience` checkpoints is removed.

It is scheduled for removal (pending_prune, reason `confirmed_dead`); upkeep archives it once
surgery has applied the removal, and surgery parks its weights for a later revival.
"""

from __future__ import annotations

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Check
from lifecycle_es.controllers._expert_phase import PERF, STRUCT, ExpertPhase
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
        for e in self.experts((S.DORMANT,)):
            self._prune(e)

    def _prune(self, e: EntityState) -> None:
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
